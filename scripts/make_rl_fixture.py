#!/usr/bin/env python3
"""Writes tests/fixtures/rl_golden.bin: the golden reference for tests/test_rl_golden.c.

An independent PyTorch (float64, autograd) implementation of trainer/rl's math:
  advantages -- GRPO (Eq. 4: the sequence reward z-scored over the group or the batch) and SRPO
                (Eq. 6: each step's reward z-scored over the group or the batch, or not at all,
                then the discounted suffix sum over steps), clipped to |A| <= clip; a set whose
                values are all equal normalises to 0; std is torch.std (Bessel-corrected);
  loss       -- -(1/N) sum_i (1/|o_i|) sum_t [min(rho A, clip(rho, 1-eps, 1+eps) A) - beta k3],
                rho = exp(logp - old), k3 = exp(ref - logp) - (ref - logp) - 1, rows without
                tokens left out of N; dL/dlogp by autograd;
  DPO        -- mean of -logsigmoid(beta ((sum logp_c - ref_c) - (sum logp_r - ref_r))).
Inputs are random float32 values (as the engine holds them); the reference computes in float64
from exactly those values, with hyperparameters rounded through float32 as the C config holds
them, and feeds the loss the float32-rounded advantages (the C interface stores them as float).

Format (little-endian), version 1:
  magic "SHERLGD1"  u32 version
  u32 n_cases; per case:
    i32 algo (0 grpo, 1 srpo), norm (0 none, 1 group, 2 batch)
    f32 gamma, clip, delta, eps, beta;  i32 B, G, T
    f32 rewards[B*5]; u8 step[B*T]; u8 mask[B*T]; f32 logp[B*T], old[B*T], ref[B*T]
    f32 step_adv[B*5]; f32 adv[B*T]
    f64 loss, pg_loss, kl_loss, clip_frac, kl_mean, ratio_mean
    f32 dlogp[B*T]
  u32 n_dpo; per DPO case:
    i32 P, T; f32 beta; f32 logp_c[P*T]; u8 mask_c[P*T]; f32 logp_r[P*T]; u8 mask_r[P*T]
    f32 ref_c[P], ref_r[P]; f64 loss, reward_acc, margin_mean; f32 dlogp_c[P*T], dlogp_r[P*T]

Re-run: pip install torch==2.5.1 numpy==1.26.4 (pinned in scripts/requirements-test.txt);
        python3 scripts/make_rl_fixture.py
"""
import os
import struct

import numpy as np
import torch

VERSION = 1
J = 5
ALGOS = {"grpo": 0, "srpo": 1}
NORMS = {"none": 0, "group": 1, "batch": 2}


def f32(x):
    return float(np.float32(x))


def zscore(x, delta):
    """x (n, K): z-score each column; an all-equal column gives 0."""
    mu = x.mean(0, keepdim=True)
    degenerate = x.max(0).values == x.min(0).values
    if x.shape[0] > 1:
        z = (x - mu) / (x.std(0, unbiased=True, keepdim=True) + delta)
    else:
        z = torch.zeros_like(x)
    return torch.where(degenerate.unsqueeze(0), torch.zeros_like(z), z)


def advantages(rewards, G, step, mask, algo, norm, gamma, clip, delta):
    B = rewards.shape[0]
    vals = rewards.sum(1, keepdim=True) if algo == "grpo" else rewards
    if norm == "group":
        vals = torch.cat([zscore(vals[g:g + G], delta) for g in range(0, B, G)])
    elif norm == "batch":
        vals = zscore(vals, delta)
    if algo == "srpo":
        # A[:, j] = sum_{k >= j} gamma^(k - j) v[:, k]
        disc = torch.zeros(J, J, dtype=torch.float64)
        for j in range(J):
            for k in range(j, J):
                disc[k, j] = gamma ** (k - j)
        step_adv = vals @ disc
    else:
        step_adv = vals.expand(B, J)
    if clip > 0:
        step_adv = step_adv.clamp(-clip, clip)
    idx = (step.long() - 1).clamp(min=0) if algo == "srpo" else torch.zeros_like(step, dtype=torch.long)
    adv = torch.gather(step_adv, 1, idx) * mask
    return step_adv, adv


def policy_loss(logp, old, ref, adv, mask, eps, beta):
    logp = logp.clone().requires_grad_(True)
    ratio = torch.exp(logp - old)
    s1 = ratio * adv
    s2 = ratio.clamp(1 - eps, 1 + eps) * adv
    surr = torch.minimum(s1, s2)
    d = ref - logp
    k3 = torch.exp(d) - d - 1
    n = mask.sum(1)
    rows = n > 0
    pg = -((surr * mask).sum(1)[rows] / n[rows]).mean()
    kl = ((beta * k3 * mask).sum(1)[rows] / n[rows]).mean()
    loss = pg + kl
    loss.backward()
    m = mask > 0
    clipped = (s2 < s1) & m
    # the C side has no reference log-probs when beta = 0 and reports a KL of 0 then
    kl_mean = k3.detach()[m].mean().item() if beta != 0 else 0.0
    stats = dict(pg=pg.item(), kl=kl.item(),
                 clip_frac=clipped.double().sum().item() / m.double().sum().item(),
                 kl_mean=kl_mean, ratio_mean=ratio.detach()[m].mean().item())
    return loss.item(), logp.grad, stats


def make_case(gen, algo, norm, gamma, clip, beta, B=8, G=4, T=16, delta=1e-6, eps=0.2):
    gamma, clip, delta, eps, beta = f32(gamma), f32(clip), f32(delta), f32(eps), f32(beta)
    # step rewards as the reward modes make them: 0.2 x verdict on steps 1-4 (some RM
    # probabilities), 1 x grade on step 5
    verdict = (torch.rand(B, J, generator=gen) < 0.6).double()
    prob = torch.rand(B, 2, generator=gen).double()
    verdict[:, :2] = torch.where(torch.rand(B, 2, generator=gen) < 0.5, prob, verdict[:, :2])
    w = torch.tensor([0.2, 0.2, 0.2, 0.2, 1.0], dtype=torch.float64)
    rewards = (verdict * w).float()
    # the second group: all right (degenerate sequence reward and steps)
    rewards[G:2 * G] = torch.tensor([0.2, 0.2, 0.2, 0.2, 1.0])
    rewards[:G, 0] = 0.2  # a degenerate step inside a mixed group
    mask = torch.zeros(B, T, dtype=torch.uint8)
    step = torch.zeros(B, T, dtype=torch.uint8)
    for i in range(B):
        start = int(torch.randint(0, 3, (1,), generator=gen))  # a prompt-like masked prefix
        end = int(torch.randint(start + 2, T + 1, (1,), generator=gen))  # right padding
        mask[i, start:end] = 1
        cuts = sorted(torch.randint(start, end + 1, (J - 1,), generator=gen).tolist())
        for t in range(start, end):
            step[i, t] = 1 + sum(t >= c for c in cuts)
    mask[B - 1] = 0  # an empty response
    logp = -0.05 - 3.0 * torch.rand(B, T, generator=gen)
    old = logp + 0.6 * (torch.rand(B, T, generator=gen) - 0.5)
    ref = logp + 0.6 * (torch.rand(B, T, generator=gen) - 0.5)
    logp, old, ref = logp.float(), old.float(), ref.float()

    m64 = mask.double()
    step_adv, adv = advantages(rewards.double(), G, step, m64, algo, norm, gamma, clip, delta)
    adv32 = adv.float().double()
    loss, grad, st = policy_loss(logp.double(), old.double(), ref.double(), adv32, m64, eps, beta)

    out = bytearray()
    out += struct.pack("<ii", ALGOS[algo], NORMS[norm])
    out += struct.pack("<5f", gamma, clip, delta, eps, beta)
    out += struct.pack("<iii", B, G, T)
    out += rewards.numpy().astype("<f4").tobytes()
    out += step.numpy().tobytes() + mask.numpy().tobytes()
    for x in (logp, old, ref):
        out += x.numpy().astype("<f4").tobytes()
    out += step_adv.float().numpy().astype("<f4").tobytes()
    out += adv.float().numpy().astype("<f4").tobytes()
    out += struct.pack("<6d", loss, st["pg"], st["kl"], st["clip_frac"], st["kl_mean"],
                       st["ratio_mean"])
    out += grad.float().numpy().astype("<f4").tobytes()
    return bytes(out)


def make_dpo(gen, P=4, T=9, beta=0.1):
    beta = f32(beta)
    lc = (-0.1 - 4.0 * torch.rand(P, T, generator=gen)).float()
    lr = (-0.1 - 4.0 * torch.rand(P, T, generator=gen)).float()
    mc = (torch.rand(P, T, generator=gen) < 0.8).to(torch.uint8)
    mr = (torch.rand(P, T, generator=gen) < 0.8).to(torch.uint8)
    rc = (-10.0 - 5.0 * torch.rand(P, generator=gen)).float()
    rr = (-10.0 - 5.0 * torch.rand(P, generator=gen)).float()
    xc = lc.double().requires_grad_(True)
    xr = lr.double().requires_grad_(True)
    reward_c = beta * ((xc * mc.double()).sum(1) - rc.double())
    reward_r = beta * ((xr * mr.double()).sum(1) - rr.double())
    z = reward_c - reward_r
    loss = -torch.nn.functional.logsigmoid(z).mean()
    loss.backward()
    out = bytearray()
    out += struct.pack("<iif", P, T, beta)
    out += lc.numpy().astype("<f4").tobytes() + mc.numpy().tobytes()
    out += lr.numpy().astype("<f4").tobytes() + mr.numpy().tobytes()
    out += rc.numpy().astype("<f4").tobytes() + rr.numpy().astype("<f4").tobytes()
    out += struct.pack("<3d", loss.item(), (reward_c > reward_r).double().mean().item(),
                       z.mean().item())
    out += xc.grad.float().numpy().astype("<f4").tobytes()
    out += xr.grad.float().numpy().astype("<f4").tobytes()
    return bytes(out)


def main():
    gen = torch.Generator().manual_seed(20240605)
    cases = [
        make_case(gen, "grpo", "group", 1.0, 2.0, 0.04),
        make_case(gen, "srpo", "none", 1.0, 2.0, 0.04),
        make_case(gen, "srpo", "group", 0.5, 2.0, 0.1),
        make_case(gen, "srpo", "batch", 0.9, 1.0, 0.04),   # clipping active
        make_case(gen, "grpo", "batch", 1.0, 2.0, 0.0, B=12, G=3, T=11),
        make_case(gen, "srpo", "group", 1.0, 2.0, 0.04, B=16, G=8, T=24),
    ]
    dpo = [make_dpo(gen), make_dpo(gen, P=3, T=5, beta=0.5)]
    blob = b"SHERLGD1" + struct.pack("<I", VERSION)
    blob += struct.pack("<I", len(cases)) + b"".join(cases)
    blob += struct.pack("<I", len(dpo)) + b"".join(dpo)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                        "rl_golden.bin")
    with open(path, "wb") as f:
        f.write(blob)
    print(f"wrote {path} ({len(blob)} bytes, {len(cases)} cases, {len(dpo)} DPO cases)")


if __name__ == "__main__":
    main()
