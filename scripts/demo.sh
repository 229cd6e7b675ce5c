#!/usr/bin/env bash
# demo.sh -- the main job on the embedded defaults: `she pipeline`, the whole streaming loop on
# this machine.  It prepares its own data (`she gen-data`), a starting policy (a short
# `she train-sft` of the c1 preset) and a reward model (a short `she train-rm`), starts the
# embedded broker and one of each component (produce, control, rollout, reward, learn) as child
# processes, shows a live status line while the learner takes its SRPO steps, and ends with an
# evaluation of the last checkpoint against the first on held-out queries.
# Sized to finish within 15 minutes on a 2-core machine (build included); the models are far
# too small to judge relevance well -- the demo shows the machinery, not the accuracy.
# Everything lands in $SHE_DEMO_OUT (default demo-out/): data, checkpoints, logs, eval.md.
set -euo pipefail
she=${1:-build/she}
out=${SHE_DEMO_OUT:-demo-out}
rm -rf "$out"
t0=$(date +%s)
echo "== she: $("$she" version | head -1)"
echo "== she pipeline (logs: $out/logs/; Ctrl-C stops it cleanly)"
"$she" pipeline --out "$out" \
    --samples 3000 --model c1 --sft-steps 480 --set pipeline.args.sft="--batch 24 --eval-rows 100" \
    --rm-steps 60 \
    --set pipeline.args.rm="--set rm.samples=300 --set rm.eval.samples=10 --set rm.policy.samples=0" \
    --reward hybrid --steps 24 --batch 8 --group 8 --max-new 96 --checkpoint-every 4 \
    --eval-rows 200 --set pipeline.timeout.s=900
echo "== demo finished in $(( $(date +%s) - t0 )) s; details in $out/"
