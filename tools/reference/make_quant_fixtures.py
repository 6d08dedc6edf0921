#!/usr/bin/env python3
"""make_quant_fixtures.py - reference data for the GGUF block kernels (tests/test_quants.c).

Writes tests/fixtures/quants/quants.safetensors with, for every block type T:

  T.x      float32 [nb, B]  seeded inputs covering extreme cases (see CATEGORIES)
  T.q      uint8   [nb, S]  T.x quantized by the reference (ggml_quantize_chunk without imatrix; for
                            Q8_0/Q4_0/Q4_1/Q5_0/Q5_1 PyPI gguf's gguf.quants.quantize, checked equal)
  T.y      float32 [nb, B]  T.q dequantized by gguf.quants.dequantize (checked equal to ggml's to_float)
  T.raw    uint8   [nr, S]  random block bytes with finite fp16 scales (every bit pattern of the codes)
  T.raw_y  float32 [nr, B]  T.raw dequantized the same way
  T.zero   uint8   [nb]     1 where the input block is all-zero-like (max |x| < 1e-15)

and for the activation formats A in q8_0, q8_1, q8_K (ggml's from_float_ref):

  act.x    float32 [na, 256]     act.A  uint8 [na, 256 / blk * size]

The K-quant and IQ4_NL quantizers have no Python implementation in PyPI gguf, so their references come
from ggml itself: build libggml-base from the ggml sources that PyPI's ggml-python sdist vendors (see
tools/reference/README.md) and pass its path with --ggml-lib (or GGML_LIB). The dequantization side
needs only PyPI gguf, and is checked against ggml's to_float as well.
"""
import argparse
import ctypes
import os
import sys

import numpy as np
from safetensors.numpy import save_file

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "quants", "quants.safetensors")

TYPES = ["Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
PYPI_QUANT = {"Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"}   # gguf.quants has a quantizer for these
# byte offsets of the fp16 fields of each block (kept finite when crafting random blocks)
F16_FIELDS = {"Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0], "IQ4_NL": [0],
              "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208]}
GGML_ID = {"Q8_1": 9, "Q8_K": 15}


class TypeTraits(ctypes.Structure):
    _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                ("from_float_ref", ctypes.c_void_p)]


class Ggml:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.ggml_get_type_traits.restype = ctypes.POINTER(TypeTraits)
        self.lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        self.to_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
        self.from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

    def quantize_chunk(self, tid, x, size, blk):
        x = np.ascontiguousarray(x, dtype=np.float32)
        nb = x.size // blk
        out = np.zeros(nb * size, dtype=np.uint8)
        # one row per block, so no state crosses blocks
        n = self.lib.ggml_quantize_chunk(tid, x.ctypes.data, out.ctypes.data, 0, nb, blk, None)
        assert n == out.size
        return out.reshape(nb, size)

    def from_float_ref(self, tid, x, size, blk, symbol=None):
        x = np.ascontiguousarray(x, dtype=np.float32)
        out = np.zeros(x.size // blk * size, dtype=np.uint8)
        if symbol:   # exported quantize_row_*_ref (Q8_1 / Q8_K have no from_float_ref in the traits)
            fn = getattr(self.lib, symbol)
            fn.restype = None
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        else:
            fn = self.from_float_t(self.lib.ggml_get_type_traits(tid).contents.from_float_ref)
        fn(x.ctypes.data, out.ctypes.data, x.size)
        return out

    def to_float(self, tid, q, blk):
        q = np.ascontiguousarray(q, dtype=np.uint8)
        nb = q.shape[0]
        out = np.zeros(nb * blk, dtype=np.float32)
        fn = self.to_float_t(self.lib.ggml_get_type_traits(tid).contents.to_float)
        fn(q.ctypes.data, out.ctypes.data, out.size)
        return out.reshape(nb, blk)


def categories(rng, blk):
    """Input blocks of blk floats: each category a few blocks, named for the report."""
    g = lambda s=1.0: rng.standard_normal(blk).astype(np.float32) * np.float32(s)
    out = []
    for s in (1.0, 0.02, 3.0):
        out.append(("gauss", g(s)))
    out.append(("tiny", g(1e-5)))
    out.append(("underflow", g(1e-9)))            # scales round to fp16 zero / subnormal
    out.append(("huge", g(1e3)))
    out.append(("zero", np.zeros(blk, np.float32)))
    out.append(("constant", np.full(blk, 0.75, np.float32)))
    out.append(("neg-constant", np.full(blk, -2.5, np.float32)))
    x = g(0.01); x[rng.integers(blk)] = 7.0
    out.append(("outlier", x))
    x = np.zeros(blk, np.float32); x[rng.integers(blk)] = -3.0
    out.append(("single-spike", x))
    out.append(("negative-only", -np.abs(g(1.0))))
    out.append(("positive-only", np.abs(g(1.0)) + np.float32(0.5)))
    out.append(("denormal", (rng.standard_normal(blk) * 1e-40).astype(np.float32)))
    out.append(("uniform", rng.uniform(-1, 1, blk).astype(np.float32)))
    ramp = np.repeat(2.0 ** (np.arange(blk // 16) - blk // 32), 16)[:blk].astype(np.float32)
    out.append(("subblock-ramp", g(1.0) * ramp))  # very different sub-block scales
    x = g(1.0); x[: blk // 2] = 0
    out.append(("half-zero", x))
    out.append(("ints", rng.integers(-8, 8, blk).astype(np.float32)))  # exactly representable grids
    for _ in range(6):
        out.append(("gauss-mix", g(float(rng.choice([0.1, 1.0, 10.0])))))
    return out


def raw_blocks(rng, name, nr, size):
    raw = rng.integers(0, 256, (nr, size), dtype=np.uint8)
    for off in F16_FIELDS[name]:
        # finite fp16 values: exponents across the whole range incl. subnormals and zero
        mag = (2.0 ** rng.uniform(-26, 6, nr)).astype(np.float16)
        mag[0] = 0
        sign = np.where(rng.integers(0, 2, nr) == 1, -1, 1).astype(np.float16)
        h = (mag * sign).astype(np.float16)
        assert np.all(np.isfinite(h))
        raw[:, off:off + 2] = h.view(np.uint8).reshape(nr, 2)
    return raw


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ggml-lib", default=os.environ.get("GGML_LIB"), help="path to libggml-base.so")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    if not args.ggml_lib:
        sys.exit("need --ggml-lib PATH/libggml-base.so (see tools/reference/README.md)")
    ggml = Ggml(args.ggml_lib)
    rng = np.random.default_rng(20261130)
    tensors = {}
    for name in TYPES:
        qt = QT[name]
        blk, size = GGML_QUANT_SIZES[qt]
        cats = categories(rng, blk)
        x = np.stack([c[1] for c in cats]).astype(np.float32)
        q = ggml.quantize_chunk(int(qt), x, size, blk)
        if name != "IQ4_NL":   # quantize_chunk(imatrix NULL) == quantize_row_*_ref for every other type
            assert np.array_equal(q.ravel(), ggml.from_float_ref(int(qt), x, size, blk)), name
        if name in PYPI_QUANT:
            qp = gguf.quants.quantize(x, qt).reshape(q.shape)
            bad = np.nonzero(np.any(qp != q, axis=1))[0]
            if len(bad):
                sys.exit(f"{name}: gguf-py and ggml quantizers differ on blocks {[cats[i][0] for i in bad]}")
        y = gguf.quants.dequantize(q, qt).reshape(x.shape)
        yg = ggml.to_float(int(qt), q, blk)
        assert np.array_equal(y.view(np.uint32), yg.view(np.uint32)), f"{name}: gguf-py vs ggml dequant"
        nr = 48 if blk == 32 else 24
        raw = raw_blocks(rng, name, nr, size)
        ry = gguf.quants.dequantize(raw, qt).reshape(nr, blk)
        rg = ggml.to_float(int(qt), raw, blk)
        same = (ry.view(np.uint32) == rg.view(np.uint32)) | (np.isnan(ry) & np.isnan(rg))
        assert same.all(), f"{name}: gguf-py vs ggml dequant (raw)"
        tensors[f"{name}.x"] = x
        tensors[f"{name}.q"] = q
        tensors[f"{name}.y"] = y
        tensors[f"{name}.raw"] = raw
        tensors[f"{name}.raw_y"] = ry
        tensors[f"{name}.zero"] = (np.abs(x).max(axis=1) < 1e-15).astype(np.uint8)
        print(f"{name}: {len(cats)} quantized blocks, {nr} raw blocks", file=sys.stderr)
    # activations: rows of 256 (every format's block divides it)
    ax = np.stack([c[1] for c in categories(rng, 256)]).astype(np.float32)
    tensors["act.x"] = ax
    tensors["act.q8_0"] = ggml.from_float_ref(int(QT.Q8_0), ax, 34, 32).reshape(ax.shape[0], -1)
    tensors["act.q8_1"] = ggml.from_float_ref(GGML_ID["Q8_1"], ax, 36, 32, "quantize_row_q8_1_ref").reshape(ax.shape[0], -1)
    tensors["act.q8_K"] = ggml.from_float_ref(GGML_ID["Q8_K"], ax, 292, 256, "quantize_row_q8_K_ref").reshape(ax.shape[0], -1)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    save_file(tensors, args.out, metadata={"gguf": gguf.__version__ if hasattr(gguf, "__version__") else "0.19.0",
                                           "numpy": np.__version__})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
