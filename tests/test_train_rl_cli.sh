#!/usr/bin/env bash
# test_train_rl_cli.sh -- the offline SRPO pipeline end to end on a tiny model:
#   she gen-data -> she train-sft -> she train-rm (SFT + GRPO refinement) -> she train-dpo
#   -> she train-rl (hybrid rewards, SRPO, a two-stage curriculum, reward-model selection)
#   -> she evaluate,
# and exact resume: 4 RL steps in one run == 2 steps, a restart, 2 more (parameters, AdamW
# state and every logged metric but the timings).
set -euo pipefail
SHE=${SHE_BIN:?SHE_BIN not set}
T=${SHE_TEST_TMP:-/tmp}/train_rl_cli
rm -rf "$T"
mkdir -p "$T"
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

"$SHE" gen-data --n 160 --seed 5 --out data.jsonl --log-level warn
cat > tiny.json <<'EOF'
{"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 400,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
EOF
common=(--data data.jsonl --lexicons "" --log-level warn)

"$SHE" train-sft "${common[@]}" --out sft --model-config tiny.json --vocab 400 --batch 8 \
    --max-steps 20 --warmup 2 --lr 3e-3 --eval-every 0 --eval-rows 8 \
    --set sft.eval.max.new=48 2>/dev/null
[ -f sft/best/model.safetensors ] || fail "no SFT checkpoint"

"$SHE" train-rm "${common[@]}" --init sft/best --out rm --samples 12 --eval-samples 6 \
    --policy-samples 1 --steps 4 --batch 8 --grpo-steps 1 --set rm.grpo.prompts=2 \
    --set rm.grpo.group=2 --set rm.grpo.pool=16 2>/dev/null
[ -f rm/last/model.safetensors ] || fail "no reward-model checkpoint"
python3 - <<'EOF' || fail "rm_eval.json"
import json
e = json.load(open("rm/rm_eval.json"))
for stage in ("sft", "grpo"):
    acc = e[stage]["accuracy"]
    assert set(acc) == {"step1", "step2", "step3", "step4"}, acc
    assert all(v is None or 0 <= v <= 1 for v in acc.values()), acc
EOF

"$SHE" train-dpo "${common[@]}" --init sft/best --out dpo --samples 16 --group 2 --steps 2 \
    --batch 4 --set dpo.micro.batch=4 2>/dev/null
[ -f dpo/last/model.safetensors ] || fail "no DPO checkpoint"
[ "$(wc -l < dpo/train_log.jsonl)" -eq 2 ] || fail "DPO log lines"

rl=(train-rl "${common[@]}" --init dpo/last --rm rm/last --algo srpo --reward hybrid
    --norm batch --pool 16 --prompts 2 --group 3 --steps 4 --max-new 48 --reject=false
    --curriculum "easy:0-1:2,hard:0-0.99" --rm-select --set rl.rm.hi=1 --set rl.offline.group=2 --set rl.micro.batch=4
    --save-every 1)
"$SHE" "${rl[@]}" --out A 2>/dev/null
"$SHE" "${rl[@]}" --out B --stop-after 2 2>/dev/null
grep -q '"step": 2' B/last/trainer_state.json || fail "stop-after did not save step 2"
"$SHE" "${rl[@]}" --out B 2>/dev/null
for f in model.safetensors optimizer.safetensors; do
    cmp -s "A/last/$f" "B/last/$f" || fail "$f differs after resume"
done
python3 - <<'EOF' || fail "train logs differ after resume"
import json
def load(p):
    rows = [json.loads(l) for l in open(p)]
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]
a, b = load("A/train_log.jsonl"), load("B/train_log.jsonl")
assert len(a) == 4 and a == b, (len(a), len(b))
need = ["reward_s1", "reward_s5", "reward_total", "pass_rate", "admitted_frac", "band_lo",
        "band_hi", "loss", "kl", "entropy", "clip_frac", "grad_norm", "lr", "logp_gap_mean"]
for r in a:
    missing = [k for k in need if k not in r]
    assert not missing, missing
    assert r["logp_gap_max"] < 1e-3, r["logp_gap_max"]
assert [r["stage_name"] for r in a] == ["easy", "easy", "hard", "hard"], [r["stage_name"] for r in a]
EOF

"$SHE" evaluate --model A/last --data data.jsonl --split val --limit 8 --lexicons "" \
    --out eval --log-level warn >/dev/null 2>&1
[ -s eval.json ] || fail "no evaluation of the RL checkpoint"
echo "ok"
