#!/usr/bin/env bash
# The diffusion quality table of BENCHMARKS.md, every row from one command: the shipped DDPM
# teachers under DDIM, DPM-Solver++(2M) and UniPC, each without and with DualFast (its default
# variant), at NFE 1, 2, 4, 5, 6, 8, 10 and 20, plus the shipped consistency student at 1, 2 and
# 4 steps, scored on the test split by FID-CNN, classifier accuracy and MSE to a 1000-step DDIM
# reference, with a small grid PNG per row.
#
#   benches/diffusion-table.sh BIN [OUT_DIR]
#
# BIN is a built `tandem` (nothing is built here); OUT_DIR (default diffusion-table) receives
# DATASET.md (the bench's table) and DATASET-grids/ per dataset. SAMPLES (default 10000) sets the
# samples per row, REFERENCE_SAMPLES (default 100) the images compared with the reference, and
# DATASETS (default "mnist fashion-mnist") which datasets run. The datasets need
# `tandem data fetch mnist fashion-mnist` first.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: benches/diffusion-table.sh BIN [OUT_DIR]" >&2; exit 2; }
BIN=$(realpath "$1")
OUT=${2:-diffusion-table}
REPO_DIR=$(cd "$(dirname "$0")/.." && pwd)
SAMPLES=${SAMPLES:-10000}
REFERENCE_SAMPLES=${REFERENCE_SAMPLES:-100}
mkdir -p "$OUT"
for dataset in ${DATASETS:-mnist fashion-mnist}; do
    case $dataset in
        mnist) teacher=mnist-ddpm classifier=mnist-teacher students=(--student "$REPO_DIR/models/mnist-consistency") ;;
        fashion-mnist) teacher=fashion-ddpm classifier=fashion-teacher students=() ;;
        *) echo "unknown dataset $dataset" >&2; exit 2 ;;
    esac
    echo "== $dataset: $SAMPLES samples per row" >&2
    "$BIN" bench diffusion --dataset "$dataset" --split test \
        --teacher "$REPO_DIR/models/$teacher" "${students[@]}" --classifier "$REPO_DIR/models/$classifier" \
        --samples "$SAMPLES" --nfe 1,2,4,5,6,8,10,20 --samplers ddim,dpmpp2m,unipc \
        --reference-samples "$REFERENCE_SAMPLES" --reference-steps 1000 \
        --grids "$OUT/$dataset-grids" | tee "$OUT/$dataset.md"
done
