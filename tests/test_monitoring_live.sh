#!/usr/bin/env bash
# test_monitoring_live.sh -- a real Prometheus (Debian package prometheus) scrapes a running
# pipeline and monitoring/ holds up against it:
#   * `she pipeline` on a tiny policy and reward model (hybrid rewards), its producer following
#     its input, its children found through OUT/metrics_targets.json by monitoring/prometheus.yml's
#     she-pipeline job; `she serve` (a static canary, every canary request shadowed),
#     `she evaluate --follow` and `she canary` through the she-local job (each only where
#     `she <command> --help` works in this build);
#   * a malformed message on she.samples, a bad row appended to the followed input, judge
#     requests and malformed requests to serve;
#   * through the HTTP API: the expected series (learner steps, messages per topic and
#     direction, lag per consumer, dead letters, bad rows, rejections, ...), every rule
#     evaluating without error, every dashboard query running, and every metric an alert, a
#     recording rule or a panel references present in the union of the components' live
#     /metrics ("no dead panels": a missing one fails the test with its name and component).
# Skipped (77) only without prometheus / promtool.
set -euo pipefail
SHE=${SHE_BIN:?SHE_BIN not set}
SRC=${SHE_SOURCE_DIR:?SHE_SOURCE_DIR not set}
T=${SHE_TEST_TMP:-/tmp}/monitoring_live
for tool in prometheus promtool; do
    command -v $tool >/dev/null || { echo "skipped: $tool not installed (Debian package prometheus)"; exit 77; }
done
rm -rf "$T"
mkdir -p "$T"
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }
PY=(python3 "$SRC/tests/test_monitoring.py")
export OMP_NUM_THREADS=1

pids=()
cleanup() {
    # newest first: Prometheus and the services, then the pipeline (which stops its children)
    for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
        kill -TERM "${pids[i]}" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "${pids[i]}" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "${pids[i]}" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_file() { # FILE SECONDS [PATTERN]
    for _ in $(seq $(($2 * 5))); do
        [ -s "$1" ] && { [ -z "${3:-}" ] || grep -q "$3" "$1"; } && return 0
        sleep 0.2
    done
    return 1
}

# ---- a tiny policy (it learns the chain format in a few hundred steps) and reward model ----
cat >tiny.json <<'EOF'
{"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 320,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
EOF
"$SHE" gen-data --n 300 --seed 7 --out data.jsonl --log-level warn
"$SHE" train-sft --data data.jsonl --model-config tiny.json --vocab 320 --lexicons '' --batch 16 \
    --seq 200 --warmup 5 --lr 5e-3 --eval-every 0 --eval-rows 8 --out sft --max-steps 300 \
    --log-level warn 2>/dev/null || fail "train-sft"
"$SHE" train-rm --data data.jsonl --lexicons '' --init sft/last --out rm --samples 12 \
    --eval-samples 6 --policy-samples 1 --steps 4 --batch 8 --grpo-steps 0 --log-level warn \
    2>/dev/null || fail "train-rm"

# ---- the pipeline: runs until this test stops it ----
"$SHE" pipeline --out pipe --data data.jsonl --policy sft/last --rm rm/last --reward hybrid \
    --steps 1000000 --batch 2 --group 2 --max-new 120 --checkpoint-every 2 --threads 1 \
    --timeout 900 --set "pipeline.args.produce=--follow" \
    --set "pipeline.args.rollout=--batch 2 --set selection.p.unseen=0.6" \
    --set "pipeline.args.learn=--set learn.batch.timeout.ms=2000" >pipeline.log 2>&1 &
pids+=($!)
wait_file pipe/metrics_targets.json 120 learn || { cat pipeline.log; fail "no pipe/metrics_targets.json"; }
B=$(cat pipe/bootstrap)
targets=$(python3 -c 'import json, sys; print(" ".join("http://%s/metrics" % t for e in json.load(open(sys.argv[1])) for t in e["targets"]))' pipe/metrics_targets.json)
[ "$(wc -w <<<"$targets")" -eq 5 ] || fail "pipe/metrics_targets.json lists $(cat pipe/metrics_targets.json)"

# ---- serve, evaluate --follow, canary: where this build has them ----
addrs=()
urls=($targets)
if "$SHE" serve --help >/dev/null 2>&1; then
    SP=$(free_port)
    "$SHE" serve --model sft/last --canary sft/last --canary-share 0.5 --listen 127.0.0.1:$SP \
        --set serve.shadow.share=1 --set serve.max.new=120 --log-level warn >serve.log 2>&1 &
    pids+=($!)
    addrs+=(serve=127.0.0.1:$SP)
    urls+=(http://127.0.0.1:$SP/metrics)
else
    echo "note: \`she serve --help\` fails in this build: serve's metrics will be missing"
fi
if [[ "$("$SHE" evaluate --help 2>/dev/null)" == *--follow* ]]; then
    EP=$(free_port)
    "$SHE" evaluate --follow --bootstrap "$B" --data data.jsonl --split val --limit 16 \
        --lexicons '' --set eval.max.new=120 --metrics 127.0.0.1:$EP --log-level warn \
        >evaluate.log 2>&1 &
    pids+=($!)
    addrs+=(evaluate=127.0.0.1:$EP)
    urls+=(http://127.0.0.1:$EP/metrics)
else
    echo "note: \`she evaluate --follow\` is not in this build: its metrics will be missing"
fi
if "$SHE" canary --help >/dev/null 2>&1; then
    CP=$(free_port)
    "$SHE" canary --bootstrap "$B" --serve-url "http://127.0.0.1:${SP:-1}" --soak 30 \
        --metrics 127.0.0.1:$CP --log-level warn >canary.log 2>&1 &
    pids+=($!)
    addrs+=(canary=127.0.0.1:$CP)
    urls+=(http://127.0.0.1:$CP/metrics)
else
    echo "note: \`she canary --help\` fails in this build: its metrics will be missing"
fi

# ---- Prometheus on monitoring/prometheus.yml (this test's addresses, 1 s intervals) ----
PP=$(free_port)
"${PY[@]}" config prometheus.yml "$T/pipe/metrics_targets.json" "${addrs[@]}" || fail "config"
promtool check config prometheus.yml >/dev/null || fail "generated prometheus.yml"
prometheus --config.file=prometheus.yml --storage.tsdb.path=tsdb \
    --web.listen-address=127.0.0.1:$PP --log.level=warn >prometheus.log 2>&1 &
pids+=($!)

# ---- what the panels are about: a malformed sample, a bad input row, judge traffic ----
kcat -b "$B" -t she.samples -P -k malformed-sample <<<"not an avro body" || fail "kcat"
echo '{"query": "a row without a title"}' >>pipe/train.jsonl
if [ -n "${SP:-}" ]; then
    "${PY[@]}" traffic http://127.0.0.1:$SP 600 2>traffic.log &
    pids+=($!)
fi

if ! "${PY[@]}" live http://127.0.0.1:$PP "${urls[@]}"; then
    for f in pipeline serve evaluate canary prometheus traffic pipe/logs/rollout pipe/logs/learn; do
        [ -s $f.log ] && { echo "--- $f.log (tail)"; tail -5 $f.log; }
    done
    fail "live checks (above)"
fi
echo "ok"
