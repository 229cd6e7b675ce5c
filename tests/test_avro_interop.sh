#!/usr/bin/env bash
# test_avro_interop.sh -- she's Avro messages against fastavro, an independent implementation:
# canonical forms and fingerprints of every schema agree, every message type she writes decodes
# in fastavro with the same field values, and every message fastavro writes (and a sample it
# writes with the older schema) decodes in she.  Usage: test_avro_interop.sh PATH/test_messages
# Skips (77) without python3 or the fastavro module (scripts/requirements-test.txt).
set -euo pipefail
test_messages=${1:?usage: test_avro_interop.sh PATH/test_messages}
src=${SHE_SOURCE_DIR:?}
if ! command -v python3 >/dev/null; then
    echo "skipped: python3 not found"
    exit 77
fi
if ! python3 -c "import fastavro" 2>/dev/null; then
    echo "skipped: python module fastavro not installed (pip install -r scripts/requirements-test.txt)"
    exit 77
fi
work=${SHE_TEST_TMP:-/tmp}/avro_interop.$$
rm -rf "$work"
mkdir -p "$work"
trap 'rm -rf "$work"' EXIT
"$test_messages" --interop-write "$work"
python3 "$src/scripts/avro_interop.py" "$src/schemas" "$work"
"$test_messages" --interop-read "$work"
