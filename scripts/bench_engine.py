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
    ap.add_argument("--from-csv", nargs="*", help="only rewrite the report from these CSVs")
    ap.add_argument("--allreduce", action="store_true",
                    help="only measure MPI all-reduce bandwidth (2 ranks) into engine-bench-allreduce.csv")
    a = ap.parse_args()
    if a.allreduce:
        allreduce(a)
        return
    if a.from_csv:
        rows = []
        for path in a.from_csv:
            with open(path) as fh:
                for r in csv.DictReader(fh):
                    row = {k: num(v) for k, v in r.items()}
                    row.setdefault("command", command_for(a.she, row["model"], row["coretype"], row["runs"]))
                    rows.append(row)
        save(rows, a)
        return
    rows = []
    numeric = None
    for coretype in a.coretypes.split(","):
        for model in a.models.split(","):
            extra = bench_args(model)
            runs = []
            for r in range(a.runs):
                cmd, vals = run_once(a.she, model, coretype, extra)
                runs.append(vals)
                print(f"{coretype} {model} run {r}: train {vals.get('train_tokens_per_s')} tok/s "
                      f"ratio {vals.get('train_gflops_ratio')} gen64 ratio {vals.get('gen_b64_gflops_ratio')}",
                      file=sys.stderr, flush=True)
            command = command_for(a.she, model, coretype, a.runs)
            row = {"model": model, "coretype": coretype, "runs": a.runs, "command": command,
                   "openblas_core": runs[0].get("openblas_core", "")}
            keys = [k for k in runs[0] if k not in ("model", "openblas_core", "openblas_coretype_env", "command")]
            for k in keys:
                try:
                    row[k] = statistics.median(float(v[k]) for v in runs)
                except (ValueError, KeyError):
                    row[k] = runs[0][k]
            rows.append(row)
    save(rows, a)

ALLREDUCE_CMD = ("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 "
                 "mpirun -np 2 --oversubscribe {she} bench --model c1 --set bench.train=false "
                 "--set bench.generate=false --allreduce-mb {mb}")

def allreduce(a):
    rows = []
    for mb in (4, 64):
        cmd = ALLREDUCE_CMD.format(she=a.she, mb=mb)
        out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=True).stdout
        vals = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("allreduce_"))
        vals["command"] = cmd
        rows.append(vals)
        print(vals, file=sys.stderr)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "engine-bench-allreduce.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=sorted(rows[0]))
        w.writeheader()
        w.writerows(rows)

def allreduce_section(a):
    path = os.path.join(a.out, "engine-bench-allreduce.csv")
    if not os.path.exists(path):
        return []
    out = ["## All-reduce (CPU ranks, MPI)", "",
           "Two MPI ranks on this machine's two cores (the data-parallel learner's gradient "
           "all-reduce; non-blocking MPI_Iallreduce polled against a deadline, see core/dist.c).", "",
           "| MiB | backend | seconds | algorithm GB/s | bus GB/s |", "|---|---|---|---|---|"]
    cmds = []
    with open(path) as fh:
        for r in csv.DictReader(fh):
            out.append(f"| {r['allreduce_mib']} | {r['allreduce_backend']} | {float(r['allreduce_s']):.4f} | "
                       f"{float(r['allreduce_algbw_gbs']):.3f} | {float(r['allreduce_busbw_gbs']):.3f} |")
            cmds.append(f"    {r['command']}")
    return out + ["", "Commands:", ""] + cmds + [""]

def gpu_section():
    """The GPU section: no device on the machine this report is written on, so the command only."""
    return ['## GPU', '', '**No GPU figures were measured here: this machine has no CUDA device** (the build compiles the CUDA sources; `she bench` prints `gpu=skipped: no CUDA device (...)`). The section below is ready to run on a machine with one.', '', "`she bench`'s GPU section runs wherever a CUDA device exists (or with `--device cuda[:N]`): for each preset, training tokens/s and TFLOP/s of the presets' batch through the engine façade (core/engine.h, the CUDA backend of core/model_cuda.cu), KV-cache generation tokens/s at batch 1, 16 and 64, each in FP32, TF32 and BF16 math (`--math`) next to the cuBLAS GEMM TFLOP/s measured in the same run on the model's own projection shapes in the same compute type (`gpu_fp32_train_tflops_ratio`, `gpu_bf16_gen_b64_tflops_ratio`, ...), then NCCL all-reduce bandwidth of 64 MiB on one GPU (`gpu_allreduce_1gpu_busbw_gbs`) and, when more are visible, across all of them, one process per GPU over core/dist.c's NCCL backend (`gpu_allreduce_<N>gpu_busbw_gbs`).", '', 'One line, on the GPU machine, from the repository root after `make` (CPU section off; every figure is a name=value line):', '', '    for m in c1 c2 small base; do build/she bench --model $m --steps 20 --gen-runs 3 --set bench.cpu=false; done | tee reports/engine-bench-gpu.txt', '', 'Or `scripts/gpu_check.sh`: the `gpu` parity tests, then this bench for c1 and small, into reports/.', '']

def bench_args(model):
    if model in ("c1", "c2"):
        return ["--steps", "20", "--gen-runs", "3"]
    if model == "base":
        return ["--steps", "3", "--gen-runs", "2"]
    return ["--steps", "5", "--gen-runs", "3"]

def command_for(she, model, coretype, runs):
    envs = "" if coretype == "unset" else f"OPENBLAS_CORETYPE={coretype} "
    return (f"{envs}OMP_NUM_THREADS=2 {she} bench --model {model} {' '.join(bench_args(model))}"
            f"   # x{int(runs)}")

def num(v):
    try:
        return float(v)
    except ValueError:
        return v

def save(rows, a):
    os.makedirs(a.out, exist_ok=True)
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("model", "coretype"), k))
    with open(os.path.join(a.out, "engine-bench.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    write_md(rows, a)

def f(v, fmt="{:.0f}"):
    return fmt.format(v) if isinstance(v, float) else str(v)

def findings(rows):
    """Scaling from c1 upwards and the effect of a forced OpenBLAS core type, from the data."""
    out = ["## Findings", ""]
    base = {r["model"]: r for r in rows if r["coretype"] == "unset"}
    if "c1" in base:
        c1 = base["c1"]
        out.append("Cost growth (core type unset): FLOPs per token and step time relative to c1.")
        out.append("")
        out.append("| model | GFLOP per token | x c1 | tokens/s | x c1 | GFLOP/s | ratio to sgemm |")
        out.append("|---|---|---|---|---|---|---|")
        for m in ("c1", "c2", "small", "base"):
            if m not in base:
                continue
            r = base[m]
            fpt = r["train_gflops"] / r["train_tokens_per_s"]
            fpt1 = c1["train_gflops"] / c1["train_tokens_per_s"]
            out.append(f"| {m} | {fpt:.4f} | {fpt / fpt1:.1f} | {r['train_tokens_per_s']:.0f} | "
                       f"{r['train_tokens_per_s'] / c1['train_tokens_per_s']:.2f} | {r['train_gflops']:.1f} | "
                       f"{r['train_gflops_ratio']:.2f} |")
        out.append("")
    for m in ("c1", "c2"):
        if m in base:
            r = base[m]
            out.append(f"- {m}: {r['train_tokens_per_s']:.0f} training tokens/s = "
                       f"{r['train_tokens_per_s'] / LLMC[m]:.1f}x llm.c's {LLMC[m]:.0f} (bar: 3x).")
    if "small" in base:
        r = base["small"]
        out.append(f"- small: training at {r['train_gflops_ratio']:.2f} of sgemm (bar 0.50); batch-64 "
                   f"generation at {r.get('gen_b64_gflops_ratio', float('nan')):.2f} (bar 0.25).")
    forced = [r for r in rows if r["coretype"] != "unset"]
    for r in forced:
        if r["model"] in base:
            b = base[r["model"]]
            out.append(f"- {r['model']} with OPENBLAS_CORETYPE={r['coretype']} ({r['openblas_core']} kernels) vs "
                       f"unset ({b['openblas_core']}): sgemm {r['sgemm_gflops']:.0f} vs {b['sgemm_gflops']:.0f} GFLOP/s, "
                       f"training {r['train_tokens_per_s']:.0f} vs {b['train_tokens_per_s']:.0f} tokens/s, "
                       f"batch-64 generation {r.get('gen_b64_tokens_per_s', 0):.0f} vs "
                       f"{b.get('gen_b64_tokens_per_s', 0):.0f} tokens/s.")
    out.append("")
    return out

def write_md(rows, a):
    commands = [r["command"] for r in rows]
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
    lines += [""] + findings(rows) + allreduce_section(a) + gpu_section()
    lines += ["## Commands", "", "Regenerate: `python3 scripts/bench_engine.py` (or `--from-csv` to rewrite "
              "this page from the CSV).", ""] + [f"    {c}" for c in commands] + [""]
    with open(os.path.join(a.out, "engine-bench.md"), "w") as fh:
        fh.write("\n".join(lines))

if __name__ == "__main__":
    main()
