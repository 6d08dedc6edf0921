#!/usr/bin/env python3
"""check_quantize.py - PyPI gguf reads what `dgemma quantize` / `dgemma synth` write, and the files agree
with make_gguf_fixtures.py's conversions of the same checkpoints.

For each case the script runs dgemma, opens the output with gguf.GGUFReader, and compares it with the
fixture: metadata keys (name, value type, value), the tensor list (name, ggml type, shape) and the tensor
bytes. Expected differences are listed per case and everything else must match:

  tiny-b Q8_0 (--synthetic-vocab)  only general.size_label is extra (the fixture script does not write it)
  tiny-a Q8_0 / BF16               plus the tokenizer: dgemma takes the checkpoint's own tokenizer.json (the
                                   fixtures carry a synthetic vocabulary), so tokens / types / merges
                                   differ, tokenizer_config.json adds add_eos_token and has no chat template
  tiny-c F32 (sharded)             size label; tensors in the converter's per-shard order

It also checks a synth file (every tensor readable, dequantizable by gguf.quants where supported), and a
synth Hugging Face directory (sharded): transformers loads it with no missing or unexpected text
weights, and its logits (float32) match `dgemma forward --act f32` on the same ids.

Run: make && python3 tools/reference/check_quantize.py [--dgemma ./dgemma]
"""
import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
FIX = os.path.join(ROOT, "tests", "fixtures")

TOKENIZER = {"tokenizer.ggml.tokens", "tokenizer.ggml.token_type", "tokenizer.ggml.merges"}


def fields(r):
    return {f.name: (f.types, f.contents()) for f in r.fields.values() if not f.name.startswith("GGUF.")}


def compare(mine, ref, extra=(), missing=(), differ=()):
    a, b = gguf.GGUFReader(mine), gguf.GGUFReader(ref)
    fa, fb = fields(a), fields(b)
    problems = []
    for k in fa:
        if k not in fb and k not in extra:
            problems.append(f"key {k} only in {mine}")
    for k in fb:
        if k not in fa and k not in missing:
            problems.append(f"key {k} missing")
    for k in set(fa) & set(fb):
        if fa[k] != fb[k] and k not in differ:
            problems.append(f"key {k}: {str(fa[k][1])[:60]} != {str(fb[k][1])[:60]}")
    ta = {t.name: t for t in a.tensors}
    tb = {t.name: t for t in b.tensors}
    if set(ta) != set(tb):
        problems.append(f"tensor sets differ: {sorted(set(ta) ^ set(tb))[:5]}")
    same = 0
    for n in set(ta) & set(tb):
        x, y = ta[n], tb[n]
        if x.tensor_type != y.tensor_type or list(x.shape) != list(y.shape):
            problems.append(f"tensor {n}: {x.tensor_type.name}{list(x.shape)} != {y.tensor_type.name}{list(y.shape)}")
        elif x.data.tobytes() == y.data.tobytes():
            same += 1
    print(f"{os.path.basename(mine)} vs {os.path.basename(ref)}: {len(fa)} keys, {len(ta)} tensors, {same} byte-identical, "
          f"{len(problems)} unexpected differences", file=sys.stderr)
    for p in problems[:20]:
        print("   ", p, file=sys.stderr)
    return not problems and same == len(ta)


def check_synth_hf(dgemma, tmp):
    import torch
    from transformers import DiffusionGemmaForBlockDiffusion
    from transformers.cache_utils import DynamicCache
    d = f"{tmp}/hf"
    subprocess.run([dgemma, "synth", d, "--shape", "tiny", "--seed", "2", "--max-shard-size", "1MB"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prompt, canvas = [2, 5, 9, 11, 3], [(53 * i + 7) % 512 for i in range(16)]
    with open(f"{tmp}/p.txt", "w") as f:
        f.write(" ".join(map(str, prompt)))
    with open(f"{tmp}/c.txt", "w") as f:
        f.write(" ".join(map(str, canvas)))
    subprocess.run([dgemma, "forward", "--model", d, "--prompt-ids", f"{tmp}/p.txt", "--canvas-ids", f"{tmp}/c.txt",
                    "--out", f"{tmp}/l.npy", "--act", "f32"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m, info = DiffusionGemmaForBlockDiffusion.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    missing = [k for k in info["missing_keys"] if "vision" not in k]
    m.eval()
    with torch.no_grad():
        out = m(input_ids=torch.tensor([prompt]), decoder_input_ids=torch.tensor([canvas]),
                cache=DynamicCache(config=m.config.get_text_config())).logits[0].numpy()
    ref = np.load(f"{tmp}/l.npy")
    rel = float(np.abs(out - ref).max() / np.abs(out).max())
    shards = len([f for f in os.listdir(d) if f.endswith(".safetensors")])
    print(f"synth tiny HF directory ({shards} shards): transformers loads it (missing text weights: {len(missing)}, "
          f"unexpected: {len(info['unexpected_keys'])}); logits vs dgemma forward --act f32: max rel err {rel:.1e}",
          file=sys.stderr)
    return not missing and not info["unexpected_keys"] and rel < 1e-4


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dgemma", default=os.path.join(ROOT, "dgemma"))
    args = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        def run(*a):
            subprocess.run([args.dgemma, *a], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        label = ("general.size_label",)
        run("quantize", f"{FIX}/tiny-b/f32", f"{tmp}/b.gguf", "--type", "Q8_0", "--name", "tiny-b", "--synthetic-vocab")
        ok &= compare(f"{tmp}/b.gguf", f"{FIX}/gguf/tiny-b-q8_0.gguf", extra=label)
        for src, ty, ref in (("tiny-a/f32", "Q8_0", "tiny-a-q8_0"), ("tiny-a/bf16", "BF16", "tiny-a-bf16")):
            out = f"{tmp}/a-{ty}.gguf"
            run("quantize", f"{FIX}/{src}", out, "--type", ty, "--name", "tiny-a")
            ok &= compare(out, f"{FIX}/gguf/{ref}.gguf", extra=label + ("tokenizer.ggml.add_eos_token",),
                          missing=("tokenizer.chat_template",), differ=TOKENIZER)
        run("quantize", f"{FIX}/tiny-c/f32", f"{tmp}/c.gguf", "--type", "F32", "--name", "tiny-c", "--synthetic-vocab")
        ok &= compare(f"{tmp}/c.gguf", f"{FIX}/gguf/tiny-c-f32.gguf", extra=label)
        # a synth file: readable, and gguf-py dequantizes every tensor it has a dequantizer for
        run("synth", f"{tmp}/s.gguf", "--shape", "tiny", "--type", "Q4_K_M", "--seed", "1")
        r = gguf.GGUFReader(f"{tmp}/s.gguf")
        n = 0
        for t in r.tensors:
            d = gguf.quants.dequantize(t.data, t.tensor_type)
            ok &= bool(np.isfinite(d).all())
            n += 1
        print(f"synth tiny Q4_K_M: {len(r.fields)} fields, {n} tensors read and dequantized by gguf-py", file=sys.stderr)
        ok &= check_synth_hf(args.dgemma, tmp)
    print("OK" if ok else "FAILED", file=sys.stderr)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
