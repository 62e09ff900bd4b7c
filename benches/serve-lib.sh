# Shared by benches/overload.sh and benches/faults.sh (sourced, not run): the machine's
# description, the wrk load generator, and starting, probing and stopping `tandem serve`.
# Needs bash, curl, python3 and, when wrk is not installed, apt-get and dpkg.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$BENCH_DIR/.." && pwd)

fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }
note() { printf '%s\n' "$*" >&2; }

# Microseconds since the epoch, without a fork.
now_us() { local t=$EPOCHREALTIME; echo $(( ${t/./} )); }

# The CPU, its ISA as the kernels see it, and how busy the machine is.
describe_machine() {
    local bin=$1 model
    model=$(awk -F': *' '/^model name/ {print $2; exit}' /proc/cpuinfo)
    echo "cpu: ${model:-unknown}, $(nproc) cores available"
    "$bin" --version | sed 's/^/  /'
    echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Sets WRK to a runnable wrk: the installed one, or Debian's package (with its LuaJIT library)
# unpacked once into a cache folder, as CI does with promtool.
find_wrk() {
    local tools="${TANDEM_BENCH_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem-bench-tools}"
    if command -v wrk >/dev/null; then
        WRK=(wrk)
    elif [ ! -x "$tools/wrk/usr/bin/wrk" ]; then
        note "unpacking Debian's wrk into $tools"
        mkdir -p "$tools/deb" && rm -f "$tools"/deb/*.deb
        (cd "$tools/deb" && { apt-get download wrk libluajit-5.1-2 2>/dev/null ||
            { apt-get update -qq && apt-get download wrk libluajit-5.1-2; }; }) >&2 ||
            fail "cannot download wrk; install it (apt-get install wrk) or put it on PATH"
        for deb in "$tools"/deb/*.deb; do dpkg -x "$deb" "$tools/wrk"; done
    fi
    [ -n "${WRK:-}" ] || WRK=(env "LD_LIBRARY_PATH=$tools/wrk/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$tools/wrk/usr/bin/wrk")
    WRK_VERSION=$("${WRK[@]}" -v 2>&1 || true)
    WRK_VERSION=$(head -1 <<<"$WRK_VERSION" | cut -d' ' -f1-2)
    [[ $WRK_VERSION == wrk* ]] || fail "wrk does not run"
}

# A port that was free a moment ago.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# probe PATH: sets STATUS to the status code of GET PATH on the server (000 when nothing answers),
# over bash's /dev/tcp so that tight polling forks nothing.
probe() {
    STATUS=000
    if exec 3<>"/dev/tcp/127.0.0.1/$PORT"; then
        printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n' "$1" >&3
        read -r -t 5 _ STATUS _ <&3 || STATUS=000
        exec 3<&-
    fi 2>/dev/null
}

# start_server LOG ARGS...: runs `$BIN serve ARGS --port $PORT` in the background with stderr
# to LOG, and sets SERVER_PID.
start_server() {
    local log=$1
    shift
    "$BIN" serve "$@" --port "$PORT" 2>"$log" >/dev/null &
    SERVER_PID=$!
}

# wait_ready LIMIT_S: polls /health/ready every 5 ms until it answers 200.
wait_ready() {
    local deadline=$(( $(now_us) + $1 * 1000000 ))
    while :; do
        kill -0 "$SERVER_PID" 2>/dev/null || fail "the server exited before it was ready"
        probe /health/ready
        [ "$STATUS" = 200 ] && return 0
        [ "$(now_us)" -lt "$deadline" ] || fail "not ready after $1 s"
        sleep 0.005
    done
}

# stop_server: SIGTERM, and EXIT set to the exit status (0 after a finished drain).
stop_server() {
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    EXIT=0
    wait "$SERVER_PID" || EXIT=$?
}

# run_wrk OUT CONNECTIONS SECONDS [RATE]: runs wrk/wrk.lua against $MODEL_NAME and leaves its
# TANDEM_LOAD_JSON summary in OUT. Two threads (one for a single connection): the client shares
# the machine with the server.
run_wrk() {
    local out=$1 connections=$2 seconds=$3 rate=${4:-}
    local threads=$(( connections < 2 ? connections : 2 ))
    TANDEM_LOAD_MODEL=$MODEL_NAME TANDEM_LOAD_SIDE=$MODEL_SIDE TANDEM_LOAD_THREADS=$threads TANDEM_LOAD_RATE=$rate \
        "${WRK[@]}" -t "$threads" -c "$connections" -d "${seconds}s" --timeout 30s -s "$BENCH_DIR/wrk.lua" \
        "http://127.0.0.1:$PORT" >"$out.log" 2>&1 || fail "wrk failed: $(tail -5 "$out.log")"
    grep '^TANDEM_LOAD_JSON ' "$out.log" | sed 's/^TANDEM_LOAD_JSON //' >"$out"
    [ -s "$out" ] || fail "wrk printed no summary: $(tail -5 "$out.log")"
}

# json FILE EXPR: evaluates a Python expression over the JSON document in FILE, bound to `d`.
json() { python3 -c "import json, sys; d = json.load(open(sys.argv[1])); print($2)" "$1"; }

# The name and image side of the bundle in $MODEL (from its manifest).
read_model() {
    MODEL_NAME=$(json "$MODEL/manifest.json" 'd["name"]')
    MODEL_SIDE=$(json "$MODEL/manifest.json" 'd["family"]["architecture"]["input_shape"][-1]')
}

# setup_run: what every script does once its options are read: checks $BIN, reads $MODEL's name
# and image side, finds wrk, and makes the scratch folder $WORK.
setup_run() {
    [ -x "$BIN" ] || fail "$BIN is not an executable"
    read_model
    find_wrk
    WORK=$(mktemp -d)
}
