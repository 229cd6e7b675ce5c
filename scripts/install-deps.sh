#!/usr/bin/env bash
# install-deps.sh -- installs what she needs to build and test on Debian 12, as root.
# Idempotent and quiet when everything is present. Python packages listed in
# scripts/requirements-test.txt (test oracles used at test time) are installed with pip;
# scripts/requirements-fixtures.txt (PyTorch, HF tokenizers, ...) is only for regenerating
# committed fixtures and is never installed here.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
    build-essential cmake pkg-config git
    librdkafka-dev libavro-dev libjansson-dev libopenblas-dev libmicrohttpd-dev
    openmpi-bin libopenmpi-dev
    kcat python3 python3-pip
    prometheus  # promtool for test_metrics_promtool; issue 7 scrape tests
    python3-yaml  # tests/test_monitoring.py reads monitoring/'s YAML
    clang libomp-14-dev  # test_fuzz_smoke builds the libFuzzer targets with clang (+ its OpenMP)
)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-deps: missing packages and not root; run: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Test-time Python oracles: install only what is missing (pip check by distribution name).
req=scripts/requirements-test.txt
if [ -s "$req" ]; then
    need=()
    while read -r line; do
        line=${line%%#*}; line=$(echo "$line" | xargs)
        [ -n "$line" ] || continue
        name=${line%%[=<>!~]*}
        python3 -m pip show -q "$name" >/dev/null 2>&1 || need+=("$line")
    done <"$req"
    if [ ${#need[@]} -gt 0 ]; then
        echo "install-deps: pip installing ${need[*]}"
        python3 -m pip install -q --disable-pip-version-check "${need[@]}" ||
            python3 -m pip install -q --disable-pip-version-check --break-system-packages "${need[@]}"
    fi
fi
