#!/usr/bin/env bash
# Training on the GPU against the CPU of the same host, with one `--features cuda` binary.
#
#   benches/cuda-train.sh BIN OUT
#
# The binary takes GPU 0 when it finds one; `CUDA_VISIBLE_DEVICES=` hides the GPU, so the same
# binary runs the same commands on the CPU. Each job runs once per device and the script prints
# wall seconds per device and their ratio, plus what each run measured on its own test data:
#   mnist-teacher  `tandem train` of the MNIST teacher preset, EPOCHS epochs
#   mnist-student  `tandem distill` (kd) of the student preset from models/mnist-teacher, EPOCHS epochs
#   text-round     one round of `tandem train-embedder` from STUDENT on PAIRS fresh WordNet pairs with
#                  3 hard negatives each that the student mines first (no score teacher)
#   text-eval      `tandem eval --task retrieval` of that round's bundle: 2,000 queries, 117,659 glosses
#
#   EPOCHS [1]  PAIRS [4096]  STUDENT [models/text-student]  DEVICES ["cuda cpu"]  JOBS [all four]
# The data comes from the cache (`tandem data fetch mnist wordnet` first; TANDEM_DATA_DIR moves it).
set -uo pipefail
BIN=${1:?usage: benches/cuda-train.sh BIN OUT}
OUT=${2:?usage: benches/cuda-train.sh BIN OUT}
EPOCHS=${EPOCHS:-1}
PAIRS=${PAIRS:-4096}
STUDENT=${STUDENT:-models/text-student}
DEVICES=${DEVICES:-cuda cpu}
JOBS=${JOBS:-mnist-teacher mnist-student text-round text-eval}
mkdir -p "$OUT"

echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) logical cores"
echo "isa flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_vnni|avx512_bf16|avx512_fp16|amx_tile)$' | tr '\n' ' ')"
"$BIN" --version
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "gpu: none visible to nvidia-smi"

command_for() {
    local job=$1 dev=$2
    case $job in
    mnist-teacher)
        echo "$BIN train --dataset mnist --arch teacher --epochs $EPOCHS --augment-shift 2 --out $OUT/$dev-$job --json --quiet" ;;
    mnist-student)
        echo "$BIN distill --dataset mnist --arch student --teacher models/mnist-teacher --method kd --temperature 4 --alpha 0.7 --epochs $EPOCHS --augment-shift 2 --out $OUT/$dev-$job --json --quiet" ;;
    text-round)
        echo "$BIN train-embedder --init $STUDENT --hard-negatives 3 --max-pairs $PAIRS --batch-size 64 --lr 1e-4 --half --seed 1 --val-queries 300 --val-corpus 5000 --test-queries 200 --test-corpus 5000 --out $OUT/$dev-$job --json --quiet" ;;
    text-eval)
        echo "$BIN eval --task retrieval --model $OUT/$dev-text-round --json" ;;
    esac
}

# One line per run: job device rc wall_seconds; the run's JSON stays in OUT/DEVICE-JOB.json.
: >"$OUT/runs.tsv"
for dev in $DEVICES; do
    if [ "$dev" = cpu ]; then visible=""; else visible=${CUDA_VISIBLE_DEVICES-0}; fi
    for job in $JOBS; do
        cmd=$(command_for "$job" "$dev")
        echo "== $dev $job: $cmd"
        t0=$(date +%s.%N)
        CUDA_VISIBLE_DEVICES=$visible $cmd >"$OUT/$dev-$job.json" 2>"$OUT/$dev-$job.err"
        rc=$?
        wall=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
        printf '%s\t%s\t%s\t%s\n' "$job" "$dev" "$rc" "$wall" | tee -a "$OUT/runs.tsv"
        [ "$rc" = 0 ] || tail -5 "$OUT/$dev-$job.err"
    done
done

python3 - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
rows = [l.split("\t") for l in (out / "runs.tsv").read_text().splitlines()]
wall = {(j, d): (int(rc), float(w)) for j, d, rc, w in rows}

def measured(job, dev):
    try:
        r = json.loads((out / f"{dev}-{job}.json").read_text())
    except (OSError, ValueError):
        return "-"
    if "ndcg@10" in r:
        return f"nDCG@10 {r['ndcg@10']:.4f}, {r['queries_per_s']:.0f} queries/s, {r.get('docs_per_s', 0):.0f} docs/s"
    if "test_accuracy" in r:
        return f"test {r['test_accuracy']:.4f} (n={r.get('test_n')}), train_seconds {r.get('train_seconds', 0):.1f}"
    return "-"

print("\njob | device | exit | wall s | measured")
for (job, dev), (rc, w) in wall.items():
    print(f"{job} | {dev} | {rc} | {w:.1f} | {measured(job, dev)}")
print("\njob | cpu wall s / cuda wall s")
for job in dict.fromkeys(j for j, _ in wall):
    c, g = wall.get((job, "cpu")), wall.get((job, "cuda"))
    if c and g and c[0] == 0 and g[0] == 0:
        print(f"{job} | {c[1] / g[1]:.2f}")
PY
