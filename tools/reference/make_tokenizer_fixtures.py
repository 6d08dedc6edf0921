#!/usr/bin/env python3
"""Tokenizer fixtures: expected ids and decodes from PyPI `tokenizers` (the reference).

Writes tests/fixtures/tokenizer/:
  small/tokenizer.json, small/tokenizer_config.json   a 2048-id Gemma-layout BPE tokenizer trained here
                                                       (also copied into tiny-a/f32 and tiny-a/bf16)
  small-corpus.tsv        >= 2,000 strings through the small tokenizer
  variants/NAME.json + NAME.tsv                       the small tokenizer with other components/flags
  gemma3-corpus.tsv       >= 10,000 strings through the real Gemma 3 tokenizer (../shared/data)
  gemma3-decode.tsv       random id sequences through its decoder (byte runs, specials, ...)

Line format of a corpus .tsv (tab separated):
  TEXT  IDS  DECODE  DECODE_SKIP_SPECIAL
TEXT is a JSON string, or x:HEX for raw bytes that are not valid UTF-8 (the reference then sees
bytes.decode("utf-8", "replace")); IDS are space separated; DECODE is a JSON string or "=" when equal to
TEXT; DECODE_SKIP_SPECIAL is a JSON string or "=" when equal to DECODE. A decode .tsv has IDS DECODE
DECODE_SKIP_SPECIAL. Everything is seeded: the output is identical on every run with the same versions.

Usage: python3 tools/reference/make_tokenizer_fixtures.py [--shared ../shared/data]
"""
import argparse
import json
import lzma
import os
import random
import shutil
import sys
import tempfile

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "tokenizer")

# ----- text generators (all drawn from one seeded Random) -----

LATIN = ["café", "naïve", "Straße", "Ærøskøbing", "żółć", "Đặng", "Ñandú", "façade", "crème brûlée", "smörgåsbord",
         "Škoda", "Łódź", "İstanbul", "résumé", "coöperate", "Ångström", "Øresund", "Dvořák", "Ðorđe", "Þórður",
         "Çağrı", "ğüşöç", "Việt Nam", "tiếng Việt", "Nguyễn", "São Paulo", "Málaga", "El Niño", "Zürich", "Kraków"]
WORDS = ["the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "it", "by", "at", "from",
         "hello", "world", "model", "token", "diffusion", "canvas", "sample", "entropy", "language", "Gemma",
         "engine", "tokenizer", "attention", "layer", "expert", "router", "python", "function", "return", "value",
         "discards", "months", "era", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "I", "you", "we"]
SCRIPTS = {
    "cyrillic": ["Привет, мир!", "Съешь же ещё этих мягких французских булок", "Москва", "ёжик в тумане", "Україна", "Беларусь"],
    "greek": ["Γειά σου Κόσμε", "Ελληνικά", "ΑΒΓΔΕΖΗΘ αβγδεζηθ", "ςσΣ", "άέήίόύώ ϊϋΐΰ"],
    "arabic": ["مرحبا بالعالم", "اللغة العربية", "السَّلَامُ عَلَيْكُمْ", "١٢٣٤٥٦٧٨٩٠", "ﷺ ﷽"],
    "hebrew": ["שלום עולם", "עִבְרִית", "ירושלים", "א ב ג ד"],
    "devanagari": ["नमस्ते दुनिया", "हिन्दी भाषा", "क्षत्रिय", "०१२३४५६७८९", "संस्कृतम्"],
    "thai": ["สวัสดีชาวโลก", "ภาษาไทย", "กรุงเทพมหานคร", "๑๒๓"],
    "cjk": ["你好，世界", "中文分词测试", "日本語のテキスト", "ひらがなカタカナ", "漢字かな交じり文", "東京都", "〜・「」『』【】"],
    "hangul": ["안녕하세요 세계", "한국어", "ㄱㄴㄷㄹ ㅏㅑㅓㅕ", "대한민국"],
    "other": ["ქართული", "Հայերեն", "ᚠᚢᚦᚨᚱᚲ", "ꦗꦮ", "ᐃᓄᒃᑎᑐᑦ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝐁𝐨𝐥𝐝", "ℕℤℚℝℂ", "∀x∈ℝ: x²≥0", "½ ¼ ¾ ⅓"],
}
EMOJI = ["😀", "🦙", "🚀", "❤️", "👍🏽", "👍🏿", "👋🏻", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🧑🏾‍💻", "👩‍❤️‍💋‍👨", "🇫🇷", "🇯🇵", "1️⃣", "#️⃣",
         "🤷‍♂️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿", "✨", "🎉", "🐍", "☕", "⌚", "🫠", "🥲", "🧠"]
COMBINING = ["e\u0301", "a\u0308\u0323", "n\u0303", "o\u0302\u0300", "Z\u0351\u036b\u0343\u036a\u0302\u036b\u033d",
             "\u0301", "i\u0307", "\u1100\u1161\u11a8", "\u0915\u094d\u0937"]
CODE = [
    "def f(x):\n    return x * 2\n",
    "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "const x = await fetch(`/api/${id}`);",
    "fn main() { println!(\"{}\", 42); }",
    "<html><body><div class=\"a\">Hi</div></body></html>",
    "{\"key\": [1, 2.5, null, true], \"s\": \"\\u00e9\"}",
    "SELECT * FROM users WHERE id = 1;",
    "#!/bin/bash\nset -eu\necho \"$HOME\" | grep -q root && exit 0",
    "    if x:\n        pass\n    else:\n        raise ValueError('bad')",
    "x <<= 2; y >>= 3; z = a ?: b; w = p->q;",
    "import numpy as np\nnp.zeros((3, 4), dtype=np.float32)",
    "public static void main(String[] args) {}",
    "<table><tr><td>1</td></tr></table>",
    "$ ls -la /tmp && cat ~/.bashrc",
]
SPECIALS_G3 = ["<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
               "<end_of_image>", "<image_soft_token>", "[multimodal]", "<unused0>", "<unused17>", "<table>", "</div>",
               "<start_of_turn>user\n", "<start_of_turn>model\n", "<end_of_turn>\n", "<bos", "bos>", "<<bos>>",
               "<start_of_tur", "</start_of_turn>", "<0x41>", "<0xZZ>", "▁", "▁▁", "▁▁▁▁"]
SPECIALS_G4 = ["<|turn>", "<turn|>", "<|tool>", "<tool|>", "<|tool_call>", "<tool_call|>", "<|tool_response>",
               "<tool_response|>", '<|"|>', "<|think|>", "<|channel>", "<channel|>", "<|turn>model\n", "<|turn",
               "turn|>", "<bos>", "<eos>", "<pad>", "<mask>", "<unk>", "<unused3>", "<|image|>"]
WS = [" ", "  ", "   ", "    ", "\t", "\t\t", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", " \t\n", "\u00a0", "\u3000",
      "\u2028", "\u2009", "\u200b", "\ufeff", "\r", "\x0b", "\x0c"]


def rand_unicode(r, n):
    out = []
    for _ in range(n):
        k = r.random()
        if k < 0.25:
            cp = r.randint(0x20, 0x7E)
        elif k < 0.45:
            cp = r.randint(0xA0, 0x2FFF)
        elif k < 0.6:
            cp = r.randint(0x3000, 0xD7FF)
        elif k < 0.7:
            cp = r.randint(0xE000, 0xFFFD)                                  # private use and the rest of the BMP
        elif k < 0.8:
            cp = r.randint(0x10000, 0x1FFFF)                                # SMP
        elif k < 0.88:
            cp = r.randint(0x20000, 0x3FFFF)                                # CJK extensions
        elif k < 0.94:
            cp = r.choice([r.randint(0xE0000, 0xE007F), r.randint(0xF0000, 0xFFFFD), r.randint(0x100000, 0x10FFFD)])
        else:
            cp = r.randint(0x0, 0x1F)
        out.append(chr(cp))
    return "".join(out)


def number(r):
    k = r.randint(0, 7)
    if k == 0: return str(r.randint(0, 10 ** r.randint(1, 12)))
    if k == 1: return f"{r.uniform(-1e6, 1e6):.{r.randint(0, 6)}f}"
    if k == 2: return f"{r.randint(1, 9999):,}.{r.randint(0, 99):02d}"
    if k == 3: return f"{r.random():.3e}"
    if k == 4: return f"+1 ({r.randint(100, 999)}) {r.randint(100, 999)}-{r.randint(1000, 9999)}"
    if k == 5: return f"{r.randint(1900, 2100)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}T{r.randint(0, 23):02d}:00Z"
    if k == 6: return f"0x{r.getrandbits(32):08x}"
    return "3.14159265358979323846"


def long_word(r):
    k = r.randint(0, 5)
    if k == 0: return "Pneumonoultramicroscopicsilicovolcanoconiosis"
    if k == 1: return r.choice("a!-=._*#~") * r.randint(5, 120)
    if k == 2: return "".join(r.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(20, 80)))
    if k == 3: return "https://example.com/" + "/".join(r.choice(WORDS) for _ in range(r.randint(1, 6))) + "?q=1&x=%20y"
    if k == 4: return "".join(r.choice("0123456789abcdef") for _ in range(64))
    return "".join(r.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") for _ in range(r.randint(16, 90))) + "=="


def sentence(r):
    n = r.randint(1, 12)
    words = [r.choice(WORDS) for _ in range(n)]
    if r.random() < 0.3:
        words[0] = words[0].capitalize()
    return " ".join(words) + r.choice(["", ".", "!", "?", ",", ":", ";", "..."])


def fragment(r, specials):
    k = r.randint(0, 11)
    if k == 0: return sentence(r)
    if k == 1: return r.choice(LATIN)
    if k == 2: return r.choice(r.choice(list(SCRIPTS.values())))
    if k == 3: return "".join(r.choice(EMOJI) for _ in range(r.randint(1, 4)))
    if k == 4: return r.choice(WORDS) + r.choice(COMBINING)
    if k == 5: return r.choice(WS) * r.randint(1, 4)
    if k == 6: return r.choice(CODE)
    if k == 7: return number(r)
    if k == 8: return r.choice(specials)
    if k == 9: return long_word(r)
    if k == 10: return rand_unicode(r, r.randint(1, 12))
    return " " * r.randint(1, 40) if r.random() < 0.5 else "\n" * r.randint(1, 40) if r.random() < 0.5 else "\t" * r.randint(1, 40)


def text_case(r, specials):
    n = r.choice([1, 1, 2, 2, 3, 4, 6])
    seps = ["", " ", "", "\n", " "]
    return "".join(fragment(r, specials) + r.choice(seps) for _ in range(n)).rstrip("") if n else ""


def bad_bytes(r):
    """byte strings that are not valid UTF-8"""
    pieces = [b"\xff", b"\xfe", b"\xc0\xaf", b"\xe0\x80\x80", b"\xed\xa0\x80", b"\xed\xbf\xbf", b"\xf4\x90\x80\x80",
              b"\xf8\x88\x80\x80\x80", b"\x80", b"\xbf", b"\xc3", b"\xe2\x82", b"\xf0\x9f\xa6", b"\xf0\x9f", b"\xe2",
              b"\xc3\x28", b"\xa0\xa1", b"\xf0\x28\x8c\xbc", b"\xe1\x80\xe2\xf0\x91\x92\xf1\xbf\x41"]
    out = b""
    for _ in range(r.randint(1, 5)):
        k = r.random()
        if k < 0.4: out += r.choice(pieces)
        elif k < 0.7: out += fragment(r, ["<bos>", "<eos>"]).encode()
        else: out += bytes(r.getrandbits(8) for _ in range(r.randint(1, 8)))
    try:
        out.decode("utf-8")
        out += b"\xff"
    except UnicodeDecodeError:
        pass
    return out


def corpus(seed, n, specials, n_bad):
    r = random.Random(seed)
    cases = ["", " ", "  ", "\n", "\t", "Hello", " Hello", "Hello world", "Hello, world!", "    return", "\n =",
             "ied 4 ½ months", " this is 🦙.cpp", "Äpfel", "!!!!!!", "' era", "Cửa Việt", " discards", "3", "33", "333"]
    cases += [s for s in specials]
    cases += [s + "x" + s for s in specials]
    while len(cases) < n:
        cases.append(text_case(r, specials))
    # a few long texts (whole paragraphs are one BPE word in this pipeline)
    for _ in range(5):
        cases.append("".join(text_case(r, specials) for _ in range(60)))
    out = [(c, None) for c in cases]
    out += [(None, bad_bytes(r)) for _ in range(n_bad)]
    return out


# ----- writing -----

def safe_decode(tok, ids, skip):
    """the reference's decode, or None where it panics (Strip with stop > 0 on a too short string)"""
    try:
        return tok.decode(ids, skip_special_tokens=skip)
    except BaseException as e:   # pyo3 PanicException derives from BaseException
        if type(e).__name__ != "PanicException":
            raise
        return None


def enc_text(text, raw):
    if raw is not None:
        return "x:" + raw.hex()
    return json.dumps(text, ensure_ascii=False)


def write_corpus(path, tok, cases):
    n_ids = 0
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"# generated by tools/reference/make_tokenizer_fixtures.py with tokenizers {tokenizers.__version__}\n")
        for text, raw in cases:
            s = raw.decode("utf-8", "replace") if raw is not None else text
            ids = tok.encode(s, add_special_tokens=False).ids
            d, ds = safe_decode(tok, ids, False), safe_decode(tok, ids, True)
            n_ids += len(ids)
            f.write("\t".join([enc_text(text, raw), " ".join(map(str, ids)),
                               "!" if d is None else "=" if d == s and raw is None else json.dumps(d, ensure_ascii=False),
                               "!" if ds is None else "=" if ds == d else json.dumps(ds, ensure_ascii=False)]) + "\n")
    print(f"{os.path.relpath(path, ROOT)}: {len(cases)} cases, {n_ids} ids, {os.path.getsize(path)} bytes")


def write_decode(path, tok, seed, n, n_vocab, specials):
    r = random.Random(seed)
    byte_ids = list(range(238, 494))
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(f"# generated by tools/reference/make_tokenizer_fixtures.py with tokenizers {tokenizers.__version__}\n")
        for _ in range(n):
            ids = []
            for _ in range(r.randint(0, 12)):
                k = r.random()
                if k < 0.45: ids.append(r.choice(byte_ids))
                elif k < 0.6: ids.append(r.choice(specials))
                elif k < 0.9: ids.append(r.randrange(n_vocab))
                else: ids.extend(tok.encode(r.choice(EMOJI + LATIN), add_special_tokens=False).ids)
            d, ds = safe_decode(tok, ids, False), safe_decode(tok, ids, True)
            f.write("\t".join([" ".join(map(str, ids)), "!" if d is None else json.dumps(d, ensure_ascii=False),
                               "!" if ds is None else "=" if ds == d else json.dumps(ds, ensure_ascii=False)]) + "\n")
    print(f"{os.path.relpath(path, ROOT)}: {n} id sequences, {os.path.getsize(path)} bytes")


# ----- the small tokenizer (2048 ids, Gemma 4 layout) -----

CONTROL = {0: "<pad>", 1: "<eos>", 2: "<bos>", 3: "<unk>", 4: "<mask>", 5: "[multimodal]",
           46: "<|tool>", 47: "<tool|>", 48: "<|tool_call>", 49: "<tool_call|>", 50: "<|tool_response>",
           51: "<tool_response|>", 52: '<|"|>', 98: "<|think|>", 100: "<|channel>", 101: "<channel|>",
           105: "<|turn>", 106: "<turn|>"}
SPECIAL_IDS = {0, 1, 2, 3, 4, 46, 47, 48, 49, 50, 51, 52, 98, 100, 101, 105, 106}
HTML = ["<table>", "<tr>", "<td>", "<th>", "<div>", "<span>", "<ul>", "<li>", "<p>", "<br>", "<b>", "<i>", "<code>",
        "<pre>", "<h1>", "<h2>", "<h3>", "<a>", "<img>", "<body>", "<head>", "<html>", "<title>", "<thead>",
        "<tbody>", "<tfoot>", "<em>", "<strong>", "<sup>", "<sub>", "<blockquote>", "<section>", "<footer>",
        "</table>", "</tr>", "</td>", "</th>", "</div>", "</span>", "</ul>", "</li>", "</p>", "</b>", "</i>",
        "</code>", "</pre>", "</h1>", "</h2>", "</h3>", "</a>", "</body>", "</head>", "</html>", "</title>",
        "</thead>", "</tbody>", "</tfoot>", "</em>", "</strong>", "</sup>", "</sub>", "</blockquote>",
        "</section>", "</footer>", "<bbox>", "</bbox>", "<nav>", "</nav>", "<form>", "</form>"]
N_VOCAB = 2048


def reserved_layout():
    ids = {}
    unused = 0
    for i in range(238):
        if i in CONTROL:
            ids[i] = CONTROL[i]
        elif 107 <= i <= 137:
            ids[i] = "\n" * (i - 106)
        elif 138 <= i <= 167:
            ids[i] = "\u2581" * (i - 136)
        elif 168 <= i <= 237:
            ids[i] = HTML[i - 168]
        else:
            ids[i] = f"<unused{unused}>"
            unused += 1
    for b in range(256):
        ids[238 + b] = f"<0x{b:02X}>"
    return ids


def train_small(seed, n_merges=1500, n_alphabet=220):
    """A small deterministic BPE trainer (tokenizers' BpeTrainer breaks ties in hash-map order, so its
    output changes from run to run). Words are "▁"-prefixed runs as SentencePiece sees them; pairs are
    merged by count, ties broken by the pair's strings."""
    import collections
    import re
    r = random.Random(seed)
    words = collections.Counter()
    for i in range(6000):
        s = (text_case(r, [""]) if i % 2 else sentence(r)).replace(" ", "\u2581")
        for w in re.findall("\u2581*[^\u2581\n\r]+|\u2581+", s):
            words[w] += 1
    chars = collections.Counter()
    for w, c in words.items():
        for ch in w:
            chars[ch] += c
    alphabet = [ch for ch, _ in sorted(chars.items(), key=lambda kv: (-kv[1], kv[0]))[:n_alphabet]]
    keep = set(alphabet)
    seqs, counts = [], []
    for w, c in sorted(words.items()):
        cur = []
        for ch in w + "\0":
            if ch in keep:
                cur.append(ch)
            elif cur:
                seqs.append(cur)
                counts.append(c)
                cur = []
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for i, sq in enumerate(seqs):
        for a, b in zip(sq, sq[1:]):
            pairs[(a, b)] += counts[i]
            where[(a, b)].add(i)
    merges = []
    while len(merges) < n_merges and pairs:
        (a, b), c = min(pairs.items(), key=lambda kv: (-kv[1], kv[0]))
        if c < 2:
            break
        merges.append((a, b))
        for i in sorted(where.pop((a, b), ())):
            sq = seqs[i]
            for x, y in zip(sq, sq[1:]):
                pairs[(x, y)] -= counts[i]
                if pairs[(x, y)] <= 0:
                    del pairs[(x, y)]
            out, k = [], 0
            while k < len(sq):
                if k + 1 < len(sq) and sq[k] == a and sq[k + 1] == b:
                    out.append(a + b)
                    k += 2
                else:
                    out.append(sq[k])
                    k += 1
            seqs[i] = out
            for x, y in zip(out, out[1:]):
                pairs[(x, y)] += counts[i]
                where[(x, y)].add(i)
        pairs.pop((a, b), None)
    return alphabet, merges


def build_small():
    layout = reserved_layout()
    by_piece = {p: i for i, p in layout.items()}
    alphabet, merges = train_small(7)
    vocab = dict(by_piece)
    next_id = 494
    for ch in alphabet:
        if ch not in vocab:
            vocab[ch] = next_id
            next_id += 1
    kept = []
    for a, b in merges:
        if next_id >= N_VOCAB:
            break
        if a not in vocab or b not in vocab:
            continue
        kept.append((a, b))
        if a + b not in vocab:
            vocab[a + b] = next_id
            next_id += 1
    assert next_id == N_VOCAB, next_id
    tok = Tokenizer(models.BPE(vocab=vocab, merges=kept, unk_token="<unk>", fuse_unk=True, byte_fallback=True, dropout=None))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Split(" ", "merged_with_previous")
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
    added = [AddedToken(layout[i], special=i in SPECIAL_IDS, normalized=False, lstrip=False, rstrip=False, single_word=False)
             for i in range(238)]
    tok.add_tokens(added)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", 2)])
    assert tok.get_vocab_size() == N_VOCAB, tok.get_vocab_size()
    for i, p in layout.items():
        assert tok.token_to_id(p) == i, (i, p)
    return tok


def save_small(tok, dirs):
    """save through transformers so that tokenizer_config.json is what it writes"""
    from transformers import PreTrainedTokenizerFast
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                                 unk_token="<unk>", mask_token="<mask>", padding_side="left", add_bos_token=False)
    with tempfile.TemporaryDirectory() as tmp:
        hf.save_pretrained(tmp)
        # transformers 5 no longer writes the added-token table; add it as earlier versions (and the
        # published Gemma checkpoints) have it, with the Gemma tokenizer class
        cfg_path = os.path.join(tmp, "tokenizer_config.json")
        cfg = json.load(open(cfg_path))
        table = {}
        for t in json.loads(tok.to_str())["added_tokens"]:
            table[str(t["id"])] = {k: t[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        cfg.update(add_bos_token=False, add_eos_token=False, added_tokens_decoder=table, clean_up_tokenization_spaces=False,
                   tokenizer_class="GemmaTokenizer", model_max_length=32768, spaces_between_special_tokens=False)
        cfg.pop("backend", None)
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=2, sort_keys=True, ensure_ascii=False)
            f.write("\n")
        from transformers import AutoTokenizer
        check = AutoTokenizer.from_pretrained(tmp)
        probe = "<bos><|turn>user\nHello  wörld 🦙<turn|>\n"
        assert check.encode(probe, add_special_tokens=False) == tok.encode(probe, add_special_tokens=False).ids
        for d in dirs:
            os.makedirs(d, exist_ok=True)
            for name in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copyfile(os.path.join(tmp, name), os.path.join(d, name))
    back = Tokenizer.from_file(os.path.join(dirs[0], "tokenizer.json"))
    assert back.get_vocab_size() == N_VOCAB
    return back


def variant(base_json, name, edit, out_dir):
    j = json.loads(base_json)
    edit(j)
    path = os.path.join(out_dir, name + ".json")
    s = json.dumps(j, ensure_ascii=False, separators=(",", ":"))
    with open(path, "w", encoding="utf-8") as f:
        f.write(s)
    return Tokenizer.from_str(s), path


def edit_flags(j):
    at = j["added_tokens"]
    for t in at:
        if t["content"] == "<|turn>":
            t["lstrip"] = True
        if t["content"] == "<turn|>":
            t["rstrip"] = True
        if t["content"] == "<|tool>":
            t["lstrip"] = t["rstrip"] = True
    nid = 2048
    extra = [("hello", dict(single_word=True)), ("wor", dict(single_word=True, special=True)),
             (" ok", dict(normalized=True)), ("ab c", dict(normalized=True, special=True)),
             ("<new>", dict(special=True)), ("x\u2581y", dict()), ("é", dict(single_word=True)),
             ("<tail>", dict(lstrip=True, rstrip=True, single_word=True)), ("\u2581hi", dict(normalized=True))]
    for content, fl in extra:
        t = dict(id=nid, content=content, single_word=False, lstrip=False, rstrip=False, normalized=False, special=False)
        t.update(fl)
        at.append(t)
        nid += 1


def edit_prepend_strip(j):
    j["model"]["byte_fallback"] = False   # characters outside the vocabulary become <unk>, fused
    j["normalizer"] = {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                           {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    j["decoder"] = {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                     {"type": "ByteFallback"}, {"type": "Fuse"},
                                                     {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}


def edit_split_nodecoder(j):
    j["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": "\u2581"}, "behavior": "Isolated", "invert": False},
        {"type": "Split", "pattern": {"String": "e"}, "behavior": "MergedWithNext", "invert": False},
        {"type": "Split", "pattern": {"String": "."}, "behavior": "Contiguous", "invert": True},
        {"type": "Split", "pattern": {"String": "o"}, "behavior": "Removed", "invert": False},
        {"type": "Split", "pattern": {"String": "a"}, "behavior": "MergedWithPrevious", "invert": False}]}
    j["decoder"] = None


def edit_legacy_ignore(j):
    m = j["model"]
    m["merges"] = ["#version: 0.2"] + [a + " " + b for a, b in m["merges"]]
    m["ignore_merges"] = True
    # holes: without the byte pieces <0x80>..<0x9F>, characters needing them fall back to <unk> (not
    # fused), the others to bytes, in tokenizers' order (a pending <unk> goes after later byte pieces)
    m["fuse_unk"] = False
    for b in range(0x80, 0xA0):
        del m["vocab"][f"<0x{b:02X}>"]
    # Strip with stop > 0 makes the reference panic on strings shorter than stop (recorded as "!")
    j["decoder"] = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Strip", "content": "\u2581", "start": 1, "stop": 1},
                                                     {"type": "Replace", "pattern": {"String": "\u2581"}, "content": "_"},
                                                     {"type": "Fuse"}, {"type": "Strip", "content": "_", "start": 0, "stop": 2}]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "data"))
    args = ap.parse_args()
    os.makedirs(os.path.join(OUT, "variants"), exist_ok=True)

    tok = build_small()
    small = save_small(tok, [os.path.join(OUT, "small"), os.path.join(ROOT, "tests", "fixtures", "tiny-a", "f32"),
                             os.path.join(ROOT, "tests", "fixtures", "tiny-a", "bf16")])
    write_corpus(os.path.join(OUT, "small-corpus.tsv"), small, corpus(11, 2400, SPECIALS_G4 + SPECIALS_G3[:12], 100))
    write_decode(os.path.join(OUT, "small-decode.tsv"), small, 12, 300, N_VOCAB, sorted(SPECIAL_IDS))
    base_json = small.to_str()
    flag_texts = ["hello world", "sayhello", "hello", "hello_x", "héllo hello", "a hello, b", "world wor word", "wor",
                  "ok ok  ok", " ok", "ok", "ab c", "xab cx", "<new>", "a<new>b", "x\u2581y", "x y", "é", "éa",
                  "a é b", "  <|turn>  hi <turn|>  there", "\t<|tool>\n x", "<tail> <tail>x", " <tail> ", "\u2581hi hi"]
    variants = [("flags", edit_flags), ("prepend-strip", edit_prepend_strip), ("split-nodecoder", edit_split_nodecoder),
                ("legacy-ignore-merges", edit_legacy_ignore)]
    for i, (name, fn) in enumerate(variants):
        vt, _ = variant(base_json, name, fn, os.path.join(OUT, "variants"))
        cases = [(t, None) for t in flag_texts] + corpus(100 + i, 400, SPECIALS_G4 + flag_texts, 20)
        write_corpus(os.path.join(OUT, "variants", name + ".tsv"), vt, cases)

    src = os.path.join(args.shared, "gemma3-tokenizer.json.xz")
    if not os.path.exists(src):
        print(f"{src} not found: Gemma 3 fixtures not regenerated", file=sys.stderr)
        return
    g3 = Tokenizer.from_str(lzma.open(src).read().decode("utf-8"))
    write_corpus(os.path.join(OUT, "gemma3-corpus.tsv"), g3, corpus(1, 10000, SPECIALS_G3 + SPECIALS_G4, 300))
    g3_special = [0, 1, 2, 3, 105, 106, 255999, 256000, 262144, 4, 5, 6, 107, 138]
    write_decode(os.path.join(OUT, "gemma3-decode.tsv"), g3, 2, 1000, 262145, g3_special)


if __name__ == "__main__":
    main()
