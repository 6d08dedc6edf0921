#!/usr/bin/env python3
"""make_gguf_fixtures.py - GGUF fixtures for tests/test_gguf.c, written with PyPI gguf's GGUFWriter.

1. tests/fixtures/gguf/kv_all.gguf, kv_align64.gguf: every metadata value type (scalars, arrays of every
   element type, arrays of strings, empty arrays, UTF-8) and tensors of several types and ranks. Each
   quantized tensor T has a sibling "T.ref" (F32) holding gguf.quants.dequantize of its bytes.

2. tests/fixtures/gguf/tiny-*.gguf: the tiny checkpoints of make_fixtures.py converted the way llama.cpp
   PR #24423 converts DiffusionGemma (conversion/diffusion_gemma.py on Gemma4Model / Gemma3Model /
   TextModel of the warshanks/llama.cpp fork at cc727430): the same tensor names, ggml shapes, tensor
   type rules and metadata keys, written in the converter's order. See ARCHITECTURE.md, "GGUF tensor
   names", for the table. The tiny checkpoints carry no tokenizer, so a small synthetic Gemma-4-style
   vocabulary is written (the real special-token ids that fit, byte tokens <0x00>..<0xFF> at 238..493,
   then synthetic pieces and their merges) with a placeholder chat template.

   tiny-k-q4_k_m.gguf is a seeded random model (no HF checkpoint) with widths that are multiples of 256,
   so the K-quant mix holds real Q4_K / Q6_K blocks; its K-quant bytes come from ggml (--ggml-lib).

3. If --dgemma-test is given, the C writer's copy of kv_all.gguf (`dgemma_test --gguf-copy`) is written
   to tests/fixtures/gguf/c_written.gguf and read back here with gguf.GGUFReader.

Run: python3 tools/reference/make_gguf_fixtures.py --ggml-lib /path/libggml-base.so [--dgemma-test build/dgemma_test]
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf.constants import GGML_QUANT_SIZES

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")
OUT = os.path.join(FIX, "gguf")
ARCH = "diffusion-gemma"

# LlamaFileType values written to general.file_type
FT_ALL_F32, FT_MOSTLY_F16, FT_MOSTLY_Q8_0, FT_MOSTLY_Q4_K_M, FT_MOSTLY_BF16 = 0, 1, 7, 15, 32


# ============================================================ 1. every kv type

def kv_fixture(path, alignment=None):
    w = gguf.GGUFWriter(path, "test-arch")
    if alignment:
        w.add_custom_alignment(alignment)
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -100)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4000000000)
    w.add_int32("t.i32", -2000000000)
    w.add_uint64("t.u64", 18000000000000000000)
    w.add_int64("t.i64", -9000000000000000000)
    w.add_float32("t.f32", 3.25)
    w.add_float64("t.f64", -1.0e300)
    w.add_bool("t.true", True)
    w.add_bool("t.false", False)
    w.add_string("t.str", "héllo ▁wörld")
    w.add_string("t.empty_str", "")
    w.add_key_value("t.arr_u8", [1, 2, 255], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT8)
    w.add_key_value("t.arr_i8", [-1, 2, -128], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT8)
    w.add_key_value("t.arr_u16", [1, 65535], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT16)
    w.add_key_value("t.arr_i16", [-32768, 7], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT16)
    w.add_key_value("t.arr_u32", [0, 4294967295], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT32)
    w.add_array("t.arr_i32", [8, 8, 2, -5])
    w.add_key_value("t.arr_u64", [1, 2**64 - 1], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.UINT64)
    w.add_key_value("t.arr_i64", [-(2**63), 5], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.INT64)
    w.add_array("t.arr_f32", [0.5, -1.5, 1e-30])
    w.add_key_value("t.arr_f64", [0.1, -2.0], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT64)
    w.add_array("t.arr_bool", [True, False, True])
    w.add_array("t.arr_str", ["a", "", "<0x0A>", "▁the", "\n\n"])
    rng = np.random.default_rng(7)
    # tensors: values by formula for the float types, random for the quantized ones (+ .ref dequant)
    w.add_tensor("f32_2d", (np.arange(15, dtype=np.float32) * 0.5 - 3).reshape(3, 5))
    w.add_tensor("f32_1d", np.array([1.0, -2.0, 3.5], dtype=np.float32))
    w.add_tensor("f16_3d", (np.arange(24, dtype=np.float32) / 8).astype(np.float16).reshape(2, 3, 4))
    bf = gguf.quants.quantize((np.arange(32, dtype=np.float32) - 16) * 0.25, QT.BF16)
    w.add_tensor("bf16_1d", bf, raw_dtype=QT.BF16)
    w.add_tensor("f32_4d", np.arange(2 * 1 * 3 * 2, dtype=np.float32).reshape(2, 1, 3, 2))
    for name, qt, shape in (("q8_0", QT.Q8_0, (2, 64)), ("q4_0", QT.Q4_0, (1, 32)), ("q5_1", QT.Q5_1, (3, 32))):
        q = gguf.quants.quantize(rng.standard_normal(shape).astype(np.float32), qt)
        w.add_tensor(name, q, raw_dtype=qt)
        w.add_tensor(name + ".ref", gguf.quants.dequantize(q, qt))
    for name, qt, rows in (("q4_k", QT.Q4_K, 2), ("q6_k", QT.Q6_K, 1)):
        blk, size = GGML_QUANT_SIZES[qt]
        raw = rng.integers(0, 256, (rows, size), dtype=np.uint8)
        for off in ((0, 2) if qt == QT.Q4_K else (208,)):
            raw[:, off:off + 2] = np.float16(0.01).reshape(1).view(np.uint8)
        w.add_tensor(name, raw, raw_dtype=qt)
        w.add_tensor(name + ".ref", gguf.quants.dequantize(raw, qt))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ============================================================ 2. DiffusionGemma conversion

def load_checkpoint(d):
    """HF tensors as float32 numpy (the converter casts every non-f16/f32 dtype to float32)."""
    from safetensors import safe_open
    files = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    out = {}
    for fn in files:
        with safe_open(os.path.join(d, fn), "pt") as f:
            for k in f.keys():
                t = f.get_tensor(k)
                out[k] = t.float().numpy() if str(t.dtype) not in ("torch.float16", "torch.float32") else t.numpy()
    return out


def text_config(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    tc = dict(cfg["text_config"])
    tc["canvas_length"] = cfg["canvas_length"]
    L = tc["num_hidden_layers"]
    lt = tc.get("layer_types") or ["full_attention" if (i + 1) % 6 == 0 else "sliding_attention" for i in range(L)]
    tc["layer_types"] = lt
    # the full-attention head dim / kv heads: global_head_dim + num_global_key_value_heads (released
    # config) or per_layer_config (newer transformers); the converter reads the former
    plc = tc.get("per_layer_config") or {}
    full = [i for i in range(L) if lt[i] == "full_attention"]
    if tc.get("global_head_dim") is None:
        tc["global_head_dim"] = plc[str(full[0])]["head_dim"] if full else tc["head_dim"]
    if tc.get("num_global_key_value_heads") is None:
        tc["num_global_key_value_heads"] = plc[str(full[0])]["num_key_value_heads"] if full else tc["num_key_value_heads"]
    gen = os.path.join(d, "generation_config.json")
    tc["gen"] = json.load(open(gen)) if os.path.exists(gen) else {}
    return tc


# HF (model.decoder.* prefix removed) -> GGUF, per layer
LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "post_feedforward_layernorm_1.weight": "post_ffw_norm_1.weight",
    "pre_feedforward_layernorm_2.weight": "pre_ffw_norm_2.weight",
    "router.proj.weight": "ffn_gate_inp.weight",
    "router.scale": "ffn_gate_inp.scale",
    "router.per_expert_scale": "ffn_down_exps.scale",
    "experts.gate_up_proj": "ffn_gate_up_exps.weight",
    "experts.down_proj": "ffn_down_exps.weight",
    "post_feedforward_layernorm_2.weight": "post_ffw_norm_2.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
    "layer_scalar": "layer_output_scale.weight",
}
GLOBAL_MAP = {
    "model.decoder.embed_tokens.weight": "token_embd.weight",
    "model.decoder.norm.weight": "output_norm.weight",
    "model.decoder.self_conditioning.pre_norm.weight": "self_cond_pre_norm.weight",
    "model.decoder.self_conditioning.gate_proj.weight": "self_cond_gate.weight",
    "model.decoder.self_conditioning.up_proj.weight": "self_cond_up.weight",
    "model.decoder.self_conditioning.down_proj.weight": "self_cond_down.weight",
}


def gguf_name(hf):
    """The GGUF name of an HF tensor, or None for the tensors the converter drops (vision, lm_head)."""
    if hf in GLOBAL_MAP:
        return GLOBAL_MAP[hf]
    for pre, fmt in (("model.decoder.layers.", "blk.{}.{}"), ("model.encoder.language_model.layers.", None)):
        if hf.startswith(pre):
            bid, rest = hf[len(pre):].split(".", 1)
            if fmt is None:
                return f"blk.{bid}.enc_layer_output_scale.weight" if rest == "layer_scalar" else None
            return fmt.format(bid, LAYER_MAP[rest])
    return None


def rope_freqs(tc):
    """Gemma4Model.generate_extra_tensors: 1.0 for the rotated pairs of the full layers, 1e30 for the rest."""
    rp = tc["rope_parameters"]["full_attention"]
    assert rp["rope_type"] == "proportional"
    hd = tc["global_head_dim"]
    n_rot = int(hd * rp["partial_rotary_factor"] / 2)
    return np.array([1.0] * n_rot + [1e30] * (hd // 2 - n_rot), dtype=np.float32)


class Ggml:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        self.lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                                 ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]

    def quantize(self, x, qt):
        blk, size = GGML_QUANT_SIZES[qt]
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = x.size // x.shape[-1]
        out = np.zeros((*x.shape[:-1], x.shape[-1] // blk * size), dtype=np.uint8)
        n = self.lib.ggml_quantize_chunk(int(qt), x.ctypes.data, out.ctypes.data, 0, rows, x.shape[-1], None)
        assert n == out.size
        return out


def base_type(gname, n_dims):
    """The converter's rule (base.py prepare_tensors): F32 for 1-D tensors, *_norm.weight, the router
    (ffn_gate_inp.weight) and names not ending in .weight; None = the file type's type."""
    if n_dims <= 1 or gname.endswith("_norm.weight") or gname.endswith(".ffn_gate_inp.weight") or not gname.endswith(".weight"):
        return QT.F32
    return None


def q4_k_m_type(gname, tc):
    """A Q4_K_M-like mix (simplified from llama.cpp's llama-quant.cpp; see ARCHITECTURE.md): token_embd
    (the tied output) Q6_K; attn_v and ffn_down / ffn_down_exps on the "more bits" layers Q6_K; every
    other matrix Q4_K; then the fallback for rows not a multiple of 256: Q4_K -> Q5_0, Q6_K -> Q8_0,
    and F16 if the row is not a multiple of 32 either."""
    L = tc["num_hidden_layers"]
    more = lambda i: i < L // 8 or i >= 7 * L // 8 or (i - L // 8) % 3 == 2
    t = QT.Q4_K
    if gname == "token_embd.weight":
        t = QT.Q6_K
    elif gname.startswith("blk."):
        i = int(gname.split(".")[1])
        if (gname.endswith(".attn_v.weight") or gname.endswith(".ffn_down.weight") or gname.endswith(".ffn_down_exps.weight")) and more(i):
            t = QT.Q6_K
    return t


def pick_type(gname, data, ftype, tc):
    bt = base_type(gname, data.ndim)
    if bt is not None:
        return bt
    ne0 = data.shape[-1]
    if ftype == FT_ALL_F32:
        return QT.F32
    if ftype == FT_MOSTLY_BF16:
        return QT.BF16
    if ftype == FT_MOSTLY_Q8_0:
        return QT.Q8_0 if ne0 % 32 == 0 else QT.F16   # gguf-py raises QuantError -> the converter's F16
    t = q4_k_m_type(gname, tc)
    if ne0 % 256:
        t = {QT.Q4_K: QT.Q5_0, QT.Q6_K: QT.Q8_0}[t]
        if ne0 % 32:
            t = QT.F16
    return t


def encode(data, qt, ggml):
    if qt == QT.F32:
        return data.astype(np.float32)
    if qt == QT.F16:
        return data.astype(np.float16)
    if qt in (QT.BF16, QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1):
        return gguf.quants.quantize(data.astype(np.float32), qt)
    if ggml is None:
        sys.exit(f"{qt.name} needs --ggml-lib")
    return ggml.quantize(data, qt)


# ---------------------------------------------------------------- synthetic Gemma-4-style vocabulary

SPECIAL = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 46: "<|tool>", 47: "<tool|>",
           48: "<|tool_call>", 49: "<tool_call|>", 50: "<|tool_response>", 51: "<tool_response|>", 52: '<|"|>',
           98: "<|think|>", 100: "<|channel>", 101: "<channel|>", 105: "<|turn>", 106: "<turn|>"}
TEXT = {107: "\n", 108: "\n\n", 109: "\n\n\n"}
VISIBLE = {"<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>", '<|"|>'}
# token types (gguf.TokenType): NORMAL 1, CONTROL 3, USER_DEFINED 4, BYTE 6


def vocabulary(n):
    """n tokens, their types and merges: the special ids of Gemma 4 that fit, byte tokens at 238..493,
    single characters, then merged pieces (each the concatenation of two earlier pieces)."""
    tokens = [None] * n
    types = [1] * n
    for i, s in SPECIAL.items():
        if i < n:
            tokens[i] = s
            types[i] = 4 if s in VISIBLE else 3
    for i, s in TEXT.items():
        if i < n:
            tokens[i] = s
    for b in range(256):
        if 238 + b < n:
            tokens[238 + b] = f"<0x{b:02X}>"
            types[238 + b] = 6
    chars = list("▁abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()[]{}=+*/\\<>_@#$%&|~^`éüöäßñ")
    free = [i for i in range(n) if tokens[i] is None]
    pieces, merges = [], []
    for ch in chars:
        if not free:
            break
        tokens[free.pop(0)] = ch
        pieces.append(ch)
    words = ["▁the", "▁a", "▁of", "▁and", "▁to", "▁in", "▁is", "▁that", "▁it", "▁for", "ing", "ed", "er", "on",
             "▁diffusion", "▁gemma", "▁model", "▁token", "▁canvas", "▁hello", "▁world"]
    have = set(pieces)
    # words first (built left to right), then pairs of single characters in a fixed order
    for w in words:
        for end in range(2, len(w) + 1):
            p, left, right = w[:end], w[:end - 1], w[end - 1]
            if free and p not in have and left in have and right in have:
                tokens[free.pop(0)] = p
                have.add(p)
                merges.append(f"{left} {right}")
    P = len(pieces)
    for k in range(P * P):
        if not free:
            break
        a, b = pieces[k % P], pieces[(k // P + 3 * k) % P]
        if a + b not in have:
            tokens[free.pop(0)] = a + b
            have.add(a + b)
            merges.append(f"{a} {b}")
    for i in range(n):   # fill any hole left (cannot happen, kept for safety)
        if tokens[i] is None:
            tokens[i] = f"<unused{i}>"
    return tokens, types, merges


# A placeholder chat template in the Gemma 4 turn format (not Google's template text).
CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
                 "{{ m['content'] | trim }}<turn|>\n{% endfor %}{% if add_generation_prompt %}<|turn>model\n{% endif %}")


def write_model(path, name, tc, tensors, ftype, ggml, log):
    """tensors: list of (hf_name or None, gguf_name, float32 ndarray) in converter order."""
    L = tc["num_hidden_layers"]
    lt = tc["layer_types"]
    swa = [t == "sliding_attention" for t in lt]
    w = gguf.GGUFWriter(path, ARCH)
    # ModelBase.prepare_metadata: type, then the model card metadata (here just the name)
    w.add_type("model")
    w.add_name(name)
    # TextModel.set_gguf_parameters
    w.add_block_count(L)
    w.add_context_length(tc["max_position_embeddings"])
    w.add_embedding_length(tc["hidden_size"])
    w.add_feed_forward_length(tc["intermediate_size"])
    w.add_head_count(tc["num_attention_heads"])
    w.add_head_count_kv(tc["num_key_value_heads"])
    w.add_rope_freq_base(tc["rope_parameters"]["full_attention"]["rope_theta"])
    w.add_rope_freq_base_swa(tc["rope_parameters"]["sliding_attention"]["rope_theta"])
    w.add_layer_norm_rms_eps(tc["rms_norm_eps"])
    w.add_expert_count(tc["num_experts"])
    w.add_expert_used_count(tc["top_k_experts"])
    w.add_key_length(tc["head_dim"])
    w.add_value_length(tc["head_dim"])
    w.add_file_type(ftype)
    # Gemma3Model.set_gguf_parameters (context_length, head_count, eps, key/value_length and freq_base
    # are written again with the same values: GGUFWriter keeps the first position)
    if tc.get("final_logit_softcapping"):
        w.add_final_logit_softcapping(tc["final_logit_softcapping"])
    w.add_sliding_window(tc["sliding_window"])
    # Gemma4Model.set_gguf_parameters
    w.add_shared_kv_layers(0)
    w.add_embedding_length_per_layer_input(0)
    w.add_sliding_window_pattern(swa)
    w.add_key_length(tc["global_head_dim"])          # overwrites in place
    w.add_value_length(tc["global_head_dim"])
    w.add_key_length_swa(tc["head_dim"])
    w.add_value_length_swa(tc["head_dim"])
    w.add_expert_feed_forward_length(tc["moe_intermediate_size"])
    w.add_head_count_kv([tc["num_key_value_heads"] if s else tc["num_global_key_value_heads"] for s in swa])
    w.add_rope_dimension_count(tc["global_head_dim"])
    w.add_rope_dimension_count_swa(int(tc["head_dim"] * 1.0))
    # DiffusionGemmaModel.set_gguf_parameters
    w.add_causal_attention(False)
    w.add_uint32("diffusion.canvas_length", tc["canvas_length"])
    g = tc["gen"]
    if "max_denoising_steps" in g:
        w.add_uint32("diffusion.eb_max_steps", int(g["max_denoising_steps"]))
    if "t_min" in g:
        w.add_float32("diffusion.eb_t_min", float(g["t_min"]))
    if "t_max" in g:
        w.add_float32("diffusion.eb_t_max", float(g["t_max"]))
    if "entropy_bound" in g.get("sampler_config", {}):
        w.add_float32("diffusion.eb_entropy_bound", float(g["sampler_config"]["entropy_bound"]))
    if "stability_threshold" in g:
        w.add_uint32("diffusion.eb_stability_threshold", int(g["stability_threshold"]))
    if "confidence_threshold" in g:
        w.add_float32("diffusion.eb_confidence_threshold", float(g["confidence_threshold"]))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # Gemma4Model.set_vocab (+ SpecialVocab.add_to_gguf)
    toks, types, merges = vocabulary(tc["vocab_size"])
    w.add_tokenizer_model("gemma4")
    w.add_token_list(toks)
    w.add_token_scores([-1000.0] * len(toks))
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_mask_token_id(4)
    w.add_chat_template(CHAT_TEMPLATE)
    w.add_add_space_prefix(False)
    w.add_add_bos_token(True)
    types_used = {}
    for hf, gname, data in tensors:
        qt = pick_type(gname, data, ftype, tc)
        enc = encode(data, qt, ggml)
        w.add_tensor(gname, enc, raw_dtype=qt if enc.dtype == np.uint8 else None)
        types_used[gname] = qt.name
        log.append((gname, hf or "(generated)", list(reversed(data.shape)), qt.name))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return types_used


def convert(model_dir, out, name, ftype, ggml, logs):
    tc = text_config(model_dir)
    hf = load_checkpoint(model_dir)
    tensors = [(None, "rope_freqs.weight", rope_freqs(tc))]
    for k in sorted(hf):
        g = gguf_name(k)
        if g is not None:
            tensors.append((k, g, hf[k]))
    log = []
    write_model(out, name, tc, tensors, ftype, ggml, log)
    logs[os.path.basename(out)] = log


def tiny_k(out, ggml, logs):
    """Seeded random model with widths that are multiples of 256 (no HF checkpoint): hidden 256, dense and
    self-conditioning MLP 256, 2 experts of width 256 (top 2), 2 layers (sliding: head dim 128, full: 256), one
    query head and one KV head, vocab 512."""
    rng = np.random.default_rng(256)
    H, I, E, Ie, V = 256, 256, 2, 256, 512
    tc = dict(num_hidden_layers=2, layer_types=["sliding_attention", "full_attention"], hidden_size=H,
              intermediate_size=I, moe_intermediate_size=Ie, num_experts=E, top_k_experts=2, num_attention_heads=1,
              num_key_value_heads=1, num_global_key_value_heads=1, head_dim=128, global_head_dim=256,
              max_position_embeddings=131072, rms_norm_eps=1e-6, sliding_window=8, canvas_length=16,
              vocab_size=V, final_logit_softcapping=30.0,
              rope_parameters={"full_attention": {"rope_type": "proportional", "rope_theta": 1e6, "partial_rotary_factor": 0.25},
                               "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
              gen={"max_denoising_steps": 48, "t_min": 0.4, "t_max": 0.8, "sampler_config": {"entropy_bound": 0.1},
                   "stability_threshold": 1, "confidence_threshold": 0.005})
    mat = lambda *s: (rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32)
    vec = lambda n: (1 + 0.1 * rng.standard_normal(n)).astype(np.float32)
    t = [(None, "rope_freqs.weight", rope_freqs(tc)), (None, "token_embd.weight", mat(V, H)),
         (None, "output_norm.weight", vec(H))]
    for i, full in enumerate([False, True]):
        d = 256 if full else 128
        p = f"blk.{i}."
        t += [(None, p + "attn_norm.weight", vec(H)), (None, p + "attn_q.weight", mat(d, H)),
              (None, p + "attn_k.weight", mat(d, H))]
        if not full:
            t.append((None, p + "attn_v.weight", mat(d, H)))
        t += [(None, p + "attn_output.weight", mat(H, d)), (None, p + "attn_q_norm.weight", vec(d)),
              (None, p + "attn_k_norm.weight", vec(d)), (None, p + "post_attention_norm.weight", vec(H)),
              (None, p + "ffn_norm.weight", vec(H)), (None, p + "ffn_gate.weight", mat(I, H)),
              (None, p + "ffn_up.weight", mat(I, H)), (None, p + "ffn_down.weight", mat(H, I)),
              (None, p + "post_ffw_norm_1.weight", vec(H)), (None, p + "pre_ffw_norm_2.weight", vec(H)),
              (None, p + "ffn_gate_inp.weight", mat(E, H)), (None, p + "ffn_gate_inp.scale", vec(H)),
              (None, p + "ffn_down_exps.scale", vec(E)), (None, p + "ffn_gate_up_exps.weight", mat(E, 2 * Ie, H)),
              (None, p + "ffn_down_exps.weight", mat(E, H, Ie)), (None, p + "post_ffw_norm_2.weight", vec(H)),
              (None, p + "post_ffw_norm.weight", vec(H)), (None, p + "layer_output_scale.weight", vec(1)),
              (None, p + "enc_layer_output_scale.weight", vec(1))]
    t += [(None, "self_cond_pre_norm.weight", vec(H)), (None, "self_cond_gate.weight", mat(I, H)),
          (None, "self_cond_up.weight", mat(I, H)), (None, "self_cond_down.weight", mat(H, I))]
    log = []
    write_model(out, "tiny-k", tc, t, FT_MOSTLY_Q4_K_M, ggml, log)
    logs[os.path.basename(out)] = log


# ============================================================ 3. a file written by the C writer

def check_c_written(dgemma_test):
    src = os.path.join(OUT, "kv_all.gguf")
    dst = os.path.join(OUT, "c_written.gguf")
    subprocess.run([dgemma_test, "--gguf-copy", src, dst], check=True)
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    ka = {f.name: f.contents() for f in a.fields.values() if not f.name.startswith("GGUF.")}
    kb = {f.name: f.contents() for f in b.fields.values() if not f.name.startswith("GGUF.")}
    assert ka == kb, "kv differ"
    ta = {t.name: (t.tensor_type, list(t.shape), bytes(t.data.tobytes())) for t in a.tensors}
    tb = {t.name: (t.tensor_type, list(t.shape), bytes(t.data.tobytes())) for t in b.tensors}
    assert ta == tb, "tensors differ"
    print(f"gguf.GGUFReader reads {dst}: {len(kb)} keys, {len(tb)} tensors, identical to kv_all.gguf", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ggml-lib", default=os.environ.get("GGML_LIB"))
    ap.add_argument("--dgemma-test", help="build/dgemma_test, to write and check c_written.gguf")
    args = ap.parse_args()
    ggml = Ggml(args.ggml_lib) if args.ggml_lib else None
    os.makedirs(OUT, exist_ok=True)
    kv_fixture(os.path.join(OUT, "kv_all.gguf"))
    kv_fixture(os.path.join(OUT, "kv_align64.gguf"), alignment=64)
    logs = {}
    jobs = [("tiny-a/bf16", "tiny-a-bf16.gguf", FT_MOSTLY_BF16), ("tiny-a/f32", "tiny-a-q8_0.gguf", FT_MOSTLY_Q8_0),
            ("tiny-a/f32", "tiny-a-q4_k_m.gguf", FT_MOSTLY_Q4_K_M), ("tiny-b/f32", "tiny-b-q8_0.gguf", FT_MOSTLY_Q8_0),
            ("tiny-c/f32", "tiny-c-f32.gguf", FT_ALL_F32)]
    for src, dst, ft in jobs:
        convert(os.path.join(FIX, src), os.path.join(OUT, dst), src.split("/")[0], ft, ggml, logs)
    if ggml is not None:
        tiny_k(os.path.join(OUT, "tiny-k-q4_k_m.gguf"), ggml, logs)
    with open(os.path.join(OUT, "tensors.txt"), "w") as f:
        f.write("# file tensor hf_source ne(ggml order) type  -- written by make_gguf_fixtures.py\n")
        for fn in sorted(logs):
            for g, hf, ne, ty in logs[fn]:
                f.write(f"{fn} {g} {hf} {','.join(map(str, ne))} {ty}\n")
    if args.dgemma_test:
        check_c_written(args.dgemma_test)
    for fn in sorted(os.listdir(OUT)):
        print(f"{fn}: {os.path.getsize(os.path.join(OUT, fn))} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
