#!/usr/bin/env bash
# test_learner_dist_mpi.sh -- the data-parallel learner step under `mpirun -np 2` (the same
# parity as test_learner_dist_parity, over the MPI backend: tests/test_learner_dist.c --mpi).
# Skips (77) when the build has no MPI or no mpirun is found.
# Environment (tests/CMakeLists.txt): SHE_TEST_LEARNER_DIST (the binary), SHE_HAVE_MPI,
# SHE_MPIEXEC (mpiexec found by CMake; else mpirun on PATH).
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
BIN=${SHE_TEST_LEARNER_DIST:?SHE_TEST_LEARNER_DIST must name the test_learner_dist binary}
# Open MPI leaks at MPI_Finalize (its dlopened components) under sanitizers.
export ASAN_OPTIONS="detect_leaks=0${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
# One OpenMP thread per rank; Open MPI wants --allow-run-as-root for root and --oversubscribe
# for more ranks than cores.
ARGS=(-np 2 -x OMP_NUM_THREADS=1)
if "$MPIRUN" --version 2>&1 | grep -Eq "Open MPI|OpenRTE|open-mpi"; then
    ARGS+=(--oversubscribe --allow-run-as-root)
fi
out=$(timeout 100 "$MPIRUN" "${ARGS[@]}" "$BIN" --mpi 2>&1)
rc=$?
echo "$out"
if [ "$rc" -ne 0 ] || [ "$(grep -c '^rank parity ok' <<<"$out")" -ne 2 ]; then
    echo "FAILED: mpirun exited $rc, or not both ranks reported parity ok"
    exit 1
fi
echo "passed"
