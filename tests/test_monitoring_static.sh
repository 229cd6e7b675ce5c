#!/usr/bin/env bash
# test_monitoring_static.sh -- monitoring/ without a running pipeline (tests/test_monitoring.py
# static): the Grafana dashboards are valid JSON with unique panel ids, every panel has
# queries on the provisioned datasource, panels sit inside the grid without overlapping; every
# recording rule used is defined; every alert has for:, a severity and its annotations; and
# prometheus.yml scrapes each component at the address it listens on by default
# (`she <command> --help`).
set -euo pipefail
SHE=${SHE_BIN:?SHE_BIN not set}
SRC=${SHE_SOURCE_DIR:?SHE_SOURCE_DIR not set}
python3 -c 'import yaml' 2>/dev/null || { echo "FAIL: python3-yaml is not installed (scripts/install-deps.sh)" >&2; exit 1; }
python3 "$SRC/tests/test_monitoring.py" static "$SHE"
