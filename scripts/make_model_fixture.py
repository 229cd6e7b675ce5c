#!/usr/bin/env python3
"""Writes tests/fixtures/model_golden.bin: the golden reference for tests/test_model_golden.c.

The reference is Hugging Face transformers' own LlamaForCausalLM and Qwen2ForCausalLM (eager
attention, float32), so the fixture checks the engine's math AND its reading of the HF layout
(tensor names, [out, in] weights, rotate_half RoPE, GQA head grouping, q/k/v biases, tying).

Cases: "llama" (GQA 4:2, untied LM head, no bias) and "qwen2" (GQA 4:1, q/k/v bias, tied
head).  Each runs one padded batch (a full row, a right-padded row, a left-padded row, with
position_ids = cumsum(mask) - 1 as HF derives them from the attention mask) at temperature
0.8, with the loss L = sum_r a_r logp_r + c_r entropy_r over real positions with a target.
Recorded: the config.json text, the batch, a and c, every initial parameter, the raw logits,
logp, entropy, L, every parameter gradient, and L before and after each of 3 AdamW steps
(betas 0.9/0.95, weight decay 0.1 on matrices only, gradient clipping at norm 0.5).

Format (little-endian), version 1:
  magic "SHEMODL1"  u32 version  u32 n_cases
  per case:
    u32 len + config.json bytes
    i32 B, T; f32 temperature, lr, beta1, beta2, eps, weight_decay, max_grad_norm; i32 n_steps
    i32 tokens[B*T], mask[B*T], targets[B*T] (-1 = none); f32 a[B*T], c[B*T]
    u32 n_tensors; per tensor: u32 len + name, u32 ndim, u32 shape[ndim], f32 data
    f32 logits[B*T*V], logp[B*T], entropy[B*T]; f64 loss
    per tensor (same order): f32 grad
    f64 losses[n_steps + 1]   (L before step 1, ..., after step n_steps)

Re-run: pip install -r scripts/requirements-fixtures.txt; python3 scripts/make_model_fixture.py
"""
import json
import os
import struct
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

VERSION = 1
B, T = 3, 8
TEMPERATURE = 0.8
LR, BETA1, BETA2, EPS, WD, CLIP = 1e-2, 0.9, 0.95, 1e-8, 0.1, 0.5
N_STEPS = 3


def make_case(kind, seed):
    torch.manual_seed(seed)
    common = dict(vocab_size=48, hidden_size=32, intermediate_size=40, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=64, rms_norm_eps=1e-6,
                  initializer_range=0.1, hidden_act="silu", attn_implementation="eager",
                  torch_dtype="float32")
    if kind == "llama":
        cfg = LlamaConfig(num_key_value_heads=2, tie_word_embeddings=False, rope_theta=10000.0,
                          attention_bias=False, **common)
        model = LlamaForCausalLM(cfg)
    else:
        cfg = Qwen2Config(num_key_value_heads=1, tie_word_embeddings=True, rope_theta=1000.0,
                          use_sliding_window=False, **common)
        model = Qwen2ForCausalLM(cfg)
    model = model.float()
    with torch.no_grad():  # generic norm weights and biases (HF starts them at 1 and 0)
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.copy_((1.0 if "norm" in name else 0.0) + 0.1 * torch.randn_like(p))
    model.train()  # no dropout in these configs; train() only matters for autograd

    V = cfg.vocab_size
    tokens = torch.randint(0, V, (B, T))
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, T - 3:] = 0  # right padding
    mask[2, :2] = 0      # left padding
    targets = torch.randint(0, V, (B, T))
    targets[mask == 0] = -1
    targets[0, 3] = -1
    active = (targets >= 0)
    a = torch.randn(B, T) * active
    c = 0.3 * torch.randn(B, T) * active
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)

    def run():
        out = model(input_ids=tokens, attention_mask=mask, position_ids=position_ids)
        logits = out.logits
        z = logits / TEMPERATURE
        lsm = torch.log_softmax(z, dim=-1)
        logp = lsm.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1) * active
        ent = -(lsm.exp() * lsm).sum(-1) * active
        loss = (a * logp + c * ent).sum()
        return logits, logp, ent, loss

    names = [n for n, _ in model.named_parameters()]
    params = dict(model.named_parameters())
    logits, logp, ent, loss = run()
    model.zero_grad()
    loss.backward()
    grads = {n: params[n].grad.detach().clone() for n in names}
    init = {n: params[n].detach().clone() for n in names}

    decay = [p for n, p in model.named_parameters() if p.ndim == 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WD},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=LR, betas=(BETA1, BETA2), eps=EPS)
    losses = []
    for _ in range(N_STEPS):
        opt.zero_grad()
        _, _, _, l = run()
        losses.append(l.item())
        l.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        opt.step()
    with torch.no_grad():
        losses.append(run()[3].item())

    # HF names as a checkpoint holds them: a tied head has no lm_head.weight entry.
    file_names = [n for n in names if not (cfg.tie_word_embeddings and n == "lm_head.weight")]
    cfg_json = cfg.to_json_string()
    json.loads(cfg_json)
    return dict(cfg_json=cfg_json, tokens=tokens, mask=mask, targets=targets, a=a, c=c,
                names=file_names, init=init, grads=grads, logits=logits.detach(),
                logp=logp.detach(), ent=ent.detach(), loss=loss.item(), losses=losses)


def f32(t):
    return t.detach().contiguous().to(torch.float32).numpy().tobytes()


def i32(t):
    return t.contiguous().to(torch.int32).numpy().tobytes()


def write(path, cases):
    out = bytearray(b"SHEMODL1")
    out += struct.pack("<II", VERSION, len(cases))
    for cs in cases:
        cj = cs["cfg_json"].encode()
        out += struct.pack("<I", len(cj)) + cj
        out += struct.pack("<ii", B, T)
        out += struct.pack("<7f", TEMPERATURE, LR, BETA1, BETA2, EPS, WD, CLIP)
        out += struct.pack("<i", N_STEPS)
        out += i32(cs["tokens"]) + i32(cs["mask"]) + i32(cs["targets"])
        out += f32(cs["a"]) + f32(cs["c"])
        out += struct.pack("<I", len(cs["names"]))
        for n in cs["names"]:
            p = cs["init"][n]
            out += struct.pack("<I", len(n)) + n.encode()
            out += struct.pack("<I", p.ndim) + struct.pack("<%dI" % p.ndim, *p.shape)
            out += f32(p)
        out += f32(cs["logits"]) + f32(cs["logp"]) + f32(cs["ent"])
        out += struct.pack("<d", cs["loss"])
        for n in cs["names"]:
            out += f32(cs["grads"][n])
        out += struct.pack("<%dd" % len(cs["losses"]), *cs["losses"])
    with open(path, "wb") as f:
        f.write(out)
    return len(out)


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "tests", "fixtures",
                                                              "model_golden.bin")
    cases = [make_case("llama", 1), make_case("qwen2", 2)]
    size = write(path, cases)
    for name, cs in zip(("llama", "qwen2"), cases):
        print("%s: loss %.6f, AdamW losses %s" % (name, cs["loss"],
                                                 ", ".join("%.6f" % x for x in cs["losses"])))
    print("wrote %s (%d bytes)" % (path, size))


if __name__ == "__main__":
    main()
