#!/usr/bin/env python3
"""bench_engine.py -- runs `she bench` on the engine presets and writes reports/engine-bench.md
and reports/engine-bench.csv (medians over several runs, 2 threads).

Usage: python3 scripts/bench_engine.py [--she build/she] [--runs 3] [--models c1,c2,small,base]
                                       [--coretypes unset,Haswell]

Each run of `she bench` measures its own sgemm reference on the model's shapes, so every GFLOP/s
figure is reported as a ratio measured within one run.  OPENBLAS_CORETYPE 'unset' is how this
machine runs (OpenBLAS picks its kernel from the CPU); a named core type forces that kernel, as
some machines of this workplace do by setting the variable."""
import argparse, csv, os, statistics, subprocess, sys, time

LLMC = {"c1": 3300.0, "c2": 790.0}  # llm.c train_gpt2.c tokens/s on this machine (issue 3)

def run_once(she, model, coretype, extra):
    env = dict(os.environ, OMP_NUM_THREADS="2")
    env.pop("OPENBLAS_CORETYPE", None)
    env.pop("OPENBLAS_L2_SIZE", None)
    if coretype != "unset":
        env["OPENBLAS_CORETYPE"] = coretype
    cmd = [she, "bench", "--model", model] + extra
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    vals = {}
    for line in out.splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            vals[k] = v
    return cmd, vals

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--she", default="build/she")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--models", default="c1,c2,small,base")
    ap.add_argument("--coretypes", default="unset,Haswell")
    ap.add_argument("--out", default="reports")
    a = ap.parse_args()
    rows, commands = [], []
    numeric = None
    for coretype in a.coretypes.split(","):
        for model in a.models.split(","):
            extra = ["--steps", "5", "--gen-runs", "3"]
            if model in ("c1", "c2"):
                extra = ["--steps", "20", "--gen-runs", "3"]
            if model == "base":
                extra = ["--steps", "3", "--gen-runs", "2"]
            runs = []
            for r in range(a.runs):
                cmd, vals = run_once(a.she, model, coretype, extra)
                runs.append(vals)
                print(f"{coretype} {model} run {r}: train {vals.get('train_tokens_per_s')} tok/s "
                      f"ratio {vals.get('train_gflops_ratio')} gen64 ratio {vals.get('gen_b64_gflops_ratio')}",
                      file=sys.stderr, flush=True)
            envs = "" if coretype == "unset" else f"OPENBLAS_CORETYPE={coretype} "
            commands.append(f"{envs}OMP_NUM_THREADS=2 {' '.join(cmd)}   # x{a.runs}")
            row = {"model": model, "coretype": coretype, "runs": a.runs,
                   "openblas_core": runs[0].get("openblas_core", "")}
            keys = [k for k in runs[0] if k not in ("model", "openblas_core", "openblas_coretype_env")]
            for k in keys:
                try:
                    row[k] = statistics.median(float(v[k]) for v in runs)
                except (ValueError, KeyError):
                    row[k] = runs[0][k]
            rows.append(row)
    os.makedirs(a.out, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("model", "coretype"), k))
    with open(os.path.join(a.out, "engine-bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    write_md(rows, commands, a)

def f(v, fmt="{:.0f}"):
    return fmt.format(v) if isinstance(v, float) else str(v)

def write_md(rows, commands, a):
    lines = ["# Engine benchmark (CPU, 2 threads)", "",
             f"Written by `scripts/bench_engine.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
             f"every figure is the median of {a.runs} runs of `she bench`, and every ratio is taken "
             "against the cblas_sgemm GFLOP/s that the same run measured on the model's own matrix "
             "shapes (forward, input-gradient and weight-gradient products of every projection, "
             "OpenBLAS with its own 2 threads).", "",
             "Training FLOPs = 6 x matrix parameters x tokens + 12 x L x D x T x tokens (attention). "
             "Generation: 64-token prompts, 64 new tokens, temperature 0.99, top-k 100, KV cache; "
             "FLOPs = projections of every prompt and new token + LM head per new token + attention "
             "over the context.", "",
             "## Training", "",
             "| model | OpenBLAS core | tokens/s | bar (3x llm.c) | GFLOP/s | sgemm GFLOP/s | ratio | step (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        bar = f"{3 * LLMC[r['model']]:.0f}" if r["model"] in LLMC else "-"
        lines.append(f"| {r['model']} | {r['openblas_core']} ({r['coretype']}) | {f(r.get('train_tokens_per_s'))} | {bar} | "
                     f"{f(r.get('train_gflops'), '{:.1f}')} | {f(r.get('sgemm_gflops'), '{:.1f}')} | "
                     f"{f(r.get('train_gflops_ratio'), '{:.2f}')} | {f(r.get('train_step_s'), '{:.3f}')} |")
    lines += ["", "## Generation (KV cache)", "",
              "| model | OpenBLAS core | batch | tokens/s | GFLOP/s | ratio to training-shape sgemm | sgemm GFLOP/s at batch rows |",
              "|---|---|---|---|---|---|---|"]
    for r in rows:
        for b in (1, 16, 64):
            k = f"gen_b{b}_"
            if k + "tokens_per_s" in r:
                lines.append(f"| {r['model']} | {r['openblas_core']} ({r['coretype']}) | {b} | {f(r[k + 'tokens_per_s'])} | "
                             f"{f(r[k + 'gflops'], '{:.1f}')} | {f(r[k + 'gflops_ratio'], '{:.3f}')} | "
                             f"{f(r[k + 'sgemm_rows_gflops'], '{:.1f}')} |")
    lines += ["", "## Commands", ""] + [f"    {c}" for c in commands] + [""]
    with open(os.path.join(a.out, "engine-bench.md"), "w") as fh:
        fh.write("\n".join(lines))

if __name__ == "__main__":
    main()
