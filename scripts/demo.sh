#!/usr/bin/env bash
# demo.sh -- the main job on the embedded defaults, as far as it exists today: the embedded
# broker with she's topics, checked end to end with a standard Kafka client (kcat).
# Grows into `she pipeline` (streaming retraining) as the pipeline lands.
set -euo pipefail
she=${1:-build/she}
port=${SHE_DEMO_PORT:-39092}
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT

echo "== she: $("$she" version | head -1)"
echo "== starting the embedded broker on 127.0.0.1:$port (in memory only)"
"$she" broker --port "$port" --bootstrap-file "$tmp/bootstrap" &
pid=$!
for _ in $(seq 1 100); do [ -s "$tmp/bootstrap" ] && break; sleep 0.1; done
[ -s "$tmp/bootstrap" ] || { echo "broker did not start (is port $port in use? set SHE_DEMO_PORT)"; exit 1; }
bootstrap=$(cat "$tmp/bootstrap")

echo "== topics (kcat -L):"
kcat -b "$bootstrap" -L | grep -E '^ +topic "she\.' | sed 's/^ */   /'

echo "== round trip: 1000 samples through she.samples"
seq 1 1000 | sed 's/^/sample-/' | kcat -b "$bootstrap" -P -t she.samples
n=$(timeout 30 kcat -b "$bootstrap" -C -t she.samples -o beginning -e -q | wc -l)
echo "   consumed $n of 1000"
[ "$n" -eq 1000 ]

echo "== stopping the broker (SIGTERM)"
kill -TERM "$pid"; wait "$pid"
echo "== demo finished"
