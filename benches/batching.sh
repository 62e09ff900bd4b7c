#!/usr/bin/env bash
# Dynamic batching under load: for each concurrency, a fresh `tandem serve` (cache off) is driven
# by wrk in a closed loop with distinct classify requests, and the run reports requests/s, the
# latency percentiles and the model's mean batch size (from /metrics: tandem_batch_size).
#
#   benches/batching.sh BIN [--model DIR] [--seconds 10] [--concurrency "1 4 16 64"] [-- SERVE_ARGS...]
#
# BIN is a built `tandem`. Prints one table row per concurrency. Fails on any non-200 answer.
set -euo pipefail
source "$(dirname "$0")/serve-lib.sh"

[ $# -ge 1 ] || fail "usage: benches/batching.sh BIN [--model DIR] [--seconds S] [--concurrency LIST]"
BIN=$(realpath "$1")
shift
MODEL=$REPO_DIR/models/fashion-teacher SECONDS_RUN=10 LEVELS="1 4 16 64"
while [ $# -gt 0 ]; do
    case $1 in
        --model) MODEL=$(realpath "$2") ;;
        --seconds) SECONDS_RUN=$2 ;;
        --concurrency) LEVELS=$2 ;;
        --) shift; break ;;
        *) fail "unknown option $1" ;;
    esac
    shift 2
done
setup_run
trap 'kill "${SERVER_PID:-}" 2>/dev/null || true; rm -rf "$WORK"' EXIT

echo "== machine"
describe_machine "$BIN"
echo "command: benches/batching.sh BIN --model ${MODEL#"$REPO_DIR"/} --seconds $SECONDS_RUN --concurrency \"$LEVELS\"${*:+ -- $*}"
echo "load generator: $WRK_VERSION, 2 threads, on the same machine; cache off"
printf '\n| connections | requests/s | p50 ms | p99 ms | batches | mean batch size |\n|---|---|---|---|---|---|\n'
for c in $LEVELS; do
    PORT=$(free_port)
    start_server "$WORK/serve-$c.log" --model "$MODEL" --cache-capacity 0 "$@"
    wait_ready 60
    run_wrk "$WORK/load-$c.json" "$c" "$SECONDS_RUN"
    metrics=$(curl -sf "http://127.0.0.1:$PORT/metrics") || fail "no /metrics"
    stop_server
    others=$(json "$WORK/load-$c.json" 'sum(v for k, v in d["statuses"].items() if k != "200")')
    [ "$others" = 0 ] || fail "$others answers other than 200 at $c connections"
    sum=$(awk '/^tandem_batch_size_sum/ {print $2}' <<<"$metrics")
    count=$(awk '/^tandem_batch_size_count/ {print $2}' <<<"$metrics")
    rps=$(json "$WORK/load-$c.json" "round(d['statuses'].get('200', 0) / d['duration_s'])")
    p50=$(json "$WORK/load-$c.json" 'd["ok_p50_ms"]')
    p99=$(json "$WORK/load-$c.json" 'd["ok_p99_ms"]')
    mean=$(python3 -c "print(round($sum / max($count, 1), 2))")
    printf '| %s | %s | %s | %s | %s | %s |\n' "$c" "$rps" "$p50" "$p99" "${count%.*}" "$mean"
done
