#!/usr/bin/env bash
# test_broker_kcat.sh -- `she broker --port N` serves standard Kafka clients: kcat lists
# she's topics through the fixed bootstrap port, and produces and consumes through it.
set -u
she=${SHE_BIN:?run through ctest}
command -v kcat >/dev/null || { echo "skipped: kcat not installed (scripts/install-deps.sh installs it)"; exit 77; }
tmp=${SHE_TEST_TMP:-/tmp}/kcat.$$
mkdir -p "$tmp"
passed=0 failed=0
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }

# A fixed port that is free: try a few in a high range.
pid=
for try in 1 2 3 4 5; do
    port=$((30000 + RANDOM % 20000))
    "$she" broker --port "$port" --bootstrap-file "$tmp/bootstrap" --log-level warn >"$tmp/broker.out" 2>"$tmp/broker.err" &
    pid=$!
    for _ in $(seq 1 100); do
        [ -s "$tmp/bootstrap" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$tmp/bootstrap" ] && break
    wait "$pid" 2>/dev/null; pid=
done
[ -n "$pid" ] || { echo "FAILED: broker did not start"; cat "$tmp/broker.err"; exit 1; }
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT

if [ "$(cat "$tmp/bootstrap")" = "127.0.0.1:$port" ]; then passed=$((passed + 1)); else fail "bootstrap file: $(cat "$tmp/bootstrap")"; fi
grep -q "bootstrap.servers=127.0.0.1:$port" "$tmp/broker.out" && passed=$((passed + 1)) || fail "stdout lacks the bootstrap line"

kcat -b "127.0.0.1:$port" -L -m 10 >"$tmp/meta" 2>&1
ok=1
for t in she.samples she.rollouts she.rewarded she.passrate she.control she.checkpoints she.evaluations she.deployments she.deadletter; do
    grep -q "topic \"$t\"" "$tmp/meta" || { fail "kcat -L lacks $t"; ok=0; }
done
grep -q 'topic "she.samples" with 8 partitions' "$tmp/meta" || { fail "she.samples partitions"; ok=0; }
[ $ok -eq 1 ] && passed=$((passed + 1))

seq 1 2000 | sed 's/^/line /' | kcat -b "127.0.0.1:$port" -P -t she.control -K: 2>"$tmp/produce.err" ||
    fail "kcat produce: $(cat "$tmp/produce.err")"
n=$(timeout 60 kcat -b "127.0.0.1:$port" -C -t she.control -o beginning -e -q 2>/dev/null | wc -l)
[ "$n" -eq 2000 ] && passed=$((passed + 1)) || fail "kcat consumed $n of 2000 messages"

kill -TERM "$pid"; wait "$pid"; rc=$?
[ $rc -eq 0 ] && passed=$((passed + 1)) || fail "broker exit status $rc after SIGTERM"
[ ! -e "$tmp/bootstrap" ] && passed=$((passed + 1)) || fail "bootstrap file left behind"
trap 'rm -rf "$tmp"' EXIT
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
