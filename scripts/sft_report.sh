#!/usr/bin/env bash
# sft_report.sh -- writes reports/sft.md, reports/sft.csv and reports/sft_*.{json,md,png}:
#   (1) Home Depot train.csv split by query (validation = 15% of queries, split seed 1): SFT of
#       the policy (preset HD_MODEL, c1 by default: the fastest, so the most epochs fit), then `she evaluate` on the FULL validation split next to the
#       majority-class and lexical baselines (fitted on the training side);
#   (2) a 50k-sample synthetic log (`she gen-data --n 50000`): SFT and evaluation on (a capped
#       part of) its validation split, with per-step accuracy of all five steps.
# Sized for <= 45 min on 2 quiet cores (the c1 policy trains at ~15,000 tokens/s there: 7,000
# Home Depot steps of 32 x ~106 tokens take ~27 min, 3,000 synthetic steps ~10 min).  Idempotent: a stage whose output exists is
# skipped (delete it, or the work directory, to redo it); the report itself is always rebuilt.
#
# Usage: scripts/sft_report.sh            (from anywhere; builds nothing: set SHE_BIN or build
#                                          build/she first)
# Environment: SHE_BIN (default build/she), SFT_WORK (default out/sft-report: checkpoints,
# logs, the synthetic data), and the sizes below.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHE=${SHE_BIN:-$ROOT/build/she}
WORK=${SFT_WORK:-$ROOT/out/sft-report}
HD_DATA=../shared/data/homedepot/train.csv
LEXICONS=../shared/data/homedepot/lexicons

# Training sizes (steps x batch x ~110 tokens per sequence).
HD_MODEL=${HD_MODEL:-c1}
HD_STEPS=${HD_STEPS:-7000}
HD_LR=${HD_LR:-3e-3}
# Loss weights on Home Depot.  --class-weight: macro F1 weighs L1 (7% of rows) as much as L3
# (42%), so each sequence weighs (1/share of its grade)^w.  --step-weights: the relevance
# decision is in steps 3-5; steps 1-2 read the text back (~50 of ~70 answer tokens).
HD_CLASS_WEIGHT=${HD_CLASS_WEIGHT:-1.0}
HD_STEP_WEIGHTS=${HD_STEP_WEIGHTS:-1,1,4,4,4}
SYN_N=${SYN_N:-50000}
SYN_MODEL=${SYN_MODEL:-c1}
SYN_STEPS=${SYN_STEPS:-3000}
SYN_LR=${SYN_LR:-3e-3}
SYN_EVAL_LIMIT=${SYN_EVAL_LIMIT:-1500}
BATCH=${BATCH:-32}
SEQ=${SEQ:-192}
WARMUP=${WARMUP:-200}
EVAL_EVERY=${EVAL_EVERY:-1000}

[ -x "$SHE" ] || { echo "sft_report.sh: no she binary at $SHE (build it or set SHE_BIN)" >&2; exit 2; }
[ -f "$HD_DATA" ] || { echo "sft_report.sh: $HD_DATA not found (run from the repo)" >&2; exit 2; }
mkdir -p "$WORK" reports
TIMES=$WORK/timings.tsv
touch "$TIMES"

# stage NAME OUTPUT -- COMMAND...: runs COMMAND unless OUTPUT exists, logging its time; the
# command line goes to WORK/NAME.cmd for the report.
stage() {
    local name=$1 out=$2
    shift 3
    printf '%s\n' "$*" | sed "s|$ROOT/||g" >"$WORK/$name.cmd"
    if [ -e "$out" ]; then
        echo "== $name: $out exists, skipped"
        return
    fi
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$WORK/$name.log"
    local rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || { echo "sft_report.sh: $name failed ($rc)" >&2; exit "$rc"; }
    printf '%s\t%d\n' "$name" $((SECONDS - t0)) >>"$TIMES"
}

# (1) Home Depot
stage hd_train "$WORK/hd/DONE" -- bash -c "'$SHE' train-sft --data $HD_DATA --format homedepot \
    --lexicons $LEXICONS --out '$WORK/hd' --model $HD_MODEL --val-fraction 0.15 --split-seed 1 \
    --seed 1 --batch $BATCH --seq $SEQ --max-steps $HD_STEPS --lr $HD_LR --class-weight $HD_CLASS_WEIGHT \
    --step-weights $HD_STEP_WEIGHTS --warmup $WARMUP \
    --eval-every $EVAL_EVERY --eval-rows 512 --log-every 50 && touch '$WORK/hd/DONE'"
stage hd_eval reports/sft_homedepot.json -- "$SHE" evaluate --model "$WORK/hd/best" \
    --data $HD_DATA --format homedepot --lexicons $LEXICONS --split val --val-fraction 0.15 \
    --split-seed 1 --batch 64 --title "Home Depot validation, SFT $HD_MODEL policy" \
    --out reports/sft_homedepot

# (2) synthetic
stage syn_data "$WORK/synthetic.jsonl" -- "$SHE" gen-data --n "$SYN_N" --seed 1 \
    --out "$WORK/synthetic.jsonl"
stage syn_train "$WORK/syn/DONE" -- bash -c "'$SHE' train-sft --data '$WORK/synthetic.jsonl' \
    --lexicons '' --out '$WORK/syn' --model $SYN_MODEL --val-fraction 0.15 --split-seed 1 --seed 1 \
    --batch $BATCH --seq $SEQ --max-steps $SYN_STEPS --lr $SYN_LR --warmup $WARMUP \
    --eval-every $EVAL_EVERY --eval-rows 512 --log-every 50 && touch '$WORK/syn/DONE'"
stage syn_eval reports/sft_synthetic.json -- "$SHE" evaluate --model "$WORK/syn/best" \
    --data "$WORK/synthetic.jsonl" --lexicons '' --split val --val-fraction 0.15 \
    --split-seed 1 --limit "$SYN_EVAL_LIMIT" --batch 64 \
    --title "Synthetic validation (gen-data --n $SYN_N --seed 1), SFT $SYN_MODEL policy" \
    --out reports/sft_synthetic

# the report (always rebuilt: cheap)
python3 scripts/sft_report.py --work "$WORK" --reports reports \
    --hd-steps "$HD_STEPS" --syn-steps "$SYN_STEPS" --syn-n "$SYN_N" \
    --syn-eval-limit "$SYN_EVAL_LIMIT" --batch "$BATCH" --seq "$SEQ" --hd-lr "$HD_LR" \
    --syn-lr "$SYN_LR" --hd-class-weight "$HD_CLASS_WEIGHT" \
    --hd-step-weights "$HD_STEP_WEIGHTS" --hd-model "$HD_MODEL" --syn-model "$SYN_MODEL" \
    --warmup "$WARMUP" --eval-every "$EVAL_EVERY"
echo "wrote reports/sft.md and reports/sft.csv"
