#!/usr/bin/env python3
"""sft_report.py -- builds reports/sft.md, reports/sft.csv and reports/sft_curves.png from what
scripts/sft_report.sh leaves behind: the `she evaluate` reports (reports/sft_homedepot.json,
reports/sft_synthetic.json), the training logs (WORK/{hd,syn}/train_log.jsonl, WORK/*.log) and
the stage timings (WORK/timings.tsv).  Standard library only; the plot needs matplotlib
(pip install -r scripts/requirements-report.txt) and is skipped (with a note) without it.
Called by sft_report.sh; not meant to be run alone."""
import argparse
import csv
import json
import os
import re

GRADES = ["L1", "L2", "L3", "L4"]


def load_json(path):
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_log(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            rows = [json.loads(line) for line in f if line.strip()]
    return rows


def pct(x):
    return "n/a" if x is None else f"{100 * x:.2f}"


def timings(work):
    t = {}
    path = os.path.join(work, "timings.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                name, secs = line.split("\t")
                t[name] = int(secs)
    return t


def grep_log(work, name, pattern):
    path = os.path.join(work, name + ".log")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        for line in f:
            m = re.search(pattern, line)
            if m:
                return m
    return None


def systems(doc):
    return [(s["name"], s["metrics"]) for s in doc["systems"]]


def csv_rows(dataset, doc):
    out = []
    for name, m in systems(doc):
        steps = {s["step"]: s["accuracy"] for s in m.get("steps", [])}
        rk = m.get("ranking", {})
        out.append({
            "dataset": dataset,
            "system": name,
            "rows": m["n"],
            "accuracy": m["accuracy"],
            "macro_f1": m["macro_f1"],
            "good_f1": m["good_f1"],
            **{f"f1_{g}": m["per_class"][g]["f1"] for g in GRADES},
            "format_failure_rate": m["format_failure_rate"],
            **{f"step{j}_acc": steps.get(j, "") for j in range(1, 6)},
            "item_goodrate10": rk.get("item_goodrate", ""),
            "query_goodrate": rk.get("query_goodrate", ""),
            "ndcg10": rk.get("ndcg", ""),
        })
    return out


def table(doc):
    lines = ["| system | rows | accuracy | macro F1 | Good F1 | F1 L1 | F1 L2 | F1 L3 | F1 L4 | "
             "format failures | goodrate@10 | query goodrate | NDCG@10 |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in systems(doc):
        rk = m.get("ranking", {})
        lines.append(
            f"| {name} | {m['n']} | {pct(m['accuracy'])} | {pct(m['macro_f1'])} | "
            f"{pct(m['good_f1'])} | " + " | ".join(pct(m["per_class"][g]["f1"]) for g in GRADES) +
            f" | {pct(m['format_failure_rate'])} | {pct(rk.get('item_goodrate'))} | "
            f"{pct(rk.get('query_goodrate'))} | {pct(rk.get('ndcg'))} |")
    return "\n".join(lines)


def steps_table(doc):
    name, m = systems(doc)[0]
    if not m.get("steps"):
        return "(no per-step accuracy)"
    lines = ["| step | rows | accuracy |", "|---|---:|---:|"]
    for s in m["steps"]:
        lines.append(f"| {s['step']} {s['name']} | {s['n']} | {pct(s['accuracy'])} |")
    return "\n".join(lines)


def confusion(doc):
    name, m = systems(doc)[0]
    c = m["confusion"]
    lines = ["| gold \\ pred | " + " | ".join(c["pred_columns"]) + " |",
             "|---|" + "---:|" * len(c["pred_columns"])]
    for g, row in zip(c["gold_rows"], c["counts"]):
        lines.append(f"| {g} | " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines)


def val_curve(log):
    return [(r["step"], r["val_macro_f1"], r["val_fail_rate"], r["val_loss"])
            for r in log if "val_macro_f1" in r]


def plot(reports, logs):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for label, log in logs.items():
        tr = [(r["step"], r["loss"]) for r in log if "loss" in r]
        va = val_curve(log)
        if tr:
            ax[0].plot(*zip(*tr), label=f"{label} train loss (with the loss weights)")
        if va:
            ax[0].plot([v[0] for v in va], [v[3] for v in va], "o--", label=f"{label} val loss")
            ax[1].plot([v[0] for v in va], [100 * v[1] for v in va], "o-",
                       label=f"{label} val macro F1 (subset)")
    ax[0].set_xlabel("step")
    ax[0].set_ylabel("answer-token NLL")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("macro F1 (%)")
    ax[1].legend()
    fig.tight_layout()
    path = os.path.join(reports, "sft_curves.png")
    fig.savefig(path, dpi=100)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", required=True)
    ap.add_argument("--reports", required=True)
    for k in ("hd-steps", "syn-steps", "syn-n", "syn-eval-limit", "batch", "seq"):
        ap.add_argument("--" + k, type=int, required=True)
    ap.add_argument("--hd-lr", required=True)
    ap.add_argument("--syn-lr", required=True)
    ap.add_argument("--hd-class-weight", required=True)
    ap.add_argument("--hd-step-weights", required=True)
    ap.add_argument("--hd-model", required=True)
    ap.add_argument("--syn-model", required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--eval-every", type=int, required=True)
    a = ap.parse_args()

    hd = load_json(os.path.join(a.reports, "sft_homedepot.json"))
    syn = load_json(os.path.join(a.reports, "sft_synthetic.json"))
    logs = {"Home Depot": load_log(os.path.join(a.work, "hd", "train_log.jsonl")),
            "synthetic": load_log(os.path.join(a.work, "syn", "train_log.jsonl"))}
    t = timings(a.work)

    rows = (csv_rows("homedepot_val", hd) if hd else []) + \
           (csv_rows("synthetic_val", syn) if syn else [])
    if rows:
        with open(os.path.join(a.reports, "sft.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
            w.writeheader()
            w.writerows(rows)
    png = plot(a.reports, logs)

    md = []
    md.append("# SFT of the relevance policy: Home Depot and synthetic data\n")
    md.append("Written by `scripts/sft_report.sh` (this file by `scripts/sft_report.py`). "
              "Re-run with `scripts/sft_report.sh` from the repository root after building "
              "`build/she`; stages whose outputs exist are skipped, so delete "
              f"`{os.path.relpath(a.work)}/` and `reports/sft_*.json` to redo everything.\n")

    # the bars
    md.append("## Acceptance bars\n")
    if hd:
        pol, lex = systems(hd)[0][1], systems(hd)[-1][1]
        gap = 100 * (pol["macro_f1"] - lex["macro_f1"])
        ok1 = gap >= 5.0
        ok2 = pol["format_failure_rate"] < 0.01
        md.append(f"- Home Depot validation ({pol['n']} rows, the full validation split): SFT "
                  f"macro F1 **{pct(pol['macro_f1'])}** vs lexical baseline "
                  f"{pct(lex['macro_f1'])}: {gap:+.2f} points, bar +5.00 -- "
                  f"**{'MET' if ok1 else 'NOT MET'}**.")
        md.append(f"- Home Depot format failures **{pct(pol['format_failure_rate'])}%**, bar < 1% "
                  f"-- **{'MET' if ok2 else 'NOT MET'}**.")
    else:
        md.append("- Home Depot: not run yet (no reports/sft_homedepot.json).")
    if syn:
        m = systems(syn)[0][1]
        steps = m.get("steps", [])
        have = len(steps) == 5 and all(s["n"] > 0 for s in steps)
        md.append(f"- Synthetic: per-step accuracy reported for "
                  f"{'all five steps' if have else 'NOT all five steps'}: " +
                  ", ".join(f"{s['step']} {s['name']} {pct(s['accuracy'])}" for s in steps) + ".")
    else:
        md.append("- Synthetic: not run yet (no reports/sft_synthetic.json).")
    md.append("")

    # set-up
    md.append("## Set-up\n")
    tok = grep_log(a.work, "hd_train", r"trained a tokenizer of (\d+) ids")
    seqs = grep_log(a.work, "hd_train", r"(\d+) training sequences in .*?: (\d+) tokens \((\d+) "
                                        r"answer\), mean ([\d.]+)")
    split = grep_log(a.work, "hd_train", r"(\d+) training rows, (\d+) validation rows")
    arch = grep_log(a.work, "hd_train", r"policy: (.*?) \(sft_cmd")
    syn_arch = grep_log(a.work, "syn_train", r"policy: (.*?) \(sft_cmd")
    md.append(f"- Policy: preset `{a.hd_model}` on Home Depot"
              f"{f' ({arch.group(1)})' if arch else ''}, preset `{a.syn_model}` on synthetic data"
              f"{f' ({syn_arch.group(1)})' if syn_arch else ''}; trained from scratch; byte-level "
              f"BPE tokenizer trained on the training prompts and teacher chains"
              f"{f' ({tok.group(1)} ids)' if tok else ''}.")
    md.append(f"- SFT: batch {a.batch}, max sequence {a.seq} tokens (prompt = `<|bos|>` + "
              "query / title / catalogue attributes, the item text cut to fit, never the "
              "answer), answer = the five-step teacher chain + `<|eos|>`, loss = mean NLL of the "
              "answer tokens (prompt masked); AdamW (beta2 0.95, weight decay 0.1 on matrices), "
              f"clip 1.0, {a.warmup} warm-up steps then cosine to 10% of the peak; batches bucketed by "
              "length within windows of 32 batches (less padding).")
    md.append(f"- Home Depot: `train.csv` split by query (`she_dataset_split_by_query`, "
              f"validation = 15% of queries, split seed 1)"
              f"{f': {split.group(1)} training rows, {split.group(2)} validation rows' if split else ''}"
              f"; {a.hd_steps} steps at peak lr {a.hd_lr}, class weight {a.hd_class_weight} "
              "(each sequence weighs (1 / share of its grade)^w in the loss, mean weight 1), "
              f"step weights {a.hd_step_weights} (answer tokens of chain steps 1..5)"
              f"{f' (~{a.hd_steps * a.batch / int(seqs.group(1)):.2f} epochs; mean sequence {seqs.group(4)} tokens)' if seqs else ''}"
              f"; validation every {a.eval_every} steps on 512 validation rows (greedy), best by macro F1 "
              "kept. Teacher chains by label decomposition with the brand / material lexicons "
              "(trainer/COT_FORMAT.md).")
    md.append(f"- Synthetic: `she gen-data --n {a.syn_n} --seed 1`, same split; {a.syn_steps} "
              f"steps at peak lr {a.syn_lr}, validation every {a.eval_every} steps; teacher chains from the generator's step ground "
              f"truth; evaluated on the first {a.syn_eval_limit} rows of the validation split.")
    md.append("- Baselines (same rows): majority class and the lexical overlap rule, both fitted "
              "on the training side of the same split.")
    if t:
        md.append("- Wall-clock per stage (s): " +
                  ", ".join(f"{k} {v}" for k, v in t.items()) +
                  f"; total {sum(t.values())} s on a 2-core machine shared with other jobs "
                  "(builds and tests of other work ran at the same time, so a quiet machine is "
                  "faster; the best 50-step training throughput below is the quiet-machine "
                  "rate).")
    md.append("")

    md.append("### Commands\n")
    md.append("```")
    for stage in ("hd_train", "hd_eval", "syn_data", "syn_train", "syn_eval"):
        path = os.path.join(a.work, stage + ".cmd")
        if os.path.exists(path):
            md.append(open(path).read().strip())
    md.append("```\n")

    for title, doc, name in (("Home Depot validation (full split)", hd, "sft_homedepot"),
                             ("Synthetic validation", syn, "sft_synthetic")):
        if not doc:
            continue
        md.append(f"## {title}\n")
        md.append(f"{doc['title']}. Percentages. Full report with breakdowns: "
                  f"[`{name}.md`]({name}.md) / [`{name}.json`]({name}.json).\n")
        md.append(table(doc) + "\n")
        md.append("Per-step accuracy of the policy:\n")
        md.append(steps_table(doc) + "\n")
        md.append("Confusion matrix of the policy (rows gold, columns predicted):\n")
        md.append(confusion(doc) + "\n")
        cmp = doc.get("compare")
        if cmp:
            md.append(f"Row by row against {cmp['b']}: only the policy right "
                      f"{pct(cmp['a_only_share'])}%, only the lexical rule right "
                      f"{pct(cmp['b_only_share'])}%, both {pct(cmp['both_share'])}%, neither "
                      f"{pct(cmp['neither_share'])}%.\n")
        notes = doc.get("meta", {}).get("notes")
        if notes:
            md.append("Notes from `she evaluate`:\n\n" + notes)

    md.append("## Throughput\n")
    for label, log in logs.items():
        tps = sorted(r["tokens_per_s"] for r in log if "tokens_per_s" in r)
        if tps:
            md.append(f"- {label} training: median {tps[len(tps) // 2]:.0f}, best "
                      f"{tps[-1]:.0f} tokens/s (batch x padded length per second, per 50-step "
                      "window; the spread is other workers' load).")
    for label, doc in (("Home Depot", hd), ("synthetic", syn)):
        for ck in (doc or {}).get("meta", {}).get("checkpoints", []):
            md.append(f"- {label} evaluation: {ck['generated_tokens']} tokens generated in "
                      f"{ck['seconds']:.0f} s, {ck['tokens_per_s']:.0f} tokens/s (greedy, "
                      "batch 64, KV cache).")
    md.append("")

    notes_path = os.path.join(a.work, "notes.md")
    if os.path.exists(notes_path):
        md.append(open(notes_path).read().rstrip() + "\n")

    md.append("## Training curves\n")
    for label, log in logs.items():
        va = val_curve(log)
        if va:
            md.append(f"{label}, validation subset (512 rows): " + "; ".join(
                f"step {s}: macro F1 {pct(f1)}, failures {pct(fr)}%, loss {vl:.3f}"
                for s, f1, fr, vl in va) + ".\n")
    if png:
        md.append(f"![training curves]({os.path.basename(png)})\n")
    else:
        md.append("(matplotlib not installed: no plot.)\n")

    md.append("## Caveats\n")
    md.append("- Home Depot has no step annotation: its per-step accuracy is agreement with the "
              "teacher's label decomposition (steps 1-2 read by the lexicon heuristic, steps 3-4 "
              "derived from the gold grade), not with human judgement of the steps.")
    md.append("- The prompt carries the query, the title and catalogue attributes but not the "
              "item description (sequence budget, trainer/COT_FORMAT.md). On the synthetic set "
              "some item attributes are only in the description, so steps 2 and 4 are partly "
              "unobservable to the policy there.")
    md.append("- Ranking ties are broken by row order: the judge does not yet output grade "
              "probabilities.")
    with open(os.path.join(a.reports, "sft.md"), "w") as f:
        f.write("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
