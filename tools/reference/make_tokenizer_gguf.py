#!/usr/bin/env python3
"""The small fixture tokenizer (tests/fixtures/tokenizer/small/tokenizer.json) written as GGUF tokenizer
metadata the way llama.cpp's converter writes a "gemma4" tokenizer (tokenizer.ggml.model "gemma4",
tokens, token_type 1 normal / 3 control / 4 user-defined / 6 byte, "A B" merges, special ids), into
tests/fixtures/tokenizer/small-gguf/tokenizer.gguf (no tensors). The C test encodes the small corpus with
it and with the tokenizer.json and demands identical results.

Usage:  python3 tools/reference/make_tokenizer_gguf.py
"""
import json
import os
import re

import gguf

HERE = os.path.dirname(os.path.abspath(__file__))
FIX = os.path.join(HERE, "..", "..", "tests", "fixtures", "tokenizer")


def main():
    tj = json.load(open(os.path.join(FIX, "small", "tokenizer.json"), encoding="utf-8"))
    vocab = tj["model"]["vocab"]
    n = max(vocab.values()) + 1
    tokens = [""] * n
    for piece, i in vocab.items():
        tokens[i] = piece
    types = [1] * n
    for i, piece in enumerate(tokens):
        if re.fullmatch(r"<0x[0-9A-F]{2}>", piece):
            types[i] = 6
    for a in tj["added_tokens"]:
        types[a["id"]] = 3 if a["special"] else 4
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    out_dir = os.path.join(FIX, "small-gguf")
    os.makedirs(out_dir, exist_ok=True)
    w = gguf.GGUFWriter(os.path.join(out_dir, "tokenizer.gguf"), "diffusion-gemma")
    w.add_tokenizer_model("gemma4")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(vocab["<bos>"])
    w.add_eos_token_id(vocab["<eos>"])
    w.add_unk_token_id(vocab["<unk>"])
    w.add_pad_token_id(vocab["<pad>"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"{out_dir}/tokenizer.gguf: {n} tokens, {len(merges)} merges, gguf {gguf.__version__ if hasattr(gguf, '__version__') else ''}")


if __name__ == "__main__":
    main()
