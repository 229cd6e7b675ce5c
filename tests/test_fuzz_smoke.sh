#!/usr/bin/env bash
# test_fuzz_smoke.sh -- the libFuzzer targets of tests/fuzz/ (safetensors, Avro messages, the
# CSV/JSONL reader, the serve request parser) built with clang in a build of their own
# (SHE_FUZZ=ON, no CUDA, no MPI) and each run for SHE_FUZZ_SECONDS (default 20) from a copy of
# its committed corpus, under AddressSanitizer.  A crash, a leak, a timeout or a sanitizer
# report fails the test; the input that did it is kept under $T/<target>/ (libFuzzer names it
# crash-*, leak-*, timeout-*).  The replay tests (test_fuzz_*_replay) run the corpora in the
# normal build; this one looks for new inputs.  Skipped (77) without clang or its OpenMP.
set -euo pipefail
SRC=${SHE_SOURCE_DIR:?SHE_SOURCE_DIR not set}
T=${SHE_TEST_TMP:-/tmp}/fuzz_smoke
SECONDS_EACH=${SHE_FUZZ_SECONDS:-20}
command -v clang >/dev/null || { echo "skipped: no clang on PATH"; exit 77; }
mkdir -p "$T"
if ! CC=clang cmake -S "$SRC" -B "$T/build" -DSHE_FUZZ=ON -DSHE_CUDA=OFF -DSHE_MPI=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$T/cmake.log" 2>&1; then
    if grep -q "Could NOT find OpenMP" "$T/cmake.log"; then
        echo "skipped: clang has no OpenMP here (libomp-dev; scripts/install-deps.sh installs it)"
        exit 77
    fi
    cat "$T/cmake.log"
    exit 1
fi
declare -A CORPUS=([fuzz_safetensors]=safetensors [fuzz_avro]=avro [fuzz_reader]=reader
                   [fuzz_serve_request]=serve)
targets=(fuzz_safetensors fuzz_avro fuzz_reader fuzz_serve_request)
cmake --build "$T/build" --target "${targets[@]}" -j2 >"$T/build.log" 2>&1 ||
    { tail -40 "$T/build.log"; exit 1; }
status=0
for t in "${targets[@]}"; do
    work="$T/$t"
    rm -rf "$work"
    mkdir -p "$work/corpus"
    cp "$SRC/tests/fuzz/corpus/${CORPUS[$t]}"/* "$work/corpus/"
    # -timeout: one input over 10 s is a hang; -rss_limit_mb: far above what any parser needs
    if (cd "$work" && "$T/build/tests/$t" -max_total_time="$SECONDS_EACH" -timeout=10 \
            -rss_limit_mb=2048 -print_final_stats=1 corpus >log.txt 2>&1); then
        runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/log.txt" | grep -o '[0-9]*$')
        echo "ok: $t, ${runs:-?} inputs in ${SECONDS_EACH} s"
    else
        echo "FAIL: $t (log and input in $work):"
        grep -E 'ERROR|SUMMARY|Test unit written' "$work/log.txt" | head -20
        status=1
    fi
done
exit $status
