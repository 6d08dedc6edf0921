#!/usr/bin/env python3
"""Build tiny random-weight DiffusionGemma checkpoints with the reference (transformers) and dump
per-stage reference tensors for the C parity tests.

Usage:  python3 tools/reference/make_fixtures.py [--out tests/fixtures]

For every configuration below this writes
    <out>/<name>/f32/   config.json, generation_config.json, model.safetensors (or shards + index)
    <out>/<name>/bf16/  the same checkpoint saved in bfloat16
    <out>/<name>/ref-f32.safetensors, ref-bf16.safetensors   reference tensors (see CASES below)

The reference model is always re-loaded from the saved directory with from_pretrained(dtype=...), the
way a user runs it, so the dumps describe exactly the bytes on disk.

Reference tensor names: "<session>.<call>.<stage>", with
    session  "short" (prompt shorter than the sliding window) or "long" (prompt longer than it)
    call     enc0 (prompt), dec0 (canvas A, no self-conditioning), dec1 (canvas B, self-conditioned on
             dec0's logits), enc1 (commit dec1's argmax canvas), dec2 (canvas C after the commit)
    stage    embed, attn.<i> (attention output before o_proj), layer.<i>, router.<i>.ids,
             router.<i>.weights (encoder and decoder),
             sc_embed (soft embedding S), input (self-conditioning output = decoder layer-0 input),
             norm (final norm), logits (softcapped fp32)
Inputs are stored as int32 tensors "<session>.prompt", "<session>.canvas0/1/2".
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
import transformers
from safetensors.numpy import save_file
from transformers import DiffusionGemmaConfig, DiffusionGemmaForBlockDiffusion
from transformers.cache_utils import DynamicCache
from transformers import activations as hf_act
from transformers.models.diffusion_gemma import modeling_diffusion_gemma as hf_dg
from transformers.models.diffusion_gemma.generation_diffusion_gemma import DiffusionGemmaGenerationConfig

TINY_VISION = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=2, head_dim=8, position_embedding_size=64,
                   model_type="gemma4_vision")

# Several shapes with the real structure: both layer types, global head dim and KV heads different from
# the sliding ones, experts > top-k, a small window so long prompts cross it.
CONFIGS = [
    dict(name="tiny-a", seed=1, canvas=16, shard=None, old_style=False, cli=True, text=dict(
        vocab_size=2048, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        num_global_key_value_heads=1,
        layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
        sliding_window=8, num_experts=8, top_k_experts=2, moe_intermediate_size=32),
        prompts=dict(short=5, long=29)),
    dict(name="tiny-b", seed=2, canvas=8, shard=None, old_style=False, f16=True, text=dict(
        vocab_size=1500, hidden_size=48, intermediate_size=80, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, head_dim=12, global_head_dim=24,
        num_global_key_value_heads=2,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        sliding_window=6, num_experts=6, top_k_experts=3, moe_intermediate_size=24,
        rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
                         "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.5,
                                            "rope_theta": 20000.0}}),
        prompts=dict(short=3, long=23)),
    # default 5:1 layer pattern, released-style config.json (global_head_dim / num_global_key_value_heads,
    # no per_layer_config) and a sharded checkpoint with model.safetensors.index.json
    dict(name="tiny-c", seed=3, canvas=12, shard="100KB", old_style=True, text=dict(
        vocab_size=1024, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
        num_attention_heads=2, num_key_value_heads=2, head_dim=16, global_head_dim=32,
        num_global_key_value_heads=1, sliding_window=10, num_experts=4, top_k_experts=2,
        moe_intermediate_size=24),
        prompts=dict(short=7, long=26)),
    # every width a multiple of 256 (hidden, dense / expert width, the full layers' attention output), so
    # `dgemma quantize` writes real K-quant blocks (tests/test_quantize.c); bfloat16 only, no reference
    # tensors (the quantize tests compare the engine with itself)
    dict(name="tiny-q", seed=4, canvas=16, shard=None, old_style=False, dtypes=["bf16"], refs=False, text=dict(
        vocab_size=256, hidden_size=256, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=1, num_key_value_heads=1, head_dim=128, global_head_dim=256,
        num_global_key_value_heads=1, layer_types=["sliding_attention", "full_attention"],
        sliding_window=8, num_experts=2, top_k_experts=2, moe_intermediate_size=256),
        prompts=dict(short=5, long=20)),
]


_STOCK_SDPA = torch.nn.functional.scaled_dot_product_attention


def sdpa_exact_exp(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    """torch's CPU flash-attention semantics with an exact exp.

    The CPU flash kernel computes scores in fp32, p = exp(s - max) with an approximate exp_u20 (about
    20 ulp) on whole SIMD lanes and std::exp on the tail, rounds p to the activation dtype for the P.V
    product, sums the unrounded p in fp32 and divides last. The approximate exp makes the bf16
    reference depend on the machine's vector width; this replacement keeps everything else and computes
    exp, the row sum, q.k and P.V exactly, each rounded once to float32, so the fixtures are
    reproducible anywhere and do not depend on BLAS summation order. The stock kernel's logits are dumped too ("stock.*").
    """
    assert dropout_p == 0.0
    q, k, v = query.double(), key.double(), value.double()
    if k.shape[1] != q.shape[1]:
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    # float32 scores and P.V, each accumulated exactly (float64) and rounded once, so the result does
    # not depend on the BLAS's summation order (the C engine does the same)
    s = (q @ k.transpose(-1, -2)).float() * (scale if scale is not None else q.shape[-1] ** -0.5)
    T, S = s.shape[-2], s.shape[-1]
    if is_causal:
        allowed = torch.ones(T, S, dtype=torch.bool).tril(diagonal=S - T)
        s = s.masked_fill(~allowed, float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask.float()
    m = s.amax(-1, keepdim=True)
    p = torch.exp((s - m).double()).float()            # correctly rounded float32 exp
    total = p.double().sum(-1, keepdim=True).float()   # exact sum, one rounding
    pv = (p.to(query.dtype).double() @ v).float()
    return (pv / total).to(query.dtype)


_STOCK_TOPK = torch.topk
_STOCK_NORM = hf_dg.DiffusionGemmaRMSNorm._norm


def rmsnorm_exact_mean(self, hidden_states):
    """DiffusionGemmaRMSNorm._norm with the mean of squares summed exactly and rounded once.

    torch's float32 sum uses a vectorised order that depends on the CPU (AVX2 vs AVX-512) and is not
    reproducible elsewhere; a one-ulp change of the mean flips bf16 roundings downstream. Everything
    else (pow(ms, -0.5), which ATen evaluates as 1/sqrt, the weight, the cast) is the stock code."""
    mean_squared = hidden_states.double().pow(2).mean(-1, keepdim=True).float() + self.eps
    return hidden_states * torch.pow(mean_squared, -0.5)



def topk_index_stable(x, k, dim=-1, largest=True, sorted=True):
    """torch.topk with ties broken by the lower index.

    Stock CPU topk (torch 2.15) leaves exactly equal values in whatever order std::nth_element
    produces, also under use_deterministic_algorithms(True) (newer ATen sources add an index
    tie-break in deterministic mode). With bf16 router logits exact ties between experts are common, so
    the order is pinned to make the fixtures (and the C engine, which uses the same rule) reproducible."""
    assert largest and sorted
    vals, idx = torch.sort(x, dim=dim, descending=True, stable=True)
    return torch.return_types.topk((vals.narrow(dim, 0, k), idx.narrow(dim, 0, k)))


_STOCK_LINEAR = torch.nn.functional.linear
_STOCK_MATMUL = torch.matmul
_STOCK_GROUPED_MM = torch.nn.functional.grouped_mm


def linear_exact(input, weight, bias=None):
    """F.linear with the dot products computed exactly, rounded once to float32, then to the dtype.
    torch's CPU bf16 GEMM accumulates in float32 in a blocked order that depends on the BLAS."""
    assert bias is None
    return (input.double() @ weight.double().T).float().to(input.dtype)


def matmul_exact(a, b):
    return (a.double() @ b.double()).float().to(a.dtype)


def grouped_mm_exact(mat_a, mat_b, offs=None, bias=None, out_dtype=None):
    """F.grouped_mm (rows of mat_a grouped by expert, mat_b [E, in, out]) with exact dot products."""
    assert bias is None and offs is not None
    out = torch.empty(mat_a.shape[0], mat_b.shape[-1], dtype=out_dtype or mat_a.dtype)
    start = 0
    for g, end in enumerate(offs.tolist()):
        if end > start:
            out[start:end] = (mat_a[start:end].double() @ mat_b[g].double()).float().to(out.dtype)
        start = end
    return out


_STOCK_SOFTMAX = torch.nn.functional.softmax
_STOCK_TSOFTMAX = torch.Tensor.softmax


def softmax_exact(x, dim=-1, dtype=None, **kw):
    """float32 softmax with a correctly rounded exp and an exact sum, then one division."""
    x = x.to(dtype) if dtype is not None else x
    xf = x.float()
    e = torch.exp((xf - xf.amax(dim, keepdim=True)).double()).float()
    return (e / e.double().sum(dim, keepdim=True).float()).to(x.dtype)


def tensor_softmax_exact(self, dim, dtype=None):
    return softmax_exact(self, dim=dim, dtype=dtype)


_STOCK_TANH = torch.tanh
_STOCK_GELU = hf_act.GELUTanh.forward
_STOCK_ROTARY = hf_dg.DiffusionGemmaTextRotaryEmbedding.forward


def tanh_exact(x, *, out=None):
    assert out is None
    return _STOCK_TANH(x.double()).to(x.dtype)


def gelu_exact(self, x):
    """GELUTanh.forward (gelu_pytorch_tanh) evaluated in double, rounded once to float32, then to the
    dtype. (Patching F.gelu would not reach it: the module keeps a functools.partial of the original.)"""
    xd = x.double()
    y = 0.5 * xd * (1.0 + _STOCK_TANH(0.7978845608028654 * (xd + 0.044715 * xd * xd * xd)))
    return y.float().to(x.dtype)


def exact_inv_freq(config, layer_type):
    """1 / theta^(2i/d) with the exponent in float32, a correctly rounded float32 power and a float32
    reciprocal (the stock code's `1.0 / (base ** exps)`, whose Sleef powf is 1 ulp off at times)."""
    rp = config.rope_parameters[layer_type]
    d = config.per_layer_config[layer_type].head_dim
    theta = float(torch.tensor(rp["rope_theta"], dtype=torch.float32))
    if rp.get("rope_type", "default") == "default":
        angles = int(d * rp.get("partial_rotary_factor", 1.0)) // 2
        dim = 2 * angles
    else:
        angles, dim = int(rp.get("partial_rotary_factor", 1.0) * d // 2), d
    exps = torch.arange(0, 2 * angles, 2, dtype=torch.int64).float() / dim
    inv = 1.0 / (torch.tensor(theta, dtype=torch.float64) ** exps.double()).float()
    if rp.get("rope_type", "default") != "default":
        inv = torch.cat([inv, torch.zeros(d // 2 - angles)]) / rp.get("factor", 1.0)
    return inv


def rotary_exact(self, x, position_ids, layer_type):
    """DiffusionGemmaTextRotaryEmbedding.forward with exact inv_freq and correctly rounded cos/sin."""
    inv = exact_inv_freq(self.config, layer_type).to(x.device)
    scaling = getattr(self, f"{layer_type}_attention_scaling")
    freqs = position_ids[..., None].float() * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = torch.cos(emb.double()).float() * scaling
    sin = torch.sin(emb.double()).float() * scaling
    return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


EXACT_PATCHES = [
    (torch.nn.functional, "scaled_dot_product_attention", None),
    (torch, "topk", None),
    (hf_dg.DiffusionGemmaRMSNorm, "_norm", None),
    (torch.nn.functional, "linear", None),
    (torch, "matmul", None),
    (torch.nn.functional, "grouped_mm", None),
    (torch.nn.functional, "softmax", None),
    (torch.Tensor, "softmax", None),
    (torch, "tanh", None),
    (hf_act.GELUTanh, "forward", None),
    (hf_dg.DiffusionGemmaTextRotaryEmbedding, "forward", None),
]


def set_exact(on):
    """The exact reference: the stock transformers graph, rounding at the same points, with every
    reduction computed exactly and every transcendental (exp, tanh, GELU, cos, sin, the RoPE power)
    correctly rounded (see the replacements above). on=False restores stock torch."""
    repl = [sdpa_exact_exp, topk_index_stable, rmsnorm_exact_mean, linear_exact, matmul_exact, grouped_mm_exact,
            softmax_exact, tensor_softmax_exact, tanh_exact, gelu_exact, rotary_exact]
    stock = [_STOCK_SDPA, _STOCK_TOPK, _STOCK_NORM, _STOCK_LINEAR, _STOCK_MATMUL, _STOCK_GROUPED_MM,
             _STOCK_SOFTMAX, _STOCK_TSOFTMAX, _STOCK_TANH, _STOCK_GELU, _STOCK_ROTARY]
    for (obj, attr, _), new, old in zip(EXACT_PATCHES, repl, stock):
        setattr(obj, attr, new if on else old)


def randomize(model, gen):
    """Replace the reference init (norms and scalars at 1) with values that expose wrong usage."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "vision" in name or "embed_vision" in name:
                p.normal_(0.0, 0.05, generator=gen)
            elif p.ndim == 1 and ("norm" in name or "scale" in name):
                p.uniform_(0.5, 1.5, generator=gen)
            elif p.ndim >= 2:
                fan_in = p.shape[-1]
                # routers get logits of a few units, like a trained router; at the init scale (~0.1)
                # bf16 rounding makes exact ties between experts common and routing chaotic
                gain = 24.0 if name.endswith("router.proj.weight") else 1.0
                p.normal_(0.0, gain / fan_in ** 0.5, generator=gen)
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.6, 1.4, generator=gen)   # encoder and decoder copies get different values


def old_style_config(path, text):
    """Rewrite config.json the way the released checkpoint spells it (transformers 5.8-era)."""
    cfg_path = os.path.join(path, "config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    tc = cfg["text_config"]
    tc.pop("per_layer_config", None)
    tc.pop("layer_types", None)
    tc["global_head_dim"] = text["global_head_dim"]
    tc["num_global_key_value_heads"] = text["num_global_key_value_heads"]
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)


def run_session(model, tag, prompt, canvases, out, dtype):
    """Runs enc0, dec0, dec1 (sc = dec0 logits), enc1 (commit dec1 argmax), dec2; records every stage."""
    lm = model.model
    enc, dec = lm.encoder.language_model, lm.decoder
    rec = {}
    current = [None]

    def put(stage, t):
        key = f"{tag}.{current[0]}.{stage}"
        arr = t.detach()
        arr = arr.to(torch.int32) if arr.dtype in (torch.int64, torch.int32) else arr.float()
        rec[key] = arr.reshape(-1, arr.shape[-1]).cpu().numpy().copy()

    hooks = []
    for part in (enc, dec):
        hooks.append(part.embed_tokens.register_forward_hook(lambda m, i, o: put("embed", o)))
        hooks.append(part.norm.register_forward_hook(lambda m, i, o: put("norm", o)))
        for li, layer in enumerate(part.layers):
            hooks.append(layer.register_forward_hook(lambda m, i, o, li=li: put(f"layer.{li}", o)))
            def rhook(m, i, o, li=li):
                put(f"router.{li}.weights", o[1])
                put(f"router.{li}.ids", o[2])
            hooks.append(layer.router.register_forward_hook(rhook))
            hooks.append(layer.self_attn.o_proj.register_forward_hook(
                lambda m, i, o, li=li: put(f"attn.{li}", i[0])))
    def schook(m, i, o):
        put("sc_embed", i[1])
        put("input", o)
    hooks.append(dec.self_conditioning.register_forward_hook(schook))

    cache = DynamicCache(config=model.config.get_text_config())
    ids = lambda a: torch.tensor(a, dtype=torch.long)[None]
    with torch.no_grad():
        current[0] = "enc0"
        lm.encoder(input_ids=ids(prompt), cache=cache)
        current[0] = "dec0"
        lg0 = model(cache=cache, decoder_input_ids=ids(canvases[0])).logits
        put("logits", lg0)
        current[0] = "dec1"
        lg1 = model(cache=cache, decoder_input_ids=ids(canvases[1]), self_conditioning_logits=lg0).logits
        put("logits", lg1)
        commit = lg1[0].argmax(-1)
        current[0] = "enc1"
        lm.encoder(input_ids=commit[None], cache=cache)
        current[0] = "dec2"
        lg2 = model(cache=cache, decoder_input_ids=ids(canvases[2])).logits
        put("logits", lg2)
    for h in hooks:
        h.remove()
    rec[f"{tag}.prompt"] = np.asarray(prompt, dtype=np.int32)[None]
    for i, c in enumerate(canvases):
        rec[f"{tag}.canvas{i}"] = np.asarray(c, dtype=np.int32)[None]
    rec[f"{tag}.commit"] = commit.to(torch.int32).cpu().numpy()[None]
    out.update(rec)


def write_cli_inputs(d, out, dt):
    """Plain-text ids (and one .npy) for the `dgemma forward` CLI test: the short session's dec2
    (prompt, commit, canvas2) and dec1 (prompt, canvas1, --sc-logits = dec0 logits) cases."""
    os.makedirs(d, exist_ok=True)
    txt = lambda name, a: open(os.path.join(d, name), "w").write(" ".join(str(int(v)) for v in a.reshape(-1)) + "\n")
    txt("prompt.txt", out["short.prompt"])
    txt("commit.txt", out["short.commit"])
    txt("canvas2.txt", out["short.canvas2"])
    txt("canvas1.txt", out["short.canvas1"])
    txt("argmax-dec2.txt", out["short.dec2.logits"].argmax(-1))
    txt("argmax-dec1.txt", out["short.dec1.logits"].argmax(-1))
    if dt == "f32":
        np.save(os.path.join(d, "sc-dec0.npy"), out["short.dec0.logits"].astype(np.float32))


def build(spec, outdir):
    name = spec["name"]
    base = os.path.join(outdir, name)
    shutil.rmtree(base, ignore_errors=True)
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(spec["seed"])
    text = dict(spec["text"])
    cfg = DiffusionGemmaConfig(text_config=dict(text, use_bidirectional_attention="vision"),
                               vision_config=TINY_VISION, canvas_length=spec["canvas"])
    model = DiffusionGemmaForBlockDiffusion(cfg).eval()
    randomize(model, gen)
    # the released checkpoint's generation_config.json values
    model.generation_config = DiffusionGemmaGenerationConfig(
        max_new_tokens=256, max_denoising_steps=48, sampler_config={"_cls_name": "EntropyBoundSamplerConfig", "entropy_bound": 0.1}, t_min=0.4, t_max=0.8,
        stability_threshold=1, confidence_threshold=0.005, eos_token_id=[1, 106, 50], pad_token_id=0)
    kw = dict(max_shard_size=spec["shard"]) if spec["shard"] else {}
    dtypes = [("f32", torch.float32), ("bf16", torch.bfloat16)] + ([("f16", torch.float16)] if spec.get("f16") else [])
    if "dtypes" in spec:
        dtypes = [d for d in dtypes if d[0] in spec["dtypes"]]
    for dt, tdt in dtypes:
        path = os.path.join(base, dt)
        model.to(tdt).save_pretrained(path, **kw)
        if spec["old_style"]:
            old_style_config(path, text)
    model.to(torch.float32)
    if not spec.get("refs", True):
        print(f"{name}: checkpoint only ({', '.join(d for d, _ in dtypes)})", file=sys.stderr)
        return

    V, C = text["vocab_size"], spec["canvas"]
    rng = np.random.default_rng(spec["seed"])
    sessions = {}
    for tag, plen in spec["prompts"].items():
        sessions[tag] = (rng.integers(0, V, plen).tolist(), [rng.integers(0, V, C).tolist() for _ in range(3)])

    for dt, tdt in dtypes:
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(os.path.join(base, dt), dtype=tdt).eval()
        out = {}
        set_exact(dt != "f32")   # float32: stock transformers; 16-bit: the exact graph (see set_exact)
        for tag, (prompt, canvases) in sessions.items():
            run_session(ref, tag, prompt, canvases, out, tdt)
        set_exact(False)
        if dt != "f32":   # stock torch kernels, for the size of the reference's own noise
            stock = {}
            for tag, (prompt, canvases) in sessions.items():
                run_session(ref, tag, prompt, canvases, stock, tdt)
            out.update({"stock." + k: v for k, v in stock.items() if k.endswith(".logits")})
        if spec.get("cli"):
            write_cli_inputs(os.path.join(base, f"cli-{dt}"), out, dt)
        save_file(out, os.path.join(base, f"ref-{dt}.safetensors"),
                  metadata={"transformers": transformers.__version__, "torch": torch.__version__,
                            "experts_implementation": str(ref.config._experts_implementation),
                            "attn_implementation": str(ref.config._attn_implementation)})
        print(f"{name}/{dt}: {len(out)} reference tensors; experts={ref.config._experts_implementation} "
              f"attn={ref.config._attn_implementation}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", default=None, help="build only this configuration")
    args = ap.parse_args()
    torch.set_num_threads(1)   # deterministic CPU reductions
    for spec in CONFIGS:
        if args.only and spec["name"] != args.only:
            continue
        build(spec, args.out)


if __name__ == "__main__":
    main()
