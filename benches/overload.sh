#!/usr/bin/env bash
# Serving under overload: measures what one `tandem serve` answers at capacity, then offers it a
# multiple of that for a while and records what happens, with wrk as the load generator
# (benches/wrk.lua posts distinct JSON classify requests and accounts for each by its id).
#
#   benches/overload.sh BIN [--model DIR] [--factor 4] [--seconds 60] [--capacity-seconds 15]
#                           [--connections 2048] [--capacity-connections 64] [-- SERVE_ARGS...]
#
# BIN is a built `tandem` (nothing is built here). The server runs with the cache off and
# default settings, or those after `--` (e.g. `-- --concurrency-limit 64`). Phases:
#   1. warm-up: 3 s closed loop;
#   2. capacity: closed loop on --capacity-connections connections; capacity = 200s per second;
#   3. overload: --factor x capacity, open loop (a fixed send schedule over --connections
#      connections) for --seconds, sampling the server's RSS and its health probes meanwhile;
#   4. one request right after the load stops, then SIGTERM.
# It fails unless phase 2 answered only 200s, phase 3 answered only 200, 429 or 503 with no
# connection errors, the request of phase 4 got a 200, and the server exited 0.
set -euo pipefail
source "$(dirname "$0")/serve-lib.sh"

[ $# -ge 1 ] || fail "usage: benches/overload.sh BIN [--model DIR] [--factor N] [--seconds S] ..."
BIN=$(realpath "$1")
shift
MODEL=$REPO_DIR/models/fashion-teacher FACTOR=4 SECONDS_OVER=60 SECONDS_CAP=15 CONNS_OVER=2048 CONNS_CAP=64
while [ $# -gt 0 ]; do
    case $1 in
        --model) MODEL=$(realpath "$2") ;;
        --factor) FACTOR=$2 ;;
        --seconds) SECONDS_OVER=$2 ;;
        --capacity-seconds) SECONDS_CAP=$2 ;;
        --connections) CONNS_OVER=$2 ;;
        --capacity-connections) CONNS_CAP=$2 ;;
        --) shift; break ;;
        *) fail "unknown option $1" ;;
    esac
    shift 2
done
setup_run
[ -z "${TANDEM_BENCH_KEEP:-}" ] || note "keeping $WORK"
trap 'kill "${SERVER_PID:-}" "${MONITOR_PID:-}" 2>/dev/null || true; [ -n "${TANDEM_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT

echo "== machine"
describe_machine "$BIN"
echo "command: benches/overload.sh BIN --model ${MODEL#"$REPO_DIR"/} --factor $FACTOR --seconds $SECONDS_OVER" \
    "--capacity-seconds $SECONDS_CAP --connections $CONNS_OVER --capacity-connections $CONNS_CAP${*:+ -- $*}"
echo "load generator: $WRK_VERSION, 2 threads, on the same machine"

PORT=$(free_port)
start_server "$WORK/serve.log" --model "$MODEL" --cache-capacity 0 "$@"
wait_ready 120

echo "== capacity: closed loop, $CONNS_CAP connections, $SECONDS_CAP s (after 3 s of warm-up)"
run_wrk "$WORK/warmup.json" "$CONNS_CAP" 3
run_wrk "$WORK/capacity.json" "$CONNS_CAP" "$SECONDS_CAP"
json "$WORK/capacity.json" 'json.dumps(d)'
CAPACITY=$(json "$WORK/capacity.json" 'round(d["statuses"].get("200", 0) / d["duration_s"])')
json "$WORK/capacity.json" 'sum(d["statuses"].values()) == d["statuses"].get("200", 0) and not any(d["errors"].values())' |
    grep -qx True || fail "the capacity run had answers other than 200, or connection errors"
[ "$CAPACITY" -gt 0 ] || fail "no capacity measured"
RATE=$(( CAPACITY * FACTOR ))
echo "capacity: $CAPACITY req/s"

echo "== overload: ${FACTOR}x = $RATE req/s offered, open loop, $CONNS_OVER connections, $SECONDS_OVER s"
# Every 250 ms: the server's RSS, and how fast /health/live and /health/ready answer.
monitor() {
    while :; do
        local t0 rss live ready
        rss=$(awk '/^VmRSS/ {print $2}' "/proc/$SERVER_PID/status" 2>/dev/null || echo 0)
        t0=$(now_us); probe /health/live; live=$STATUS
        echo "$rss $live $(( $(now_us) - t0 ))" >>"$WORK/monitor"
        probe /health/ready; ready=$STATUS
        echo "ready $ready" >>"$WORK/ready"
        sleep 0.25
    done
}
monitor &
MONITOR_PID=$!
run_wrk "$WORK/overload.json" "$CONNS_OVER" "$SECONDS_OVER" "$RATE"
kill "$MONITOR_PID" 2>/dev/null || true
wait "$MONITOR_PID" 2>/dev/null || true
json "$WORK/overload.json" 'json.dumps(d)'

echo "== right after the load"
AFTER=$(curl -s -o "$WORK/after.body" -w '%{http_code} %{time_total}' -H 'content-type: application/json' \
    -d "{\"inputs\":[{\"pixels\":[$(python3 -c "print(','.join(['[' + ','.join(['128'] * $MODEL_SIDE) + ']'] * $MODEL_SIDE))")]}]}" \
    "http://127.0.0.1:$PORT/v1/models/$MODEL_NAME/classify")
echo "first request after the load: status ${AFTER% *}, $(python3 -c "print(round(${AFTER#* } * 1000, 1))") ms"
HWM=$(awk '/^VmHWM/ {print $2}' "/proc/$SERVER_PID/status")
curl -s "http://127.0.0.1:$PORT/metrics" | grep -E '^tandem_(shed_requests|dropped_items)_total' | sed 's/^/  /' || true
stop_server
echo "server exit status after SIGTERM: $EXIT"

echo "== summary"
python3 - "$WORK" "$CAPACITY" "$RATE" "$HWM" "${AFTER% *}" "$EXIT" <<'EOF'
import json, sys
work, capacity, rate, hwm, after, exit_status = sys.argv[1:]
d = json.load(open(f"{work}/overload.json"))
statuses = {int(k): v for k, v in d["statuses"].items()}
answered = sum(statuses.values())
shed = statuses.get(429, 0) + statuses.get(503, 0)
other = {k: v for k, v in statuses.items() if k not in (200, 429, 503)}
errors = sum(d["errors"].values())
rss = [int(line.split()[0]) for line in open(f"{work}/monitor") if line.split()[0] != "0"]
live = [line.split() for line in open(f"{work}/monitor")]
live_ok = sum(1 for l in live if l[1] == "200")
live_max = max(int(l[2]) for l in live) / 1000
ready = [line.split()[1] for line in open(f"{work}/ready")]
rows = [
    ("capacity (closed loop, all 200)", f"{int(capacity):,} req/s"),
    ("offered", f"{rate} req/s target, {d['sent'] / d['duration_s']:,.0f} req/s sent ({d['sent']:,} requests in {d['duration_s']:.1f} s)"),
    ("answered 200", f"{statuses.get(200, 0):,} ({statuses.get(200, 0) / d['duration_s']:,.0f} req/s)"),
    ("shed (429 + 503)", f"{shed:,} = {shed / max(answered, 1):.1%} of answers (429: {statuses.get(429, 0):,}, 503: {statuses.get(503, 0):,})"),
    ("other statuses", json.dumps(other) if other else "none"),
    ("connection errors", f"{errors} {json.dumps(d['errors'])}"),
    ("200s: p50 / p99 / p99.9 / max", f"{d['ok_p50_ms']:.1f} / {d['ok_p99_ms']:.1f} / {d['ok_p999_ms']:.1f} / {d['ok_max_ms']:.1f} ms"),
    ("in flight when the load stopped", f"{d['unanswered']:,}"),
    ("schedule slots over 1 s late", f"{d['late_slots']:,}"),
    ("RSS: peak (VmHWM) / highest sample", f"{int(hwm) / 1024:.1f} / {max(rss) / 1024:.1f} MiB"),
    ("/health/live during the overload", f"{live_ok}/{len(live)} answered 200, slowest {live_max:.1f} ms"
     + ("" if live_ok == len(live) else f", others: {sorted(l[1] + ' after ' + str(int(l[2]) // 1000) + ' ms' for l in live if l[1] != '200')}")),
    ("/health/ready during the overload", f"{ready.count('200')}/{len(ready)} answered 200"),
    ("first request after the load", after),
    ("exit status after SIGTERM", exit_status),
]
width = max(len(k) for k, _ in rows)
for key, value in rows:
    print(f"{key:<{width}}  {value}")
problems = []
if other:
    problems.append(f"statuses other than 200/429/503: {other}")
if errors:
    problems.append(f"connection errors: {d['errors']}")
if after != "200":
    problems.append(f"the request after the load got {after}")
if exit_status != "0":
    problems.append(f"the server exited {exit_status}")
if live_ok != len(live):
    problems.append("/health/live did not always answer 200")
for p in problems:
    print(f"FAIL: {p}")
sys.exit(1 if problems else 0)
EOF
