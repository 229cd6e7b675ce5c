#!/usr/bin/env bash
# test_train_sft_cli.sh -- `she gen-data` (300 samples) -> `she train-sft` a few steps on a tiny
# model config -> `she evaluate` (JSON with every metric, both baselines, Markdown), resume from
# OUT/last, --compare, and exit status 2 for bad configuration.
set -euo pipefail
SHE=${SHE_BIN:?SHE_BIN not set}
T=${SHE_TEST_TMP:-/tmp}/train_sft_cli
rm -rf "$T"
mkdir -p "$T"
cd "$T"
fail() { echo "FAIL: $*" >&2; exit 1; }

cat >tiny.json <<'EOF'
{"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 320,
 "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "tie_word_embeddings": true}
EOF
"$SHE" gen-data --n 300 --seed 7 --out data.jsonl --log-level warn

SFT=(train-sft --data data.jsonl --model-config tiny.json --vocab 320 --lexicons '' --batch 8
     --seq 160 --warmup 2 --lr 3e-3 --eval-every 4 --eval-rows 16 --log-every 2
     --set sft.eval.max.new=24 --log-level warn)
"$SHE" "${SFT[@]}" --out out --max-steps 6 --stop-after 3 2>progress.txt
grep -q '"step": 3,' out/last/trainer_state.json 2>/dev/null ||
    grep -q '"step": 3' out/last/trainer_state.json || fail "no step 3 in trainer_state.json"
grep -q 'step 2/6' progress.txt || fail "no progress line: $(cat progress.txt)"
for f in config.json model.safetensors optimizer.safetensors tokenizer.json trainer_state.json \
         manifest.json; do
    [ -f "out/last/$f" ] || fail "out/last/$f missing"
done
for f in trainer_state.json tokenizer.json; do
    grep -q "\"$f\"" out/last/manifest.json || fail "manifest does not cover $f"
done
# resume: continues at step 4 and ends at 6
"$SHE" "${SFT[@]}" --out out --max-steps 6 2>resume.txt
grep -q '"step": 6' out/last/trainer_state.json || fail "resume did not reach step 6"
grep -q 'step 4/6' resume.txt || fail "resume did not continue at step 4: $(cat resume.txt)"
[ -f out/best/model.safetensors ] || fail "no best checkpoint"
python3 - <<'EOF' || fail "train_log.jsonl"
import json
rows = [json.loads(l) for l in open("out/train_log.jsonl")]
steps = [r["step"] for r in rows if "loss" in r]
assert steps == [2, 3, 4, 6], steps
val = [r for r in rows if "val_macro_f1" in r]
assert val and all(k in val[0] for k in ("val_loss", "val_good_f1", "val_accuracy", "val_fail_rate"))
EOF

# evaluate on the validation split: every metric, both baselines
"$SHE" evaluate --model out/best --data data.jsonl --lexicons '' --split val --out ev \
    --set eval.max.new=24 --log-level warn
[ -f ev.md ] || fail "no ev.md"
grep -q "Per-step accuracy" ev.md || fail "no per-step accuracy in ev.md"
python3 - <<'EOF' || fail "ev.json"
import json
d = json.load(open("ev.json"))
names = [s["name"] for s in d["systems"]]
assert len(names) == 3 and names[1].startswith("majority") and names[2].startswith("lexical"), names
m = d["systems"][0]
text = json.dumps(m["metrics"])
for key in ("macro_f1", "good_f1", "accuracy", "format_failure_rate", "confusion", "ranking", "ndcg", "per_class", "steps"):
    assert key in text, key
assert d["meta"]["split"] == "val" and d["meta"]["rows"] > 0
assert d["compare"] is not None
EOF
# --compare A B with --limit
"$SHE" evaluate --compare out/best out/last --data data.jsonl --lexicons '' --limit 20 \
    --out cmp --set eval.max.new=16 --log-level warn
grep -q "A: out/best vs B: out/last" cmp.md || fail "no compare section"

# configuration errors exit 2
set +e
"$SHE" train-sft --data data.jsonl --out bad --lr -1 2>/dev/null; rc1=$?
"$SHE" train-sft --out bad 2>/dev/null; rc2=$?
"$SHE" train-sft --data data.jsonl --out bad2 --lexicons '' --vocab 300 --model nosuchpreset \
    2>/dev/null; rc3=$?
"$SHE" evaluate --data data.jsonl 2>/dev/null; rc4=$?
"$SHE" evaluate --model nosuchdir --data data.jsonl 2>/dev/null; rc5=$?
"$SHE" "${SFT[@]}" --out bad3 --step-weights 1,2 2>/dev/null; rc6=$?
set -e
[ "$rc1$rc2$rc3$rc4$rc5$rc6" = "222222" ] ||
    fail "exit statuses $rc1 $rc2 $rc3 $rc4 $rc5 $rc6, want 2s"
echo "ok"
