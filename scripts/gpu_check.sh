#!/usr/bin/env bash
# gpu_check.sh -- everything that needs a CUDA device, in one run, for a machine that has one:
# the gpu-labelled parity tests (every op, training steps, KV-cache sampling, the reward model,
# NCCL on device buffers) with their output, then `she bench`'s GPU section (FP32, TF32 and
# BF16 against cuBLAS in the same mode, NCCL all-reduce) for the c1 and small presets.  Writes
# OUT/gpu-tests.txt and OUT/engine-bench-gpu.txt (OUT defaults to $OUT, else reports/) and
# exits non-zero when a parity test fails or was skipped (a device that is not seen is a
# failure here, not a skip).
# Usage: scripts/gpu_check.sh [BUILD_DIR]   (after `make build`; about 5 minutes on one H100)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
out=${OUT:-reports}
mkdir -p "$out"
nvidia-smi -L || { echo "gpu_check: no GPU visible (nvidia-smi)"; exit 1; }
(cd "$build" && ctest -L gpu --output-on-failure -V) >"$out/gpu-tests.txt" 2>&1
rc=$?
grep -E "^[0-9]+: (skipped|check failed)|Test +#|tests passed" "$out/gpu-tests.txt"
if grep -q "Skipped" "$out/gpu-tests.txt"; then
    echo "gpu_check: a gpu test skipped on a machine with a GPU"
    rc=1
fi
for m in c1 small; do
    "$build/she" bench --model "$m" --steps 10 --gen-runs 2 --set bench.cpu=false
done >"$out/engine-bench-gpu.txt" 2>&1 || rc=1
grep -E "ratio|busbw|tokens_per_s|skipped" "$out/engine-bench-gpu.txt" | head -40
exit $rc
