#!/usr/bin/env python3
"""Writes the safetensors interop fixtures with the reference `safetensors` library.

tests/fixtures/safetensors_ref.safetensors
    BF16, F16 and F32 tensors plus metadata {"format": "pt"}.  Each BF16/F16 tensor
    "<name>" has an F32 twin "expect.<name>" holding the values ml_dtypes/numpy convert it
    to, so the C reader's conversion is checked against an independent implementation.
    "sweep.bf16" and "sweep.f16" (1075,) hold every 61st bit pattern (0, 61, 122, ...), so
    zeros, subnormals, normals, infinities and NaNs of both signs are covered.
    "model.norm.weight" (F32, 5) holds i * 0.25 - 1 for i in 0..4 (checked by formula).
tests/fixtures/safetensors_ref_f32.safetensors
    F32 "a" (2, 3) = 0..5 and "b" (4,) = -1.5 * i, metadata {"format": "pt"}: she's writer
    must produce these exact bytes.
tests/fuzz/corpus/safetensors/*
    small seed files for the fuzzer, valid and invalid.

Run from anywhere: python3 scripts/make_safetensors_fixture.py  (pins in
scripts/requirements-fixtures.txt).  CI does not run this; the outputs are committed.
"""
import pathlib
import struct

import ml_dtypes
import numpy as np
from safetensors.numpy import save, save_file

ROOT = pathlib.Path(__file__).resolve().parent.parent


def mixed():
    rng = np.random.default_rng(20240607)
    bf16 = rng.standard_normal((4, 3)).astype(np.float32) * 3
    bf16[0, :] = [np.inf, -np.inf, np.nan]
    bf16[1, 0] = 1e-39  # an F32 subnormal, rounded to a BF16 subnormal
    bf16 = bf16.astype(ml_dtypes.bfloat16)
    f16 = rng.standard_normal((2, 2, 3)).astype(np.float16)
    f16.flat[:6] = [65504, -0.0, 6e-8, -3e-5, np.inf, np.nan]  # max, -0, subnormals, inf, nan
    sweep = np.arange(0, 1 << 16, 61, dtype=np.uint16)
    sweep_bf16, sweep_f16 = sweep.view(ml_dtypes.bfloat16), sweep.view(np.float16)
    return {
        "sweep.bf16": sweep_bf16,
        "expect.sweep.bf16": sweep_bf16.astype(np.float32),
        "sweep.f16": sweep_f16,
        "expect.sweep.f16": sweep_f16.astype(np.float32),
        "model.embed_tokens.weight": bf16,
        "expect.model.embed_tokens.weight": bf16.astype(np.float32),
        "model.layers.0.mlp.up_proj.weight": f16,
        "expect.model.layers.0.mlp.up_proj.weight": f16.astype(np.float32),
        "model.norm.weight": np.arange(5, dtype=np.float32) * 0.25 - 1,
    }


def f32_only():
    return {
        "a": np.arange(6, dtype=np.float32).reshape(2, 3),
        "b": np.arange(4, dtype=np.float32) * -1.5,
    }


def raw(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


def main():
    fixtures = ROOT / "tests" / "fixtures"
    corpus = ROOT / "tests" / "fuzz" / "corpus" / "safetensors"
    fixtures.mkdir(parents=True, exist_ok=True)
    corpus.mkdir(parents=True, exist_ok=True)
    meta = {"format": "pt"}
    save_file(mixed(), str(fixtures / "safetensors_ref.safetensors"), metadata=meta)
    save_file(f32_only(), str(fixtures / "safetensors_ref_f32.safetensors"), metadata=meta)

    seeds = {
        "ref_mixed": save(mixed(), metadata=meta),
        "ref_f32": save(f32_only(), metadata=meta),
        "empty": save({}),
        "zero_and_scalar": save({"z": np.zeros((0, 3), np.float32),
                                 "s": np.array(2.5, np.float64),
                                 "i": np.arange(3, dtype=np.int64)}),
        "bad_json": raw(b'{"a": {"dtype": "F32", "shape": [1], ', b"\0" * 4),
        "overlap": raw(b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},'
                       b'"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}', b"\0" * 8),
        "huge_header": struct.pack("<Q", 1 << 62) + b"{}",
    }
    for name, blob in seeds.items():
        (corpus / f"{name}.safetensors").write_bytes(blob)


if __name__ == "__main__":
    main()
