#!/usr/bin/env bash
# The image–text table of BENCHMARKS.md from one command: per dataset and seed, the CLIP-style
# dual encoder trained contrastively, and the same with CPRD from an image–text matcher trained
# first; each measured on the test split by `tandem eval --task image-text`, and the table gives
# the mean and the range over seeds.
#
#   benches/image-text-table.sh BIN [OUT_DIR]
#
# BIN is a built `tandem` (nothing is built here); OUT_DIR (default image-text-table) receives the
# runs (resumed when the script is run again; a run whose bundle exists is only measured, and a
# measurement newer than its bundle is kept), one JSON report per run and table.md. Settings:
# DATASETS (default "fashion-mnist"; mnist works too), SEEDS ("0"), EPOCHS (5), TEACHER_EPOCHS (2),
# VARIANTS ("contrastive cprd"). Needs `tandem data fetch fashion-mnist wordnet minilm` first
# (and mnist for that dataset).
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: benches/image-text-table.sh BIN [OUT_DIR]" >&2; exit 2; }
BIN=$(realpath "$1")
OUT=${2:-image-text-table}
mkdir -p "$OUT"
"$BIN" --version >&2
for dataset in ${DATASETS:-fashion-mnist}; do
    for seed in ${SEEDS:-0}; do
        for variant in ${VARIANTS:-contrastive cprd}; do
            run="$OUT/$dataset-$variant-$seed"
            extra=()
            [ "$variant" = cprd ] && extra=(--cprd --teacher-epochs "${TEACHER_EPOCHS:-2}")
            if [ ! -f "$run/manifest.json" ]; then
                echo "== $dataset $variant seed $seed" >&2
                "$BIN" train-image-text --dataset "$dataset" --seed "$seed" --epochs "${EPOCHS:-5}" "${extra[@]}" \
                    --out "$run" --resume --quiet --json > /dev/null
            fi
            report="$run.eval.json"
            if [ ! -s "$report" ] || [ "$run/manifest.json" -nt "$report" ]; then
                "$BIN" eval --task image-text --model "$run" --dataset "$dataset" --split test --json \
                    > "$report.part" && mv "$report.part" "$report"
            fi
        done
    done
done

python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import glob, json, os, sys
from collections import defaultdict
out = sys.argv[1]
keys = ["i2t_r@1", "i2t_r@5", "t2i_r@1", "t2i_r@5", "zero_shot_accuracy"]
rows = defaultdict(list)
for path in sorted(glob.glob(os.path.join(out, "*.eval.json"))):
    name = os.path.basename(path)[: -len(".eval.json")]
    dataset_variant, seed = name.rsplit("-", 1)
    report = json.load(open(path))
    summary = os.path.join(out, name + ".summary.json")
    seconds = json.load(open(summary))["train_seconds"] if os.path.exists(summary) else float("nan")
    rows[dataset_variant].append([report[k] for k in keys] + [seconds])
print("| dataset and variant | seeds | i2t R@1 | i2t R@5 | t2i R@1 | t2i R@5 | zero-shot accuracy | training s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for name, runs in rows.items():
    cells = []
    for i, column in enumerate(zip(*runs)):
        mean = sum(column) / len(column)
        if i == len(keys):
            cells.append(f"{mean:,.0f}")
            continue
        spread = f" ({min(column):.4f}–{max(column):.4f})" if len(column) > 1 else ""
        cells.append(f"{mean:.4f}{spread}")
    print(f"| {name} | {len(runs)} | " + " | ".join(cells) + " |")
PY
