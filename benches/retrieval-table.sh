#!/usr/bin/env bash
# The WordNet retrieval table of BENCHMARKS.md from one command: BM25, all-MiniLM-L6-v2 off the
# shelf, MiniLM fine-tuned (in-batch negatives; a second stage on hard negatives it mines itself
# when TEACHER_STAGES=2), the cross-encoder trained on the teacher's hard negatives reranking its
# top 50, the students cut from the teacher (embedding distillation, then fine-tuned on the
# pairs), and the students continued with score KL and CPRD against the cross-encoder per seed;
# every row measured on the 2,000 test queries over all 117,659 definitions by
# `tandem eval --task retrieval`, and the speed of the teacher and its students by
# `tandem bench embed-speed` in one process.
#
#   benches/retrieval-table.sh BIN [OUT_DIR]
#
# BIN is a built `tandem` (nothing is built here); OUT_DIR (default retrieval-table) receives the
# runs (resumed when the script is run again; a run whose bundle exists is only measured, and a
# measurement newer than its bundle is kept), one JSON report per row and table.md. Settings: PAIRS
# (training pairs per fine-tuning stage, default 16384), TEACHER_STAGES (1 or 2, default 1),
# HARD_NEGATIVES (stage 2's, 1), MINE_CORPUS (glosses searched when mining, default 30000), LAYERS
# (the students' teacher layers, default "0,5"), VOCAB (the students' vocabulary, default 14000),
# INTERMEDIATE (the students' feed-forward units per layer, default all), LOSSES ("cosine"), SEEDS
# ("0"), TEXTS (texts per distillation, default 60000), DISTILL_EPOCHS (1), DISTILL_LR (1e-4),
# DISTILL_PASSES (1; each further pass distils the last one again on the texts of the next seed, at
# CONTINUE_LR, default 1e-4), STUDENT_PAIRS (pairs the distilled student is then fine-tuned on, 16384), STUDENT_NEGATIVES (hard
# negatives the student mines itself for that fine-tuning, default none), STUDENT_TEACHER_WEIGHT
# (the weight of the teacher's scores over the same batch in it, default none), STUDENT_ROUNDS
# (further rounds of that fine-tuning, space-separated, each a comma-separated list of pair seeds:
# every seed of a round fine-tunes the round's start on its own pairs, and a round of several
# seeds averages them with `tandem average` into the next start; a round written SEEDS:k starts
# instead from the average of every branch of round k and later; default none),
# STUDENT_FINAL_AVERAGE (a round number k: the student that goes on is then the average of every
# branch of round k and later, in order; default none), RERANK_TOP (50),
# CROSS_PAIRS (cross-encoder training pairs, default 2048), CROSS_NEGATIVES (its mined hard
# negatives per pair, 3), CROSS_RANDOM_NEGATIVES (its random ones, 4), CROSS_LR (5e-5), RANK_METHODS ("score-kl cprd"),
# RANK_SEEDS ("0 1 2"), RANK_PAIRS (pairs per rank-distillation run, 2048), RANK_NEGATIVES (the
# student's mined negatives the cross-encoder orders, 4). WordNet and MiniLM need `tandem data fetch
# wordnet minilm` first.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: benches/retrieval-table.sh BIN [OUT_DIR]" >&2; exit 2; }
BIN=$(realpath "$1")
OUT=${2:-retrieval-table}
DATA=${TANDEM_DATA_DIR:-$HOME/.cache/tandem/data}
PAIRS=${PAIRS:-16384}
TEACHER_STAGES=${TEACHER_STAGES:-1}
TEACHER=minilm-wordnet-$TEACHER_STAGES
intermediate=()
[ -n "${INTERMEDIATE:-}" ] && intermediate=(--intermediate "$INTERMEDIATE")
student_tuning=()
[ -n "${STUDENT_NEGATIVES:-}" ] && student_tuning+=(--hard-negatives "$STUDENT_NEGATIVES")
[ -n "${STUDENT_TEACHER_WEIGHT:-}" ] &&
    student_tuning+=(--teacher "$OUT/$TEACHER" --teacher-weight "$STUDENT_TEACHER_WEIGHT")
mkdir -p "$OUT"
"$BIN" --version >&2

# measure NAME MODEL [reranker args...]: one JSON report per row, kept while newer than its bundle.
measure() {
    local name=$1 model=$2
    shift 2
    local report="$OUT/$name.eval.json"
    if [ ! -s "$report" ] || { [ -f "$model/manifest.json" ] && [ "$model/manifest.json" -nt "$report" ]; }; then
        echo "== measuring $name" >&2
        "$BIN" eval --task retrieval --model "$model" "$@" --json > "$report.part" && mv "$report.part" "$report"
    fi
}

# average_into OUT BUNDLE...: the bundles' mean weights as the bundle OUT (kept once written), measured.
average_into() {
    local soup=$1
    shift
    [ -f "$soup/manifest.json" ] || "$BIN" average --models "$(IFS=,; echo "$*")" --out "$soup" >&2
    measure "$(basename "$soup")" "$soup"
}

# average_since OUT K: sets `averaged` to the average (as OUT) of every branch in `all_branches`
# (entries ROUND:BUNDLE) of round K and later, or to the one such branch.
average_since() {
    local out=$1 from=$2 entry
    local since=()
    for entry in "${all_branches[@]}"; do
        [ "${entry%%:*}" -ge "$from" ] && since+=("${entry#*:}")
    done
    [ ${#since[@]} -gt 0 ] || { echo "no branch from round $from on to average" >&2; exit 1; }
    if [ ${#since[@]} -gt 1 ]; then
        average_into "$out" "${since[@]}"
        averaged=$out
    else
        averaged=${since[0]}
    fi
}

[ -f "$OUT/minilm/manifest.json" ] ||
    "$BIN" import hf "$DATA/minilm" --out "$OUT/minilm" --name all-minilm-l6-v2 >&2
measure bm25 bm25
measure minilm "$OUT/minilm"

# The teacher: stage 1 with in-batch negatives, stage 2 from it with its own hard negatives.
if [ ! -f "$OUT/minilm-wordnet-1/manifest.json" ]; then
    echo "== fine-tuning, stage 1" >&2
    "$BIN" train-embedder --init "$OUT/minilm" --max-pairs "$PAIRS" --batch-size 32 --lr 3e-5 \
        --val-queries 300 --val-corpus 5000 --test-queries 200 --test-corpus 5000 \
        --out "$OUT/minilm-wordnet-1" --resume --quiet --json > /dev/null
fi
if [ "$TEACHER_STAGES" = 2 ] && [ ! -f "$OUT/minilm-wordnet-2/manifest.json" ]; then
    echo "== fine-tuning, stage 2 (self-mined hard negatives)" >&2
    "$BIN" train-embedder --init "$OUT/minilm-wordnet-1" --max-pairs "$PAIRS" --seed 1 --batch-size 32 --lr 2e-5 \
        --hard-negatives "${HARD_NEGATIVES:-1}" --mine-corpus "${MINE_CORPUS:-30000}" \
        --val-queries 300 --val-corpus 5000 --test-queries 200 --test-corpus 5000 \
        --out "$OUT/minilm-wordnet-2" --resume --quiet --json > /dev/null
fi
measure "$TEACHER" "$OUT/$TEACHER"

# The cross-encoder reranks the teacher's top candidates.
if [ ! -f "$OUT/cross-encoder/manifest.json" ]; then
    echo "== cross-encoder" >&2
    "$BIN" train-cross-encoder --init "$OUT/minilm" --miner "$OUT/$TEACHER" --negatives "${CROSS_NEGATIVES:-3}" \
        --random-negatives "${CROSS_RANDOM_NEGATIVES:-4}" --max-pairs "${CROSS_PAIRS:-2048}" \
        --mine-corpus "${MINE_CORPUS:-30000}" --batch-size 16 --lr "${CROSS_LR:-5e-5}" \
        --val-queries 200 --val-corpus 5000 --test-queries 200 --test-corpus 5000 \
        --out "$OUT/cross-encoder" --resume --quiet --json > /dev/null
fi
measure cross-encoder "$OUT/$TEACHER" --reranker "$OUT/cross-encoder" --rerank-top "${RERANK_TOP:-50}"

# Students cut from the teacher and distilled from its vectors, then fine-tuned on the pairs.
students=()
for loss in ${LOSSES:-cosine}; do
    for seed in ${SEEDS:-0}; do
        run="$OUT/student-$loss-$seed"
        if [ ! -f "$run/manifest.json" ]; then
            echo "== student, $loss, seed $seed" >&2
            "$BIN" distill-embedder --teacher "$OUT/$TEACHER" --layers "${LAYERS:-0,5}" \
                --vocab "${VOCAB:-14000}" "${intermediate[@]}" --loss "$loss" --seed "$seed" \
                --max-texts "${TEXTS:-60000}" --epochs "${DISTILL_EPOCHS:-1}" --lr "${DISTILL_LR:-1e-4}" --half \
                --val-queries 300 --val-corpus 5000 --test-queries 200 --test-corpus 5000 --out "$run" \
                --resume --quiet --json > /dev/null
        fi
        measure "student-$loss-$seed" "$run"
        for pass in $(seq 2 "${DISTILL_PASSES:-1}"); do
            next="$OUT/student-$loss-$seed-p$pass"
            if [ ! -f "$next/manifest.json" ]; then
                echo "== student, $loss, seed $seed, distillation pass $pass" >&2
                "$BIN" distill-embedder --teacher "$OUT/$TEACHER" --init "$run" --loss "$loss" \
                    --seed "$((seed + pass - 1))" --max-texts "${TEXTS:-60000}" --epochs "${DISTILL_EPOCHS:-1}" \
                    --lr "${CONTINUE_LR:-1e-4}" --half --val-queries 300 --val-corpus 5000 --test-queries 200 \
                    --test-corpus 5000 --out "$next" --resume --quiet --json > /dev/null
            fi
            measure "student-$loss-$seed-p$pass" "$next"
            run=$next
        done
        tuned="$OUT/student-$loss-$seed-ft"
        if [ ! -f "$tuned/manifest.json" ]; then
            echo "== student, $loss, seed $seed, fine-tuned on the pairs" >&2
            "$BIN" train-embedder --init "$run" --max-pairs "${STUDENT_PAIRS:-16384}" --seed "$seed" \
                "${student_tuning[@]}" --batch-size 64 --lr 1e-4 --half --val-queries 300 --val-corpus 5000 \
                --test-queries 200 --test-corpus 5000 --out "$tuned" --resume --quiet --json > /dev/null
        fi
        measure "student-$loss-$seed-ft" "$tuned"
        round=0
        base=$tuned
        all_branches=()
        for spec in ${STUDENT_ROUNDS:-}; do
            round=$((round + 1))
            seeds=${spec%%:*}
            if [ "$seeds" != "$spec" ]; then
                average_since "$base-r$((round - 1))-avg-from-r${spec#*:}" "${spec#*:}"
                tuned=$averaged
            fi
            branches=()
            for pair_seed in ${seeds//,/ }; do
                branch="$base-r$round-s$pair_seed"
                if [ ! -f "$branch/manifest.json" ]; then
                    echo "== student, $loss, seed $seed, round $round on the pairs of seed $pair_seed" >&2
                    "$BIN" train-embedder --init "$tuned" --max-pairs "${STUDENT_PAIRS:-16384}" --seed "$pair_seed" \
                        "${student_tuning[@]}" --batch-size 64 --lr 1e-4 --half --val-queries 300 \
                        --val-corpus 5000 --test-queries 200 --test-corpus 5000 --out "$branch" --resume --quiet \
                        --json > /dev/null
                fi
                measure "$(basename "$branch")" "$branch"
                branches+=("$branch")
                all_branches+=("$round:$branch")
            done
            if [ ${#branches[@]} -gt 1 ]; then
                average_into "$base-r$round-avg" "${branches[@]}"
                tuned="$base-r$round-avg"
            else
                tuned=${branches[0]}
            fi
        done
        if [ -n "${STUDENT_FINAL_AVERAGE:-}" ]; then
            average_since "$base-avg-from-r$STUDENT_FINAL_AVERAGE" "$STUDENT_FINAL_AVERAGE"
            tuned=$averaged
        fi
        students+=("$tuned")
    done
done

# The first fine-tuned student continued with each rank-distillation method against the
# cross-encoder, per seed, at equal budget (the same pairs, negatives and teacher calls).
for method in ${RANK_METHODS:-score-kl cprd}; do
    for seed in ${RANK_SEEDS:-0 1 2}; do
        run="$OUT/student-$method-$seed"
        if [ ! -f "$run/manifest.json" ]; then
            echo "== student, $method, seed $seed" >&2
            "$BIN" distill-embedder --teacher "$OUT/$TEACHER" --init "${students[0]}" --method "$method" \
                --cross-encoder "$OUT/cross-encoder" --negatives "${RANK_NEGATIVES:-4}" \
                --mine-corpus "${MINE_CORPUS:-30000}" --max-pairs "${RANK_PAIRS:-2048}" --batch-size 32 \
                --lr 5e-5 --seed "$seed" --half --val-queries 300 --val-corpus 5000 \
                --test-queries 200 --test-corpus 5000 --out "$run" --resume --quiet --json > /dev/null
        fi
        measure "student-$method-$seed" "$run"
    done
done

# Speed: the teacher and its students taking turns in one process.
"$BIN" bench embed-speed --models "$(IFS=,; echo "$OUT/$TEACHER,${students[*]}")" --texts 3000 --rounds 3 \
    | tee "$OUT/speed.md" >&2

python3 - "$OUT" <<'PY' | tee "$OUT/table.md"
import glob, json, os, sys
out = sys.argv[1]
def train_seconds(name):
    path = os.path.join(out, name + ".summary.json")
    return json.load(open(path))["train_seconds"] if os.path.exists(path) else None
print("| row | parameters (embeddings) | corpus sentences/s | nDCG@10 | R@1 | R@10 | MRR@10 | training s |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for path in sorted(glob.glob(os.path.join(out, "*.eval.json")), key=os.path.getmtime):
    name = os.path.basename(path)[: -len(".eval.json")]
    r = json.load(open(path))
    params = "—"
    manifest = os.path.join(out, name, "manifest.json")
    if os.path.exists(manifest):
        m = json.load(open(manifest))["metrics"]
        emb = m.get("params_embeddings")
        params = f"{int(m['params']):,}" + (f" ({int(emb):,})" if emb else "")
    seconds = train_seconds(name)
    print(f"| {name} | {params} | {r['docs_per_s']:,.0f} | {r['ndcg@10']:.4f} | {r['recall@1']:.4f} | "
          f"{r['recall@10']:.4f} | {r['mrr@10']:.4f} | {'—' if seconds is None else f'{seconds:,.0f}'} |")
PY
