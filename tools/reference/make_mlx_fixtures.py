#!/usr/bin/env python3
"""MLX fixtures: mx.dequantize ground truth for every mode, and tiny-a converted by mlx-vlm's converter.

Usage:  python3 tools/reference/make_mlx_fixtures.py [--out tests/fixtures] [--only dequant|models]
        (needs PyPI mlx[cpu] and mlx-vlm, see requirements.txt; runs on Linux CPU; models after
         make_fixtures.py, whose tiny-a/bf16 and tiny-a/f32 it reads)

(a) <out>/mlx/dequant.safetensors: packed matrices and what mx.dequantize (CPU) returns for them.
    affine.b<bits>.g<group>.<sdt>.{w,scales,biases,out}  bits 1,2,3,4,5,6,8; group 32,64,128;
        sdt f32/f16/bf16 (scale and bias type); 6 rows x 256 columns: rows 0-1 from mx.quantize of
        random data (MLX's own sign-flipped scales and snapped biases), rows 2-3 random codes with
        random scales and biases over a wide range, rows 4-5 extreme scales and biases (zeros, signed
        zeros, subnormals, the largest finite values, inf, NaN). out is in the scale type: that is
        mx.dequantize's output type for affine, and its values are exact there.
    mxfp4.{w,scales,out}  8 x 1024, 256 groups whose scales are the 256 E8M0 codes, every fp4 code
    mxfp8.{w,scales,out}  32 x 256, 256 groups with the 256 scale codes, every E4M3 code in each row
    nvfp4.{w,scales,out}  16 x 256, 256 groups with the 256 E4M3 scale codes, every fp4 code
    <mode>.real.{w,scales,out}  mx.quantize of random data in that mode
    fp outputs are float32 (mx.dequantize(..., dtype=mx.float32)).

(b) <out>/tiny-a/mlx-<variant>/: tests/fixtures/tiny-a/bf16 converted by `python -m mlx_vlm convert`
    (mlx-vlm's own converter, run as a subprocess) with
        4bit     -q --q-bits 4               affine, mlx-vlm's DiffusionGemma recipe
        8bit     -q --q-bits 8
        mixed_3_6 -q --quant-predicate mixed_3_6   (3- and 6-bit codes: the straddling layouts)
        nvfp4    -q --q-mode nvfp4           nvfp4 with the recipe's affine 8-bit modules: mixed modes
    The source is first given the released checkpoint's config spelling (global_head_dim /
    num_global_key_value_heads instead of per_layer_config): mlx-vlm 0.7.10 does not read
    per_layer_config and would build the full layers with head_dim 512. Kept: config.json,
    generation_config.json, model.safetensors, model.safetensors.index.json (the converter's stub
    tokenizer, processor config and README are dropped).
    <out>/tiny-a/ref-mlx-<variant>.safetensors:
        short.{prompt,canvas0,canvas1,canvas2}   the inputs of the parity fixtures' short session
        short.commit, short.dec{0,1,2}.logits     transformers (DiffusionGemmaForBlockDiffusion, float32,
                                                  the exact graph of make_fixtures.set_exact) with every
                                                  weight replaced by the MLX file's, dequantized to float32;
                                                  dec1 and dec2 for 4bit only (size). commit is the argmax
                                                  of this model's dec1 (encoded as enc1 before dec2)
        weights.<module>.{q,shape,hash,row0,rowN}  per matrix module: int32 [mode, bits, group] (mode 0
                                                  float, 1 affine, 2 mxfp4, 3 mxfp8, 4 nvfp4), int32 [E, R, C]
                                                  (E = 0 for 2-D), uint64 hash of the dequantized float32
                                                  [E*R, C] matrix (sum of bits[i] * (i + 1) mod 2^64 over
                                                  the row-major float32 bit patterns), first and last row
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import mlx.core as mx  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SDT = {"f32": mx.float32, "f16": mx.float16, "bf16": mx.bfloat16}
MODE_ID = {"float": 0, "affine": 1, "mxfp4": 2, "mxfp8": 3, "nvfp4": 4}


def to_np(a):
    """mx array -> numpy, keeping the exact bits (bf16 -> uint16 storage -> written as BF16 below)."""
    if a.dtype == mx.bfloat16:
        return np.array(a.view(mx.uint16))
    return np.array(a)


# ----------------------------------------------------------------------------------------------------
# (a) dequantization ground truth


def specials(sdt):
    if sdt == "f32":
        v = [0.0, -0.0, 2.0**-149, 2.0**-140, 1.1754944e-38, 3.4028235e38, -3.4028235e38, 1e38, -7.5e37,
             1.0, -1.0, np.inf, -np.inf, np.nan]
    elif sdt == "f16":
        v = [0.0, -0.0, 2.0**-24, 2.0**-20, 6.1035156e-05, 65504.0, -65504.0, 300.0, -257.0, 1e-3, 1.0,
             np.inf, -np.inf, np.nan]
    else:
        v = [0.0, -0.0, 2.0**-133, 2.0**-128, 1.1754944e-38, 3.3895314e38, -3.3895314e38, 1e36, -2e36,
             1.0, -1.0, np.inf, -np.inf, np.nan]
    return np.array(v, np.float32)


def make_affine(rng, bits, group, sdt, rows=6, cols=256):
    dt = SDT[sdt]
    ng = cols // group
    # rows 0-1: MLX's own quantizer on random data (its scales can be negative, its biases snapped)
    x = mx.array((rng.standard_normal((2, cols)) * np.exp(rng.uniform(-4, 2, (2, 1)))).astype(np.float32)).astype(dt)
    wq, sq, bq = mx.quantize(x, group_size=group, bits=bits)
    w = np.zeros((rows, cols * bits // 32), np.uint32)
    s = np.zeros((rows, ng), np.float32)
    b = np.zeros((rows, ng), np.float32)
    w[:2] = np.array(wq)
    s[:2] = np.array(sq.astype(mx.float32))
    b[:2] = np.array(bq.astype(mx.float32))
    # rows 2-3: random codes, scales and biases over a wide range of magnitudes and both signs
    w[2:4] = rng.integers(0, 2**32, (2, w.shape[1]), dtype=np.uint64).astype(np.uint32)
    mag = lambda n: np.exp(rng.uniform(-12, 6, n)) * rng.choice([-1.0, 1.0], n)
    s[2:4] = mag((2, ng))
    b[2:4] = mag((2, ng))
    # rows 4-5: extremes
    w[4:] = rng.integers(0, 2**32, (2, w.shape[1]), dtype=np.uint64).astype(np.uint32)
    sp = specials(sdt)
    s[4:] = rng.choice(sp, (2, ng))
    b[4:] = rng.choice(sp, (2, ng))
    S = mx.array(s).astype(dt)   # exact for rows 0-1 (already in dt); rounds the random rows to dt
    B = mx.array(b).astype(dt)
    out = mx.dequantize(mx.array(w), S, B, group_size=group, bits=bits, mode="affine")
    assert out.dtype == dt
    return {"w": w, "scales": to_np(S), "biases": to_np(B), "out": to_np(out)}


def pack4(codes):
    """[rows, n] codes (< 16) -> [rows, n/8] uint32, code j in nibble j (LSB first)."""
    rows, n = codes.shape
    w = np.zeros((rows, n // 8), np.uint32)
    for j in range(n):
        w[:, j // 8] |= codes[:, j].astype(np.uint32) << np.uint32(4 * (j % 8))
    return w


def fp_deq(w, s, group, bits, mode):
    out = mx.dequantize(mx.array(w), mx.array(s), None, group_size=group, bits=bits, mode=mode, dtype=mx.float32)
    return np.array(out)


def make_fp(rng):
    out = {}
    # mxfp4: 8 x 1024, group 32 -> 256 groups, scale codes 0..255, each group every code twice
    codes = np.tile(np.arange(1024) % 16, (8, 1))
    w = pack4(codes)
    s = np.arange(256, dtype=np.uint8).reshape(8, 32)
    out["mxfp4"] = dict(w=w, scales=s, out=fp_deq(w, s, 32, 4, "mxfp4"))
    # mxfp8: 32 x 256, group 32 -> 8 groups per row, 256 scale codes; each row all 256 codes
    w = np.tile(np.arange(256, dtype=np.uint8), (32, 1)).view(np.uint32).copy()
    s = np.arange(256, dtype=np.uint8).reshape(32, 8)
    out["mxfp8"] = dict(w=w, scales=s, out=fp_deq(w, s, 32, 8, "mxfp8"))
    # nvfp4: 16 x 256, group 16 -> 16 groups per row, 256 scale codes; each group codes 0..15
    codes = np.tile(np.arange(256) % 16, (16, 1))
    w = pack4(codes)
    s = np.arange(256, dtype=np.uint8).reshape(16, 16)
    out["nvfp4"] = dict(w=w, scales=s, out=fp_deq(w, s, 16, 4, "nvfp4"))
    # mx.quantize of random data in each mode
    for mode, group, bits in (("mxfp4", 32, 4), ("mxfp8", 32, 8), ("nvfp4", 16, 4)):
        x = mx.array((rng.standard_normal((4, 256)) * np.exp(rng.uniform(-6, 6, (4, 1)))).astype(np.float32))
        wq, sq = mx.quantize(x, group_size=group, bits=bits, mode=mode)
        w, s = np.array(wq), np.array(sq)
        out[mode + ".real"] = dict(w=w, scales=s, out=fp_deq(w, s, group, bits, mode))
    return out


def write_dequant(outdir):
    rng = np.random.default_rng(2026)
    tensors, bf16_keys = {}, []
    for bits in (1, 2, 3, 4, 5, 6, 8):
        for group in (32, 64, 128):
            for sdt in ("f32", "f16", "bf16"):
                d = make_affine(rng, bits, group, sdt)
                for k, v in d.items():
                    key = f"affine.b{bits}.g{group}.{sdt}.{k}"
                    tensors[key] = v
                    if sdt == "bf16" and k != "w":
                        bf16_keys.append(key)
    for name, d in make_fp(rng).items():
        for k, v in d.items():
            tensors[f"{name}.{k}"] = v
    os.makedirs(os.path.join(outdir, "mlx"), exist_ok=True)
    path = os.path.join(outdir, "mlx", "dequant.safetensors")
    save_safetensors_bf16(path, tensors, set(bf16_keys),
                          {"mlx": mx.__version__, "generator": "tools/reference/make_mlx_fixtures.py"})
    print(f"{path}: {len(tensors)} tensors, {os.path.getsize(path)} bytes", file=sys.stderr)


def save_safetensors_bf16(path, tensors, bf16_keys, metadata):
    """safetensors.numpy has no bfloat16: write uint16 arrays, then relabel those keys' dtype to BF16 in
    the header (same byte size, so offsets stay valid)."""
    save_file(tensors, path, metadata=metadata)
    with open(path, "rb") as f:
        raw = f.read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    for k in bf16_keys:
        assert header[k]["dtype"] == "U16"
        header[k]["dtype"] = "BF16"
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - (8 + len(hb)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(len(hb).to_bytes(8, "little") + hb + raw[8 + n:])
    os.chmod(path, 0o644)


# ----------------------------------------------------------------------------------------------------
# (b) tiny-a through mlx-vlm's converter

# (name, converter arguments, decoder calls whose logits are kept: all three for 4bit, dec0 for the
# others, to keep the fixtures small; the per-module checks cover every variant's weights exactly)
VARIANTS = [
    ("4bit", ["-q", "--q-bits", "4"], ("dec0", "dec1", "dec2")),
    ("8bit", ["-q", "--q-bits", "8"], ("dec0",)),
    ("mixed_3_6", ["-q", "--quant-predicate", "mixed_3_6"], ("dec0",)),
    ("nvfp4", ["-q", "--q-mode", "nvfp4"], ("dec0",)),
]
KEEP = ("config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json")


def released_style(src, dst):
    shutil.copytree(src, dst)
    p = os.path.join(dst, "config.json")
    with open(p) as f:
        cfg = json.load(f)
    tc = cfg["text_config"]
    plc = tc.pop("per_layer_config", None) or {}
    full = [i for i, t in enumerate(tc["layer_types"]) if t == "full_attention"]
    if full:
        over = plc.get(str(full[0]), {})
        tc["global_head_dim"] = over.get("head_dim", tc["head_dim"])
        tc["num_global_key_value_heads"] = over.get("num_key_value_heads", tc["num_key_value_heads"])
    with open(p, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def module_params(quant, module):
    """(mode, bits, group) of a quantized module as mlx-vlm's loader resolves them: a per-module dict
    (mode defaults to affine: it is passed to to_quantized as is), else the global block."""
    if module in quant and isinstance(quant[module], dict):
        d = quant[module]
        return d.get("mode", "affine"), d["bits"], d["group_size"]
    return quant.get("mode", "affine"), quant["bits"], quant["group_size"]


def dequantized_text_weights(mlx_dir, quant):
    """{HF name: float32 array} for every text tensor of an MLX conversion, plus the per-module checks."""
    w = mx.load(os.path.join(mlx_dir, "model.safetensors"))
    hf, checks = {}, {}
    for key in sorted(w):
        if key.endswith((".scales", ".biases")) or ".vision_tower." in key or ".embed_vision." in key:
            continue
        a = w[key]
        module = key[: -len(".weight")] if key.endswith(".weight") else None
        if module and module + ".scales" in w:
            mode, bits, group = module_params(quant, module)
            if mode == "affine":
                d = mx.dequantize(a, w[module + ".scales"], w[module + ".biases"], group_size=group, bits=bits,
                                  mode="affine").astype(mx.float32)
            else:
                d = mx.dequantize(a, w[module + ".scales"], None, group_size=group, bits=bits, mode=mode,
                                  dtype=mx.float32)
            q = (MODE_ID[mode], bits, group)
        else:
            d = a.astype(mx.float32)
            q = (0, 0, 0)
        d = np.array(d)
        if module and d.ndim >= 2:
            shape = (d.shape[0], d.shape[1], d.shape[2]) if d.ndim == 3 else (0, d.shape[0], d.shape[1])
            flat = d.reshape(-1, d.shape[-1])
            bitsu = flat.reshape(-1).view(np.uint32).astype(np.uint64)
            h = (bitsu * (np.arange(bitsu.size, dtype=np.uint64) + np.uint64(1))).sum(dtype=np.uint64)
            checks[f"weights.{module}.q"] = np.array(q, np.int32)
            checks[f"weights.{module}.shape"] = np.array(shape, np.int32)
            checks[f"weights.{module}.hash"] = np.array([h], np.uint64)
            checks[f"weights.{module}.row0"] = flat[0].copy()
            checks[f"weights.{module}.rowN"] = flat[-1].copy()
        # MLX names -> HF names: the stacked experts carry a .weight suffix in MLX only
        name = key
        for e in (".experts.gate_up_proj.weight", ".experts.down_proj.weight"):
            if name.endswith(e):
                name = name[: -len(".weight")]
        hf[name] = d
    return hf, checks


def reference_logits(spec, hf_weights, tmp, calls):
    import torch
    import make_fixtures as mf
    from transformers import DiffusionGemmaForBlockDiffusion

    base = os.path.join(mf_out_dir(), spec["name"])
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(os.path.join(base, "f32"), dtype=torch.float32).eval()
    sd = model.state_dict()
    missing = [k for k in hf_weights if k not in sd]
    assert not missing, f"MLX tensors with no transformers counterpart: {missing[:5]}"
    text = [k for k in sd if k.startswith("model.decoder.") or k.startswith("model.encoder.language_model.")]
    with torch.no_grad():
        for k, v in hf_weights.items():
            assert tuple(sd[k].shape) == v.shape, (k, sd[k].shape, v.shape)
            sd[k].copy_(torch.from_numpy(v))
    # every decoder tensor and the encoder's own layer scalars must come from the MLX file (the encoder's
    # other text weights are tied to the decoder's)
    need = [k for k in text if k.startswith("model.decoder.") or k.endswith(".layer_scalar")]
    untouched = [k for k in need if k not in hf_weights]
    assert not untouched, f"transformers text tensors the MLX file does not provide: {untouched[:5]}"
    path = os.path.join(tmp, "hf-dequant")
    model.save_pretrained(path)
    ref = DiffusionGemmaForBlockDiffusion.from_pretrained(path, dtype=torch.float32).eval()
    V, C = spec["text"]["vocab_size"], spec["canvas"]
    rng = np.random.default_rng(spec["seed"])   # the same draws as make_fixtures.build
    sessions = {}
    for tag, plen in spec["prompts"].items():
        sessions[tag] = (rng.integers(0, V, plen).tolist(), [rng.integers(0, V, C).tolist() for _ in range(3)])
    out = {}
    mf.set_exact(True)
    prompt, canvases = sessions["short"]
    mf.run_session(ref, "short", prompt, canvases, out, torch.float32)
    mf.set_exact(False)
    keep = ["short.prompt", "short.canvas0", "short.canvas1", "short.canvas2", "short.commit"]
    keep += [f"short.{c}.logits" for c in calls]
    return {k: out[k] for k in keep}


def mlx_vlm_logits(mlx_dir, prompt, canvas):
    """dec0 logits from mlx-vlm's own DiffusionGemma on the same checkpoint, with its quantized layers
    dequantized (mlx-vlm's dequantize_model: mx.dequantize, as above) and everything cast to float32:
    an independent check of the name mapping and of the transformers reference built here."""
    from pathlib import Path
    from mlx_vlm.quant_utils import dequantize_model
    from mlx_vlm.utils import load_model

    model = dequantize_model(load_model(Path(mlx_dir)))
    model.set_dtype(mx.float32)
    cache = model.make_cache()
    model.diffusion_prefill_cache(mx.array(prompt.astype(np.int32)), cache=cache)
    lg = model.diffusion_decoder_logits(mx.array(canvas.astype(np.int32)), cache=cache)
    return np.array(lg.astype(mx.float32))[0]


_MF_OUT = [None]


def mf_out_dir():
    return _MF_OUT[0]


def write_models(outdir):
    import torch
    import transformers
    import mlx_vlm
    import make_fixtures as mf

    torch.set_num_threads(1)
    spec = next(s for s in mf.CONFIGS if s["name"] == "tiny-a")
    base = os.path.join(outdir, "tiny-a")
    # the parity fixtures' own inputs must be what we regenerate here
    parity = load_file(os.path.join(base, "ref-f32.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        released_style(os.path.join(base, "bf16"), src)
        for name, args, calls in VARIANTS:
            conv = os.path.join(tmp, "mlx-" + name)
            cmd = [sys.executable, "-m", "mlx_vlm", "convert", "--hf-path", src, "--mlx-path", conv] + args
            print(" ".join(cmd[1:]), file=sys.stderr)
            subprocess.run(cmd, check=True, stdout=sys.stderr)
            dst = os.path.join(base, "mlx-" + name)
            shutil.rmtree(dst, ignore_errors=True)
            os.makedirs(dst)
            for f in KEEP:
                shutil.copy(os.path.join(conv, f), os.path.join(dst, f))
            with open(os.path.join(dst, "config.json")) as f:
                quant = json.load(f)["quantization"]
            hf, checks = dequantized_text_weights(dst, quant)
            tmp2 = os.path.join(tmp, "ref-" + name)
            os.makedirs(tmp2)
            ref = reference_logits(spec, hf, tmp2, calls)
            for k in ("short.prompt", "short.canvas0", "short.canvas1", "short.canvas2"):
                assert np.array_equal(ref[k], parity[k]), f"input {k} differs from the parity fixture"
            ml = mlx_vlm_logits(dst, ref["short.prompt"], ref["short.canvas0"])
            diff = float(np.abs(ml - ref["short.dec0.logits"]).max())
            agree = float((ml.argmax(-1) == ref["short.dec0.logits"].argmax(-1)).mean())
            print(f"tiny-a/mlx-{name}: mlx-vlm (dequantized, float32) vs transformers dec0 logits: max abs diff {diff:.3e}, "
                  f"argmax agreement {agree:.3f}", file=sys.stderr)
            assert diff < 1e-3 and agree == 1.0
            ref.update(checks)
            path = os.path.join(base, f"ref-mlx-{name}.safetensors")
            save_file(ref, path, metadata={"mlx": mx.__version__, "mlx_vlm": mlx_vlm.__version__,
                                           "transformers": transformers.__version__, "torch": torch.__version__,
                                           "reference": "exact graph (make_fixtures.set_exact), float32"})
            os.chmod(path, 0o644)
            size = sum(os.path.getsize(os.path.join(dst, f)) for f in KEEP)
            print(f"tiny-a/mlx-{name}: {size} bytes; {path}: {os.path.getsize(path)} bytes", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", choices=["dequant", "models"], default=None)
    args = ap.parse_args()
    _MF_OUT[0] = args.out
    mx.set_default_device(mx.cpu)
    if args.only in (None, "dequant"):
        write_dequant(args.out)
    if args.only in (None, "models"):
        write_models(args.out)


if __name__ == "__main__":
    main()
