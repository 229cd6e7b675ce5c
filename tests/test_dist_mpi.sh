#!/usr/bin/env bash
# test_dist_mpi.sh -- the data-parallel acceptance tests under `mpirun -np 2` (tests/test_dist.c):
#   1. parity: 2 MPI ranks, each with half of a batch, reach the parameters of 1 rank on the
#      combined batch after 3 AdamW steps (tolerances in test_dist.c), bit-identical across
#      ranks; prints the MPI all-reduce bandwidth;
#   2. lost rank: rank 1 hangs; rank 0's all-reduce must fail within its 2 s deadline with a
#      message naming the operation and the time, and the job must end non-zero, not hang.
# Skips (77) when the build has no MPI or no mpirun is found.
# Environment (set by tests/CMakeLists.txt): SHE_TEST_DIST (the test_dist binary),
# SHE_HAVE_MPI (ON/OFF), SHE_MPIEXEC (mpiexec found by CMake; else mpirun on PATH).
set -u
if [ "${SHE_HAVE_MPI:-OFF}" != "ON" ]; then
    echo "skipped: built without MPI (SHE_MPI=OFF or no MPI C library found)"
    exit 77
fi
MPIRUN=${SHE_MPIEXEC:-}
[ -n "$MPIRUN" ] || MPIRUN=$(command -v mpirun || true)
if [ -z "$MPIRUN" ] || [ ! -x "$MPIRUN" ]; then
    echo "skipped: no mpirun/mpiexec found"
    exit 77
fi
BIN=${SHE_TEST_DIST:?SHE_TEST_DIST must name the test_dist binary}
# Sanitizer builds: Open MPI leaks at MPI_Finalize (its dlopened components); our code's leaks
# are caught by test_dist, whose TCP ranks run the same parity code.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# Each rank gets one OpenMP thread so 2 ranks fit 2 cores; Open MPI refuses root without
# --allow-run-as-root and more ranks than cores without --oversubscribe.
ARGS=(-np 2 -x OMP_NUM_THREADS=1)
if "$MPIRUN" --version 2>&1 | grep -Eq "Open MPI|OpenRTE|open-mpi"; then
    ARGS+=(--oversubscribe --allow-run-as-root)
fi
TMP=${SHE_TEST_TMP:-/tmp}/test_dist_mpi.$$
mkdir -p "$TMP"
trap 'rm -rf "$TMP"' EXIT
fail=0

echo "-- parity: mpirun ${ARGS[*]} test_dist --mpi-parity"
if timeout 50 "$MPIRUN" "${ARGS[@]}" "$BIN" --mpi-parity >"$TMP/parity.out" 2>&1; then
    rc=0
else
    rc=$?
fi
cat "$TMP/parity.out"
if [ "$rc" -ne 0 ]; then
    echo "FAILED: parity run exited $rc"
    fail=1
elif [ "$(grep -c '^rank parity ok' "$TMP/parity.out")" -ne 2 ]; then
    echo "FAILED: not both ranks reported parity ok"
    fail=1
fi

echo "-- lost rank: mpirun ${ARGS[*]} test_dist --mpi-lost (rank 1 hangs, deadline 2 s)"
start=$(date +%s.%N)
if timeout 30 "$MPIRUN" "${ARGS[@]}" "$BIN" --mpi-lost >"$TMP/lost.out" 2>&1; then
    rc=0
else
    rc=$?
fi
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
cat "$TMP/lost.out"
echo "job exit status $rc after ${elapsed} s"
if [ "$rc" -eq 0 ] || [ "$rc" -eq 124 ]; then
    echo "FAILED: the job must end non-zero on its own (124 = hung until timeout(1))"
    fail=1
fi
expect="dist error (timed out) after 2\.[0-9]* s: rank 0/2 (mpi): allreduce #1 (4000 bytes)"
expect+=" failed after 2\.0 s (deadline 2 s): not every rank joined it"
if ! grep -q "$expect" "$TMP/lost.out"; then
    echo "FAILED: rank 0's message is missing or wrong"
    fail=1
fi
if [ "$(echo "$elapsed < 15" | bc)" -ne 1 ]; then
    echo "FAILED: the job took ${elapsed} s to end"
    fail=1
fi
[ "$fail" -eq 0 ] && echo "passed"
exit "$fail"
