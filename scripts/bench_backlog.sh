#!/usr/bin/env bash
# bench_backlog.sh -- the rollout backlog bound (rollout.max.backlog) on and off, in turns, on
# the same data, policy and reward model: reports/pipeline.md's comparison.  Each run is
# scripts/bench_pipeline.sh; the order alternates (off, on, on, off, ...) so a machine that
# slows down or speeds up during the runs favours neither side.
# Usage: scripts/bench_backlog.sh SHE OUTDIR ROUNDS [she pipeline options...]
set -euo pipefail
she=${1:?usage: bench_backlog.sh SHE OUTDIR ROUNDS [pipeline options]}
dir=${2:?usage: bench_backlog.sh SHE OUTDIR ROUNDS [pipeline options]}
rounds=${3:?usage: bench_backlog.sh SHE OUTDIR ROUNDS [pipeline options]}
shift 3
here=$(dirname "$0")
mkdir -p "$dir"
for r in $(seq 1 "$rounds"); do
    if [ $((r % 2)) -eq 1 ]; then order="0 -1"; else order="-1 0"; fi
    for b in $order; do
        name=$([ "$b" = 0 ] && echo off || echo auto)
        echo "== round $r, max-backlog $b ($name)"
        bash "$here/bench_pipeline.sh" "$she" "$dir/r$r-$name" "$@" --max-backlog "$b"
    done
done
