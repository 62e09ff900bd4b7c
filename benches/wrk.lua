-- wrk script of benches/overload.sh, benches/faults.sh and `tandem bench serve`: posts distinct JSON
-- classify (or embedding) requests and accounts for every one of them by its x-request-id, which
-- the server echoes.
--
-- Settings come from the environment (wrk passes script arguments only to init()):
--   TANDEM_LOAD_MODEL    model name to classify or embed with (required)
--   TANDEM_LOAD_KIND     classify (28x28 pixel arrays) or embed (one sentence, /v1/embeddings) [classify]
--   TANDEM_LOAD_SIDE     image side in pixels [28]
--   TANDEM_LOAD_BODIES   distinct bodies per thread, cycled [256]
--   TANDEM_LOAD_RATE     total requests per second; unset = closed loop (each connection sends
--                        its next request when the previous one is answered). Set, every thread
--                        sends on a fixed schedule of RATE / THREADS per second, whichever of its
--                        connections is free: an open loop as long as enough connections are idle.
--   TANDEM_LOAD_THREADS  wrk's -t, to split the rate [1]
--   TANDEM_LOAD_PENDING  file to write the requests that got no answer to, one a line: the id and
--                        when it was written, in microseconds since the epoch
--
-- done() prints one line, "TANDEM_LOAD_JSON {...}": statuses, latency percentiles and the latency
-- distribution of the 200s (measured from writing the request to its answer, 1% bins), requests
-- without an answer, and how far the open-loop schedule fell behind.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } tandem_timespec;
int clock_gettime(int clk_id, tandem_timespec *tp);
]]
local timespec = ffi.new("tandem_timespec")
local function clock_us(id)
  ffi.C.clock_gettime(id, timespec)
  return tonumber(timespec.tv_sec) * 1e6 + tonumber(timespec.tv_nsec) / 1e3
end
local function now_us() return clock_us(1) end -- CLOCK_MONOTONIC

local model = assert(os.getenv("TANDEM_LOAD_MODEL"), "set TANDEM_LOAD_MODEL")
local kind = os.getenv("TANDEM_LOAD_KIND") or "classify"
local side = tonumber(os.getenv("TANDEM_LOAD_SIDE") or "28")
local body_count = tonumber(os.getenv("TANDEM_LOAD_BODIES") or "256")
local rate = tonumber(os.getenv("TANDEM_LOAD_RATE") or "")
local threads = tonumber(os.getenv("TANDEM_LOAD_THREADS") or "1")
local pending_file = os.getenv("TANDEM_LOAD_PENDING")
local path = kind == "embed" and "/v1/embeddings" or ("/v1/models/" .. model .. "/classify")

-- Words of the embed bodies: sentences of 6 to 14 of them, drawn per body.
local words = { "the", "model", "serves", "a", "quick", "request", "over", "http", "while", "batching",
  "keeps", "latency", "low", "and", "throughput", "high", "under", "load", "from", "many", "clients",
  "each", "sentence", "is", "distinct", "so", "no", "cache", "answers", "it" }

local function body_of(b)
  if kind == "embed" then
    local n, picked = math.random(6, 14), {}
    for i = 1, n do picked[i] = words[math.random(1, #words)] end
    return '{"model":"' .. model .. '","input":"' .. table.concat(picked, " ") .. " " .. index .. "-" .. b .. '"}'
  end
  local rows = {}
  for r = 1, side do
    local row = {}
    for c = 1, side do row[c] = math.random(0, 255) end
    rows[r] = "[" .. table.concat(row, ",") .. "]"
  end
  return '{"inputs":[{"pixels":[' .. table.concat(rows, ",") .. ']}],"top_k":3}'
end

-- Main state: hand each thread its index.
local thread_list = {}
function setup(thread)
  thread:set("index", #thread_list + 1)
  table.insert(thread_list, thread)
end

-- Per-thread state; globals, which done() reads through thread:get().
local requests = {} -- preformatted requests, split around the request id
local seq = 0
sent = 0            -- requests written
pending = {}        -- id -> time written, until answered
statuses = {}       -- status -> count
latency = {}        -- 1% bin -> count, answered 200s only
late = 0            -- schedule slots more than a second late (open loop only)

local function bin_of(us) return math.floor(math.log(math.max(us, 1)) * 100) end

function init(args)
  math.randomseed(1000 + index)
  for b = 1, body_count do
    local body = body_of(b)
    local text = wrk.format("POST", path, { ["Content-Type"] = "application/json", ["X-Request-Id"] = "@ID@" }, body)
    local at = text:find("@ID@", 1, true)
    requests[b] = { text:sub(1, at - 1), text:sub(at + 4) }
  end
end

-- wrk calls the first thread's request() once before any connection exists, to count pipelined
-- requests, and never sends that one: it is not recorded.
local verifying = nil

function request()
  if verifying == nil then verifying = (index == 1) end
  seq = seq + 1
  local id = "t" .. index .. "-" .. seq
  local parts = requests[(seq - 1) % body_count + 1]
  if verifying then
    verifying = false
  else
    sent = sent + 1
    pending[id] = now_us()
  end
  return parts[1] .. id .. parts[2]
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  local id = headers["x-request-id"] or headers["X-Request-Id"]
  local started = id and pending[id]
  if started then
    pending[id] = nil
    if status == 200 then
      local b = bin_of(now_us() - started)
      latency[b] = (latency[b] or 0) + 1
    end
  end
end

if rate then
  local interval = 1e6 / (rate / threads)
  local next_slot = nil
  function delay()
    local now = now_us()
    if next_slot == nil then
      next_slot = now
    elseif next_slot < now - 1e6 then
      late = late + math.floor((now - next_slot) / interval)
      next_slot = now
    end
    local slot = next_slot
    next_slot = next_slot + interval
    return math.max(0, math.floor((slot - now) / 1000))
  end
end

function done(summary, _, _)
  local total = { statuses = {}, latency = {}, sent = 0, late = 0, pending = {} }
  for _, thread in ipairs(thread_list) do
    total.sent = total.sent + thread:get("sent")
    total.late = total.late + thread:get("late")
    for status, n in pairs(thread:get("statuses")) do
      total.statuses[status] = (total.statuses[status] or 0) + n
    end
    for b, n in pairs(thread:get("latency")) do
      total.latency[b] = (total.latency[b] or 0) + n
    end
    for id, written in pairs(thread:get("pending")) do
      table.insert(total.pending, { id, written })
    end
  end
  local bins, ok = {}, 0
  for b, n in pairs(total.latency) do
    table.insert(bins, b)
    ok = ok + n
  end
  table.sort(bins)
  local function percentile(p)
    local want, seen = p * ok, 0
    for _, b in ipairs(bins) do
      seen = seen + total.latency[b]
      if seen >= want then return math.exp((b + 1) / 100) / 1000 end
    end
    return 0
  end
  -- The latency distribution of the 200s as [upper edge of a 1% bin in ms, share at or below].
  local cdf_parts, cumulative = {}, 0
  for _, b in ipairs(bins) do
    cumulative = cumulative + total.latency[b]
    table.insert(cdf_parts, string.format("[%.4f,%.5f]", math.exp((b + 1) / 100) / 1000, cumulative / ok))
  end
  local status_parts = {}
  for status, n in pairs(total.statuses) do
    table.insert(status_parts, string.format('"%d":%d', status, n))
  end
  if pending_file then
    local epoch = clock_us(0) - now_us() -- CLOCK_REALTIME - CLOCK_MONOTONIC
    local f = assert(io.open(pending_file, "w"))
    for _, p in ipairs(total.pending) do f:write(string.format("%s %.0f\n", p[1], p[2] + epoch)) end
    f:close()
  end
  local e = summary.errors
  io.write(string.format(
    'TANDEM_LOAD_JSON {"duration_s":%.3f,"sent":%d,"answered":%d,"statuses":{%s},' ..
    '"ok_p50_ms":%.2f,"ok_p90_ms":%.2f,"ok_p99_ms":%.2f,"ok_p999_ms":%.2f,"ok_max_ms":%.2f,"unanswered":%d,' ..
    '"late_slots":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"ok_cdf":[%s]}\n',
    summary.duration / 1e6, total.sent, summary.requests, table.concat(status_parts, ","),
    percentile(0.5), percentile(0.9), percentile(0.99), percentile(0.999), percentile(1.0), #total.pending,
    total.late, e.connect, e.read, e.write, e.timeout, table.concat(cdf_parts, ",")))
end
