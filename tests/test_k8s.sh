#!/usr/bin/env bash
# test_k8s.sh -- ctest entry of tests/test_k8s.py (k8s/ rendered, validated offline and checked
# against the code); exits 77 (skipped) from there when a Python package or kubectl is missing.
set -euo pipefail
exec python3 "${SHE_SOURCE_DIR:?}/tests/test_k8s.py"
