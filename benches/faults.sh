#!/usr/bin/env bash
# Serving through faults, with wrk as the load generator (benches/wrk.lua):
#
#   benches/faults.sh BIN [--model DIR] [--rounds 5] [--grace 2s] [--connections 64]
#
# 1. SIGTERM under load, closed loop and then open loop at 4x what the closed loop answered
#    before the signal. The server runs with --drain-grace and logs the id of every request it
#    starts (wrk sends each with its own x-request-id). Load runs, then SIGTERM: the
#    script times readiness turning 503, the listener closing, and the exit. Every request wrk
#    wrote and got no answer for is looked up in the server's log: a request the server started
#    and never answered is a dropped accepted request, and there must be none. Answers must be
#    200, 429 or 503 only, and the exit status 0.
# 2. kill -9 and restart, --rounds times, for one bundle and for every shipped bundle: the time
#    from starting the new process until /health/ready answers 200 (polled every 5 ms).
#
# TODO: 3. a corrupt bundle on reload, once model reloads exist: corrupt a served bundle's
#          weights, ask for a reload, and record that the old version keeps answering.
set -euo pipefail
source "$(dirname "$0")/serve-lib.sh"

[ $# -ge 1 ] || fail "usage: benches/faults.sh BIN [--model DIR] [--rounds N] [--grace D] [--connections N]"
BIN=$(realpath "$1")
shift
MODEL=$REPO_DIR/models/fashion-teacher ROUNDS=5 GRACE=2s CONNS=64
while [ $# -gt 0 ]; do
    case $1 in
        --model) MODEL=$(realpath "$2") ;;
        --rounds) ROUNDS=$2 ;;
        --grace) GRACE=$2 ;;
        --connections) CONNS=$2 ;;
        *) fail "unknown option $1" ;;
    esac
    shift 2
done
setup_run
[ -z "${TANDEM_BENCH_KEEP:-}" ] || note "keeping $WORK"
trap 'kill "${SERVER_PID:-}" "${WRK_PID:-}" 2>/dev/null || true; [ -n "${TANDEM_BENCH_KEEP:-}" ] || rm -rf "$WORK"' EXIT

echo "== machine"
describe_machine "$BIN"
echo "command: benches/faults.sh BIN --model ${MODEL#"$REPO_DIR"/} --rounds $ROUNDS --grace $GRACE --connections $CONNS"
echo "load generator: $WRK_VERSION, 2 threads, on the same machine"

# sigterm_under_load LABEL CONNECTIONS [RATE]: serves with --drain-grace, loads the server with
# wrk (closed loop, or open loop at RATE), sends SIGTERM 4 s in, and accounts for every request.
sigterm_under_load() {
    local label=$1 connections=$2 rate=${3:-} t_start t_term t_not_ready="" t_closed="" t_exit
    echo "== SIGTERM under load: $label, $connections connections, --drain-grace $GRACE"
    PORT=$(free_port)
    rm -f "$WORK/sigterm.log" "$WORK/unanswered"
    TANDEM_LOG="info,tower_http::trace::on_request=debug" start_server "$WORK/sigterm.log" \
        --model "$MODEL" --cache-capacity 0 --drain-grace "$GRACE" --drain-timeout-ms 10000 --log-format json
    wait_ready 120
    t_start=$(now_us)
    TANDEM_LOAD_PENDING="$WORK/unanswered" run_wrk "$WORK/sigterm.json" "$connections" 8 "$rate" &
    WRK_PID=$!
    sleep 4
    t_term=$(now_us)
    kill -TERM "$SERVER_PID"
    while kill -0 "$SERVER_PID" 2>/dev/null; do
        probe /health/ready
        if [ -z "$t_not_ready" ] && [ "$STATUS" = 503 ]; then t_not_ready=$(now_us); fi
        if [ -z "$t_closed" ] && [ "$STATUS" = 000 ]; then t_closed=$(now_us); fi
        sleep 0.005
    done
    t_exit=$(now_us)
    SERVED_MS=$(( (t_exit - t_start) / 1000 ))
    EXIT=0
    wait "$SERVER_PID" || EXIT=$?
    wait "$WRK_PID" || fail "the load generator failed"
    WRK_PID=""
    json "$WORK/sigterm.json" 'json.dumps(d)'
    python3 - "$WORK" "$t_term" "${t_not_ready:-0}" "${t_closed:-0}" "$t_exit" "$EXIT" <<'EOF'
import datetime, json, sys
work, t_term, t_not_ready, t_closed, t_exit, exit_status = sys.argv[1], *map(int, sys.argv[2:6]), sys.argv[6]
d = json.load(open(f"{work}/sigterm.json"))
started, listener_closed = set(), None
for line in open(f"{work}/sigterm.log"):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    message = event.get("fields", {}).get("message", "")
    request_id = event.get("span", {}).get("request_id", "")
    if message == "started processing request" and request_id.startswith("t"):
        started.add(request_id)
    elif message.startswith("listener closed"):
        stamp = datetime.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        listener_closed = round(stamp.timestamp() * 1e6)
unanswered = [line.split() for line in open(f"{work}/unanswered")]
dropped = [id for id, _ in unanswered if id in started]
before_close = [id for id, written in unanswered if listener_closed and int(written) < listener_closed]
answered = sum(d["statuses"].values())
statuses = {int(k): v for k, v in d["statuses"].items()}
other = {k: v for k, v in statuses.items() if k not in (200, 429, 503)}
ms = lambda t: f"{(t - t_term) / 1000:.0f} ms" if t else "never seen"
rows = [
    ("answered", f"{answered:,} {json.dumps(d['statuses'])}"),
    ("written before the listener closed, no answer", f"{len(before_close)}"),
    ("started by the server", f"{len(started):,}"),
    ("started by the server, no answer (dropped)", f"{len(dropped)}"),
    ("answers other than 200/429/503", json.dumps(other) if other else "none"),
    ("attempts after the listener closed", f"{len(unanswered) - len(before_close):,} (refused or reset: {json.dumps(d['errors'])})"),
    ("readiness 503 after SIGTERM", ms(t_not_ready)),
    ("listener closed after SIGTERM (log)", ms(listener_closed)),
    ("connections refused after SIGTERM (probe)", ms(t_closed)),
    ("process exited after SIGTERM", ms(t_exit)),
    ("exit status", exit_status),
]
width = max(len(k) for k, _ in rows)
for key, value in rows:
    print(f"{key:<{width}}  {value}")
problems = []
if other:
    problems.append(f"answers other than 200/429/503: {other}")
if dropped:
    problems.append(f"{len(dropped)} requests started by the server got no answer: {dropped[:10]}")
if exit_status != "0":
    problems.append(f"exit status {exit_status}")
if not started or listener_closed is None:
    problems.append("the server's log lacks request starts or the listener's close")
for p in problems:
    print(f"FAIL: {p}")
sys.exit(1 if problems else 0)
EOF
}

sigterm_under_load "closed loop" "$CONNS"
# Four times what the closed loop got answered per second, offered open loop: SIGTERM under overload.
OVER_RATE=$(json "$WORK/sigterm.json" "round(4 * d['statuses'].get('200', 0) * 1000 / $SERVED_MS)")
sigterm_under_load "open loop at $OVER_RATE req/s (4x the closed loop's answers per second)" 1024 "$OVER_RATE"

# restart_rounds LABEL MODEL_ARGS...: kill -9 a ready server and start it again on the same port.
restart_rounds() {
    local label=$1 times=() i t0 t1
    shift
    PORT=$(free_port)
    start_server "$WORK/restart.log" "$@" --cache-capacity 0
    wait_ready 120
    for i in $(seq "$ROUNDS"); do
        kill -KILL "$SERVER_PID"
        wait "$SERVER_PID" 2>/dev/null || true
        t0=$(now_us)
        start_server "$WORK/restart.log" "$@" --cache-capacity 0
        wait_ready 120
        t1=$(now_us)
        times+=($(( (t1 - t0) / 1000 )))
    done
    kill -KILL "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    printf '%s: %s ms (rounds, in order)\n' "$label" "$(IFS=' '; echo "${times[*]}")"
}

echo "== kill -9, then restart on the same port: start to /health/ready 200"
restart_rounds "$MODEL_NAME" --model "$MODEL"
ALL=()
for bundle in "$REPO_DIR"/models/*/; do ALL+=(--model "${bundle%/}"); done
restart_rounds "all $(( ${#ALL[@]} / 2 )) shipped bundles" "${ALL[@]}"
