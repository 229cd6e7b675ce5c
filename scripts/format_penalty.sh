#!/usr/bin/env bash
# format_penalty.sh -- does `reward.format.penalty` keep SRPO from driving a weak policy into
# unparsable answers?  Runs `she pipeline` (the demo's loop: hybrid rewards, 24 steps of 8
# prompts x G 8) once per penalty and per seed, from the same starting policy and reward model,
# and reads the final evaluation (first vs last checkpoint, 200 held-out rows, greedy) of each
# run into reports/format_penalty.csv and reports/format_penalty.md.
# Usage: scripts/format_penalty.sh SHE WORKDIR DATA POLICY RM "PENALTIES" "SEEDS"
#   e.g. scripts/format_penalty.sh build/she /tmp/fp demo-out/data.jsonl demo-out/sft/last \
#            demo-out/rm/last "0 0.5" "1 2"
set -euo pipefail
she=$1 work=$2 data=$3 policy=$4 rm=$5 penalties=$6 seeds=$7
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$work"
csv="$here/../reports/format_penalty.csv"
echo "penalty,seed,format_failures_first,format_failures_last,accuracy_first,accuracy_last,macro_f1_first,macro_f1_last" >"$csv"
for p in $penalties; do
    for s in $seeds; do
        out="$work/p$p-s$s"
        rm -rf "$out"
        echo "== penalty $p, seed $s"
        "$she" pipeline --out "$out" --data "$data" --policy "$policy" --rm "$rm" \
            --reward hybrid --steps 24 --batch 8 --group 8 --max-new 96 --checkpoint-every 4 \
            --eval-rows 200 --set "pipeline.args.reward=--format-penalty $p" \
            --set "pipeline.args.rollout=--set rollout.seed=$s" >"$out.log" 2>&1
        python3 - "$out" "$p" "$s" >>"$csv" <<'PY'
import json, sys
out, p, s = sys.argv[1:]
d = json.load(open(f"{out}/eval.json"))
a, b = (x["metrics"] for x in d["systems"][:2])
print(f"{p},{s},{100*a['format_failure_rate']:.2f},{100*b['format_failure_rate']:.2f},"
      f"{100*a['accuracy']:.2f},{100*b['accuracy']:.2f},{100*a['macro_f1']:.2f},"
      f"{100*b['macro_f1']:.2f}")
PY
        tail -1 "$csv"
    done
done
python3 - "$csv" "$here/../reports/format_penalty.md" "$(printf '%q ' "$she" "$work" "$data" "$policy" "$rm" "$penalties" "$seeds")" <<'PY'
import csv, statistics as st, sys
rows = list(csv.DictReader(open(sys.argv[1])))
pens = sorted({r["penalty"] for r in rows}, key=float)
def ms(xs):
    xs = [float(x) for x in xs]
    return f"{st.mean(xs):.1f} ± {st.stdev(xs):.1f}" if len(xs) > 1 else f"{xs[0]:.1f}"
lines = ["# Format penalty: does it keep SRPO's answers parsable?", "",
         "Written by `scripts/format_penalty.sh` (command below); the rows are in "
         "`format_penalty.csv`.  Each run: `she pipeline` from the same starting policy and "
         "reward model, hybrid rewards, 24 SRPO steps of 8 prompts x G = 8, then greedy "
         "evaluation of the first and last checkpoints on 200 held-out rows.  Percentages; "
         "mean ± std over the seeds.", "",
         "| format penalty | runs | format failures, first | format failures, last | accuracy, first | accuracy, last | macro F1, first | macro F1, last |",
         "|---:|---:|---:|---:|---:|---:|---:|---:|"]
for p in pens:
    rs = [r for r in rows if r["penalty"] == p]
    lines.append(f"| {p} | {len(rs)} | " + " | ".join(ms([r[k] for r in rs]) for k in (
        "format_failures_first", "format_failures_last", "accuracy_first", "accuracy_last",
        "macro_f1_first", "macro_f1_last")) + " |")
lines += ["", "Every run (format failures of the last checkpoint, %):", ""]
for p in pens:
    lines.append(f"- penalty {p}: " + ", ".join(f"seed {r['seed']} {float(r['format_failures_last']):.1f}"
                                              for r in rows if r["penalty"] == p))
lines += ["", "Command:", "", f"    scripts/format_penalty.sh {sys.argv[3].strip()}", ""]
open(sys.argv[2], "w").write("\n".join(lines))
PY
echo "wrote reports/format_penalty.md"
