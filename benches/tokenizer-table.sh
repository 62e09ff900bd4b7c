#!/usr/bin/env bash
# The DualToken table of BENCHMARKS.md from one command: per dataset and seed, the dual tokenizer
# (whose teacher stage trains the frozen semantic teacher) and the two single-codebook baselines
# at the same code budget, trained from that same teacher, then each measured on the test split by
# `tandem eval --task tokenizer`; the table gives the mean and spread over seeds.
#
#   benches/tokenizer-table.sh BIN [OUT_DIR]
#
# BIN is a built `tandem` (nothing is built here); OUT_DIR (default tokenizer-table) receives the
# runs (resumed when the script is run again; a run whose bundle exists is only measured, and a
# measurement newer than its bundle is kept), one JSON report per run and table.md. Settings:
# SEEDS (default "0 1 2"), DATASETS (default "fashion-mnist mnist"), TRAIN_LIMIT (training images,
# default all), TEACHER_EPOCHS (3), EPOCHS (3), PROBE_TRAIN (10000). The datasets need
# `tandem data fetch mnist fashion-mnist` first.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: benches/tokenizer-table.sh BIN [OUT_DIR]" >&2; exit 2; }
BIN=$(realpath "$1")
OUT=${2:-tokenizer-table}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
limit=()
[ -n "${TRAIN_LIMIT:-}" ] && limit=(--train-limit "$TRAIN_LIMIT")
mkdir -p "$OUT"
"$BIN" --version >&2
for dataset in ${DATASETS:-fashion-mnist mnist}; do
    case $dataset in
        mnist) classifier=mnist-teacher ;;
        fashion-mnist) classifier=fashion-teacher ;;
        *) echo "unknown dataset $dataset" >&2; exit 2 ;;
    esac
    for seed in ${SEEDS:-0 1 2}; do
        for layout in dual pixel_only unified; do
            run="$OUT/$dataset-$layout-$seed"
            teacher=()
            [ "$layout" != dual ] && teacher=(--teacher "$OUT/$dataset-dual-$seed.teacher.safetensors")
            if [ ! -f "$run/manifest.json" ]; then
                echo "== $dataset $layout seed $seed" >&2
                "$BIN" train-tokenizer --dataset "$dataset" --layout "$layout" --seed "$seed" "${limit[@]}" \
                    --teacher-epochs "${TEACHER_EPOCHS:-3}" --epochs "${EPOCHS:-3}" "${teacher[@]}" \
                    --out "$run" --resume --quiet --json > /dev/null
            fi
            if [ ! -s "$run.eval.json" ] || [ "$run/manifest.json" -nt "$run.eval.json" ]; then
                "$BIN" eval --task tokenizer --model "$run" --dataset "$dataset" \
                    --fid-classifier "$REPO_DIR/models/$classifier" --probe-train "${PROBE_TRAIN:-10000}" --json \
                    > "$run.eval.json.part" && mv "$run.eval.json.part" "$run.eval.json"
            fi
        done
    done
done
python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import glob, json, os, statistics, sys
out = sys.argv[1]
rows = {}
for path in sorted(glob.glob(os.path.join(out, "*.eval.json"))):
    name = os.path.basename(path)[: -len(".eval.json")]
    dataset, layout, seed = name.rsplit("-", 2)
    summary = json.load(open(os.path.join(out, name + ".summary.json")))
    report = json.load(open(path))
    report["train_seconds"] = summary["train_seconds"]
    rows.setdefault((dataset, layout), []).append(report)
def cell(reports, key, digits):
    values = [r[key] for r in reports if r.get(key) is not None]
    if not values:
        return "—"
    mean = statistics.fmean(values)
    spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
    return f"{mean:.{digits}f}{spread}"
print("| dataset | layout | seeds | PSNR (dB) | SSIM | FID-CNN | head on semantic tokens | probe: semantic | probe: pixel | pixel codes used (depth 1) | training s |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for (dataset, layout), reports in sorted(rows.items()):
    for r in reports:
        r["pixel_usage_1"] = r["codebooks"]["pixel"][0]["usage"]
    print(f"| {dataset} | {layout} | {len(reports)} | {cell(reports, 'psnr', 2)} | {cell(reports, 'ssim', 4)} | "
          f"{cell(reports, 'fid_cnn', 2)} | {cell(reports, 'semantic_head_accuracy', 4)} | {cell(reports, 'probe_semantic', 4)} | "
          f"{cell(reports, 'probe_pixel', 4)} | {cell(reports, 'pixel_usage_1', 3)} | {cell(reports, 'train_seconds', 0)} |")
PY
