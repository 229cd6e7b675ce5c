#!/usr/bin/env bash
# test_device_cli.sh -- `--device` on every command that takes it (train-sft, train-rl,
# train-dpo, train-rm, evaluate, rollout, reward, serve, pipeline, bench): a malformed device
# string, a math mode on the CPU and a device this machine lacks (cuda:1023 everywhere, with a
# math mode too; plain `cuda` too where there is no CUDA device) end the command with exit
# status 2 and a message quoting the device string, before any work (no output directory, no
# broker needed); `she bench` without a device says in one line that its GPU section was
# skipped.
set -euo pipefail
SHE=${SHE_BIN:?SHE_BIN not set}
T=${SHE_TEST_TMP:-/tmp}/device_cli
rm -rf "$T"
mkdir -p "$T"
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

# A tiny checkpoint for `she evaluate`, which loads its model before it judges.
cat >tiny.json <<'EOF'
{"model_type": "llama", "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 300,
 "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
EOF
"$SHE" gen-data --n 60 --seed 3 --out data.jsonl --log-level warn
"$SHE" train-sft --data data.jsonl --model-config tiny.json --vocab 300 --lexicons '' --batch 4 \
    --seq 160 --max-steps 1 --eval-every 0 --eval-rows 2 --set sft.eval.max.new=4 \
    --out ckpt --log-level warn 2>/dev/null || fail "could not make the test checkpoint"

# command name -> its arguments up to the device check
declare -A ARGS=(
    [train-sft]="--data data.jsonl --out out-sft"
    [train-rl]="--init ckpt/last --data data.jsonl --out out-rl"
    [train-dpo]="--init ckpt/last --data data.jsonl --out out-dpo"
    [train-rm]="--init ckpt/last --data data.jsonl --out out-rm"
    [evaluate]="--model ckpt/last --data data.jsonl --lexicons ''"
    [rollout]="--policy ckpt/last --set bootstrap.servers=127.0.0.1:1"
    [reward]="--policy ckpt/last --rm ckpt/last --set bootstrap.servers=127.0.0.1:1"
    [serve]="--model ckpt/last --listen 127.0.0.1:0"
    [pipeline]="--out out-pipeline"
    [bench]="--model c1 --set bench.cpu=false"
)

expect_usage_error() { # command, device string
    local cmd=$1 dev=$2 rc=0
    eval "\"$SHE\" $cmd ${ARGS[$cmd]} --device '$dev'" >out.txt 2>err.txt || rc=$?
    [ "$rc" -eq 2 ] || fail "she $cmd --device $dev: exit $rc, not 2: $(cat err.txt)"
    grep -qF "\"$dev\"" err.txt || fail "she $cmd --device $dev: message does not name it: $(cat err.txt)"
    for d in out-sft out-rl out-dpo out-rm out-pipeline; do
        [ ! -e "$d" ] || fail "she $cmd --device $dev worked before failing ($d exists)"
    done
}

if "$SHE" version | grep -q "device(s)"; then HAVE_GPU=1; else HAVE_GPU=0; fi
for cmd in train-sft train-rl train-dpo train-rm evaluate rollout reward serve pipeline bench; do
    expect_usage_error "$cmd" "cuda:x"
    expect_usage_error "$cmd" "cuda:1023"
    expect_usage_error "$cmd" "cuda:1023/bf16"
    expect_usage_error "$cmd" "cpu/tf32"
    [ "$HAVE_GPU" -eq 1 ] || expect_usage_error "$cmd" "cuda"
    echo "ok: she $cmd --device"
done

if [ "$HAVE_GPU" -eq 0 ]; then
    "$SHE" bench --model c1 --set bench.cpu=false >bench.txt 2>bench.err || fail "bench: $(cat bench.err)"
    [ "$(grep -c '^gpu=skipped: no CUDA device' bench.txt)" -eq 1 ] ||
        fail "bench without a device: no skip line: $(cat bench.txt)"
    grep -q '^gpu_' bench.txt && fail "bench without a device printed GPU figures"
    echo "ok: she bench skips its GPU section"
fi
echo "all device checks passed"
