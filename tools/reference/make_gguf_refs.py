#!/usr/bin/env python3
"""Reference logits for the quantized tiny GGUF fixtures: transformers in float32 on the dequantized
weights (the "float32 reference run on the dequantised weights" the engine's quantized path is held to).

Usage:  python3 tools/reference/make_gguf_refs.py [--fixtures tests/fixtures]

For each quantized GGUF made from a tiny checkpoint (make_gguf_fixtures.py), every tensor is
dequantized with PyPI gguf (gguf.quants.dequantize, bit-exact with ggml), mapped back to its
Hugging Face name, loaded into the checkpoint's float32 transformers model, and the "short" session of
make_fixtures.py (enc0, dec0, dec1 self-conditioned on dec0, enc1 = commit, dec2) is run on the exact
graph. Written: <fixtures>/gguf/ref-<file>.safetensors with the session's inputs and the three calls'
logits.
"""
import argparse
import os
import sys
import tempfile

import numpy as np
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from safetensors.numpy import save_file
from transformers import DiffusionGemmaForBlockDiffusion

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_fixtures as mf  # noqa: E402

FILES = [("tiny-a-q8_0.gguf", "tiny-a"), ("tiny-a-q4_k_m.gguf", "tiny-a"), ("tiny-b-q8_0.gguf", "tiny-b")]

LAYER = {"attn_norm.weight": "input_layernorm.weight", "attn_q.weight": "self_attn.q_proj.weight",
         "attn_k.weight": "self_attn.k_proj.weight", "attn_v.weight": "self_attn.v_proj.weight",
         "attn_output.weight": "self_attn.o_proj.weight", "attn_q_norm.weight": "self_attn.q_norm.weight",
         "attn_k_norm.weight": "self_attn.k_norm.weight", "post_attention_norm.weight": "post_attention_layernorm.weight",
         "ffn_norm.weight": "pre_feedforward_layernorm.weight", "ffn_gate.weight": "mlp.gate_proj.weight",
         "ffn_up.weight": "mlp.up_proj.weight", "ffn_down.weight": "mlp.down_proj.weight",
         "post_ffw_norm_1.weight": "post_feedforward_layernorm_1.weight",
         "pre_ffw_norm_2.weight": "pre_feedforward_layernorm_2.weight", "ffn_gate_inp.weight": "router.proj.weight",
         "ffn_gate_inp.scale": "router.scale", "ffn_down_exps.scale": "router.per_expert_scale",
         "ffn_gate_up_exps.weight": "experts.gate_up_proj", "ffn_down_exps.weight": "experts.down_proj",
         "post_ffw_norm_2.weight": "post_feedforward_layernorm_2.weight",
         "post_ffw_norm.weight": "post_feedforward_layernorm.weight", "layer_output_scale.weight": "layer_scalar"}
GLOBAL = {"token_embd.weight": "model.decoder.embed_tokens.weight", "output_norm.weight": "model.decoder.norm.weight",
          "self_cond_pre_norm.weight": "model.decoder.self_conditioning.pre_norm.weight",
          "self_cond_gate.weight": "model.decoder.self_conditioning.gate_proj.weight",
          "self_cond_up.weight": "model.decoder.self_conditioning.up_proj.weight",
          "self_cond_down.weight": "model.decoder.self_conditioning.down_proj.weight"}


def hf_name(g):
    if g in GLOBAL:
        return GLOBAL[g]
    if g.startswith("blk."):
        _, li, rest = g.split(".", 2)
        if rest == "enc_layer_output_scale.weight":
            return f"model.encoder.language_model.layers.{li}.layer_scalar"
        return f"model.decoder.layers.{li}.{LAYER[rest]}"
    return None   # rope_freqs (generated)


def dequantized(path):
    out = {}
    for t in GGUFReader(path).tensors:
        name = hf_name(t.name)
        if name is None:
            continue
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        out[name] = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(shape)
    return out


def reference(spec, fixtures, weights):
    base = os.path.join(fixtures, spec["name"])
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(os.path.join(base, "f32"), dtype=torch.float32).eval()
    sd = model.state_dict()
    with torch.no_grad():
        for k, v in weights.items():
            assert tuple(sd[k].shape) == v.shape, (k, sd[k].shape, v.shape)
            sd[k].copy_(torch.from_numpy(v))
    need = [k for k in sd if k.startswith("model.decoder.") or k.endswith(".layer_scalar")]
    assert not [k for k in need if k not in weights], "tensors the GGUF does not provide"
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        ref = DiffusionGemmaForBlockDiffusion.from_pretrained(tmp, dtype=torch.float32).eval()
        V, C = spec["text"]["vocab_size"], spec["canvas"]
        rng = np.random.default_rng(spec["seed"])   # the same draws as make_fixtures.build
        sessions = {tag: (rng.integers(0, V, n).tolist(), [rng.integers(0, V, C).tolist() for _ in range(3)])
                    for tag, n in spec["prompts"].items()}
        out = {}
        mf.set_exact(True)
        prompt, canvases = sessions["short"]
        mf.run_session(ref, "short", prompt, canvases, out, torch.float32)
        mf.set_exact(False)
    keep = ["short.prompt", "short.canvas0", "short.canvas1", "short.canvas2", "short.commit",
            "short.dec0.logits", "short.dec1.logits", "short.dec2.logits"]
    return {k: out[k] for k in keep}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    for fname, cfg in FILES:
        spec = next(s for s in mf.CONFIGS if s["name"] == cfg)
        path = os.path.join(args.fixtures, "gguf", fname)
        ref = reference(spec, args.fixtures, dequantized(path))
        out = os.path.join(args.fixtures, "gguf", "ref-" + fname.replace(".gguf", ".safetensors"))
        save_file(ref, out, metadata={"source": fname, "torch": torch.__version__})
        print(f"{out}: {len(ref)} tensors", file=sys.stderr)


if __name__ == "__main__":
    main()
