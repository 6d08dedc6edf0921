#!/usr/bin/env python3
"""Replay transformers' own DiffusionGemmaForBlockDiffusion.generate() with its random draws taken from
the C engine's stream (dg_rng.py), and record every denoising step, for the C trajectory tests.

Usage:  python3 tools/reference/make_trajectories.py [--out tests/fixtures] [--only chat]   (after make_fixtures.py)

The reference draws randomness in three places; each is replaced, consuming the stream in the order the
C engine does:
    EntropyBoundSampler.initialize_canvas   (a new canvas, and the fresh ids of every renoise)
                                            -> C ids, dg_rng.below(vocab), position order
    torch.multinomial in _denoising_step    -> per position one dg_rng.uniform() u; the first index whose
                                               running float64 sum of probs exceeds u * sum
Everything else is the stock generate(): temperature schedule, entropy-bound acceptance, renoising,
stability-and-confidence stop, self-conditioning, commit of the argmax, EOS and length handling.

The model runs as make_fixtures.set_exact(True) defines it (exact reductions, correctly rounded
transcendentals): self-conditioning feeds every step's logits into the next, and in a random tiny model
a float32 difference of 1e-6 grows about tenfold per step (measured: 8e-6, 5e-5, 1.4e-3, 2.5e-2 in mean
entropy over steps 2-5 against stock torch), so a step-by-step replay needs both sides to compute the
same bits. The per-stage float32 test (make_fixtures.py) is the one against stock transformers.

Writes <out>/trajectories.json: one record per case with the model, prompt, parameters, seed, and per
canvas the per-step records (accepted count, mean entropy, argmax canvas, stop flag), plus the returned
sequence and the emitted tokens (up to the first EOS, at most max_new_tokens). The last cases are a
two-turn chat through the built-in chat template (chat_cases); their decoded answers are what
`dgemma run` / `dgemma chat` must print (tiny-a/cli-f32/run-expected.txt, chat-expected.txt).
Also builds tests/fixtures/tiny-b-sharp/f32: tiny-b with its embedding / LM head concentrated on four
tokens, so that the model becomes confident and the early stop fires.
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import DiffusionGemmaForBlockDiffusion
from transformers.models.diffusion_gemma import generation_diffusion_gemma as gen

sys.path.insert(0, os.path.dirname(__file__))
from dg_rng import DgRng  # noqa: E402
import make_fixtures  # noqa: E402

_STOCK_MULTINOMIAL = torch.multinomial
_STOCK_INIT = gen.EntropyBoundSampler.initialize_canvas
_STOCK_ACCEPT = gen.EntropyBoundSampler.accept_canvas
_STOCK_STOP = gen.StableAndConfidentStoppingCriteria.__call__
_STOCK_RESET = gen.StableAndConfidentStoppingCriteria.reset


class Recorder:
    def __init__(self, rng):
        self.rng = rng
        self.canvases = []     # list of lists of step dicts
        self.pending = {}

    def new_canvas(self):
        self.canvases.append([])


def install(rec, vocab, canvas_len):
    def init_canvas(self, batch_size, device):
        assert batch_size == 1
        ids = [rec.rng.below(vocab) for _ in range(canvas_len)]
        return torch.tensor([ids], dtype=torch.long, device=device)

    def multinomial(probs, num_samples, replacement=False, generator=None):
        assert num_samples == 1
        p = probs.detach().double().cpu().numpy()
        out = np.zeros((p.shape[0], 1), dtype=np.int64)
        for r in range(p.shape[0]):
            cs = np.cumsum(p[r])
            target = rec.rng.uniform() * cs[-1]
            i = int(np.searchsorted(cs, target, side="right"))
            if i >= p.shape[1]:
                i = int(np.nonzero(p[r] > 0)[0][-1])
            out[r, 0] = i
        return torch.from_numpy(out)

    def accept(self, current_canvas, denoiser_canvas, logits, cur_step):
        res = _STOCK_ACCEPT(self, current_canvas, denoiser_canvas, logits, cur_step)
        rec.pending["n_accepted"] = int(self.accepted_token_mask.sum())
        rec.pending["accepted"] = [int(v) for v in self.accepted_token_mask[0]]
        rec.pending["samples"] = [int(v) for v in denoiser_canvas[0]]
        return res

    def stop(self, argmax_canvas, logits, **kw):
        res = _STOCK_STOP(self, argmax_canvas, logits, **kw)
        ent = torch.distributions.Categorical(logits=logits).entropy()
        rec.canvases[-1].append(dict(n_accepted=rec.pending.pop("n_accepted"),
                                     accepted=rec.pending.pop("accepted"), samples=rec.pending.pop("samples"),
                                     mean_entropy=float(torch.mean(ent)),
                                     argmax=[int(v) for v in argmax_canvas[0]],
                                     stop=bool(res[0])))
        return res

    def reset(self):
        self.argmax_canvas_history = None
        rec.new_canvas()

    gen.EntropyBoundSampler.initialize_canvas = init_canvas
    gen.EntropyBoundSampler.accept_canvas = accept
    gen.StableAndConfidentStoppingCriteria.__call__ = stop
    gen.StableAndConfidentStoppingCriteria.reset = reset
    torch.multinomial = multinomial


def uninstall():
    gen.EntropyBoundSampler.initialize_canvas = _STOCK_INIT
    gen.EntropyBoundSampler.accept_canvas = _STOCK_ACCEPT
    gen.StableAndConfidentStoppingCriteria.__call__ = _STOCK_STOP
    gen.StableAndConfidentStoppingCriteria.reset = _STOCK_RESET
    torch.multinomial = _STOCK_MULTINOMIAL


def run(fixtures, model_rel, dtype, prompt, params, seed, exact=True):
    tdt = torch.float32 if dtype == "f32" else torch.bfloat16
    model = DiffusionGemmaForBlockDiffusion.from_pretrained(os.path.join(fixtures, model_rel), dtype=tdt).eval()
    V, C = model.config.text_config.vocab_size, model.config.canvas_length
    rec = Recorder(DgRng(seed))
    install(rec, V, C)
    if exact:
        make_fixtures.set_exact(True)
    try:
        kw = {k: v for k, v in params.items() if k not in ("eos_token_id", "entropy_bound")}
        if "entropy_bound" in params:
            kw["sampler_config"] = gen.EntropyBoundSamplerConfig(entropy_bound=float(params["entropy_bound"]))
        eos = params.get("eos_token_id", "default")
        if eos != "default":
            kw["eos_token_id"] = eos if eos else None
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt], dtype=torch.long), **kw)
    finally:
        make_fixtures.set_exact(False)
        uninstall()
    seq = out.sequences if hasattr(out, "sequences") else out
    new = [int(t) for t in seq[0, len(prompt):]]
    gc = model.generation_config
    eos_ids = params.get("eos_token_id", "default")
    if eos_ids == "default":
        eos_ids = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    eos_ids = eos_ids or []
    max_new = params.get("max_new_tokens", gc.max_new_tokens)
    emitted = []
    for t in new:
        if t in eos_ids or len(emitted) >= max_new:
            break
        emitted.append(t)
    return rec.canvases, new, emitted


CASES = [
    # the step cap, three canvases, max_new_tokens cutting the last canvas
    dict(name="steps-cap-3-canvases", model="tiny-a/f32", dtype="f32", prompt_len=5, seed=11,
         params=dict(max_new_tokens=40, max_denoising_steps=6, eos_token_id=[])),
    # a prompt longer than the sliding window (10), two canvases
    dict(name="long-prompt", model="tiny-c/f32", dtype="f32", prompt_len=23, seed=12,
         params=dict(max_new_tokens=24, max_denoising_steps=5, eos_token_id=[])),
    # the checkpoint's generation_config.json defaults (48 steps, entropy bound 0.1, ...), two canvases
    dict(name="checkpoint-defaults", model="tiny-a/f32", dtype="f32", prompt_len=9, seed=13,
         params=dict(max_new_tokens=32)),
    # an EOS inside the first canvas (the eos id is picked from a dry run's committed canvas)
    dict(name="eos-in-canvas", model="tiny-b/f32", dtype="f32", prompt_len=4, seed=14, eos_from_position=3,
         params=dict(max_new_tokens=32, max_denoising_steps=6)),
    # a confident model: the stability-and-confidence stop fires before the step cap
    dict(name="early-stop", model="tiny-b-sharp/f32", dtype="f32", prompt_len=6, seed=15,
         params=dict(max_new_tokens=24, max_denoising_steps=48, eos_token_id=[])),
    # stability 0 and a generous confidence threshold: stops on the first confident step
    dict(name="stability-0", model="tiny-b-sharp/f32", dtype="f32", prompt_len=6, seed=16,
         params=dict(max_new_tokens=8, max_denoising_steps=20, stability_threshold=0, confidence_threshold=0.5,
                     eos_token_id=[])),
    # bfloat16
    dict(name="bf16", model="tiny-a/bf16", dtype="bf16", prompt_len=7, seed=17,
         params=dict(max_new_tokens=32, max_denoising_steps=8, entropy_bound=0.5, eos_token_id=[])),
]


# `dgemma run` / `dgemma chat` end to end: a conversation through the built-in chat template (the one
# dgemma uses for tiny-a, which ships none), tokenized with PyPI tokenizers, generated by the replayed
# generate(), decoded with skip_special_tokens (what dgemma prints of a reply without thought channel or
# tool call). Each turn is also a trajectory case.
CHAT = dict(model="tiny-a/f32", dtype="f32", seed=21, system="You are a helpful assistant.",
            turns=["Why is the sky blue?", "And why are sunsets red?"],
            params=dict(max_new_tokens=32, max_denoising_steps=8))


def chat_cases(fixtures):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(root, "src", "tokenizer", "chat_default.jinja"), encoding="utf-8") as f:
        template = f.read()
    model_dir = os.path.join(fixtures, CHAT["model"])
    hf = AutoTokenizer.from_pretrained(model_dir)
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    openers = {tok.token_to_id("<|channel>"), tok.token_to_id("<|tool_call>")}
    messages = [{"role": "system", "content": CHAT["system"]}]
    records, answers = [], []
    for k, user in enumerate(CHAT["turns"]):
        messages.append({"role": "user", "content": user})
        text = hf.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=True,
                                      enable_thinking=False)
        prompt = tok.encode(text, add_special_tokens=False).ids
        canvases, new, emitted = run(fixtures, CHAT["model"], CHAT["dtype"], prompt, CHAT["params"], CHAT["seed"])
        # the reply splitter would take these apart: pick another seed if this fires
        assert not openers & set(emitted), "the reply opens a channel or a tool call"
        answer = tok.decode(emitted, skip_special_tokens=True)
        print(f"chat turn {k + 1}: prompt {len(prompt)} tokens, canvases {len(canvases)}, emitted {len(emitted)}", file=sys.stderr)
        records.append(dict(name=f"chat-turn-{k + 1}", model=CHAT["model"], dtype=CHAT["dtype"], prompt=prompt, seed=CHAT["seed"],
                            params=CHAT["params"], canvases=canvases, sequence=new, emitted=emitted))
        answers.append(answer)
        messages.append({"role": "assistant", "content": answer})
    d = os.path.join(fixtures, "tiny-a", "cli-f32")
    with open(os.path.join(d, "run-expected.txt"), "w", encoding="utf-8", newline="") as f:
        f.write(answers[0] + "\n")
    with open(os.path.join(d, "chat-expected.txt"), "w", encoding="utf-8", newline="") as f:
        f.write("".join(a + "\n" for a in answers))
    return records


def make_sharp(fixtures):
    src, dst = os.path.join(fixtures, "tiny-b", "f32"), os.path.join(fixtures, "tiny-b-sharp", "f32")
    shutil.rmtree(os.path.dirname(dst), ignore_errors=True)
    shutil.copytree(src, dst)
    w = load_file(os.path.join(dst, "model.safetensors"))
    # a random model is never confident (mean entropy ~1 nat); concentrating the tied LM head on four
    # "hub" tokens (large rows, every other row shrunk) makes its distributions peaked
    emb = w["model.decoder.embed_tokens.weight"] * 0.05
    emb[100:104] = emb[100:104] / 0.05 * 8.0
    w["model.decoder.embed_tokens.weight"] = emb.contiguous()
    save_file(w, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})


def unit_vectors():
    """Crafted inputs through the reference's own sampler pieces, for the C unit tests."""
    out = {}
    # LinearTemperatureScheduleLogitsProcessor: float32 temperatures, via scores = 1
    temps = []
    for t_min, t_max, n in [(0.4, 0.8, 48), (0.3, 1.7, 7), (0.5, 0.5, 1), (0.9, 0.2, 5)]:
        proc = gen.LinearTemperatureScheduleLogitsProcessor(t_min, t_max, n)
        for cur in range(n, 0, -1):
            one = torch.ones(1, 1)
            t = 1.0 / proc(None, one, torch.tensor(cur, dtype=torch.int32))   # scores / T with scores = 1
            temps.append(dict(t_min=t_min, t_max=t_max, n=n, cur=cur,
                              scaled_one=float(proc(None, one, torch.tensor(cur, dtype=torch.int32))[0, 0])))
    out["temperature"] = temps
    # entropy of crafted rows (Categorical(logits).entropy(), what acceptance and stopping use)
    g = torch.Generator().manual_seed(5)
    V = 50
    rows = [torch.zeros(V), torch.full((V,), -3.0), torch.randn(V, generator=g) * 4]
    peaked = torch.full((V,), -20.0); peaked[7] = 20.0
    rows += [peaked, torch.randn(V, generator=g) * 0.1, torch.linspace(-30, 30, V)]
    ent = torch.distributions.Categorical(logits=torch.stack(rows)).entropy()
    out["entropy"] = dict(V=V, rows=[[float(x) for x in r] for r in rows], entropy=[float(x) for x in ent])

    # EntropyBoundSampler.accept_canvas on crafted logits: ties, all accepted, one accepted, boundary
    def rows_with_entropies(targets):
        """rows over V=8 whose entropies step through the targets (two-level distributions)"""
        res = []
        for h in targets:
            lo, hi = -40.0, 40.0
            for _ in range(200):   # bisect the gap a between one top logit and seven at 0
                a = (lo + hi) / 2
                r = torch.zeros(8); r[0] = a
                e = float(torch.distributions.Categorical(logits=r[None]).entropy()[0])
                lo, hi = (a, hi) if e > h else (lo, a)
            r = torch.zeros(8); r[0] = (lo + hi) / 2
            res.append(r)
        return torch.stack(res)

    acc_cases = []
    specs = [("ties", [0.02, 0.03, 0.03, 0.03, 0.5, 0.01, 0.03, 1.0], 0.1),
             ("all", [0.001, 0.002, 0.0005, 0.001, 0.0, 0.003], 0.1),
             ("one", [1.5, 1.2, 1.9, 1.1, 2.0], 0.1),
             ("boundary", [0.05, 0.05, 0.05, 0.05, 0.2], 0.1),
             ("bound-large", [0.3, 0.9, 0.1, 1.5, 0.6, 0.2], 1.0)]
    for name, targets, bound in specs:
        logits = rows_with_entropies(targets)[None]
        sampler = gen.EntropyBoundSampler(gen.EntropyBoundSamplerConfig(entropy_bound=bound), logits.shape[1], 8, 10)
        cur = torch.zeros(1, logits.shape[1], dtype=torch.long)
        den = torch.ones(1, logits.shape[1], dtype=torch.long)
        sampler.accept_canvas(cur, den, logits, 1)
        ent = torch.distributions.Categorical(logits=logits).entropy()[0]
        acc_cases.append(dict(name=name, bound=bound, entropy=[float(x) for x in ent],
                              accepted=[int(x) for x in sampler.accepted_token_mask[0]]))
    out["accept"] = acc_cases

    # StableAndConfidentStoppingCriteria over a sequence of steps, stability 0, 1 and 2
    stop_cases = []
    seq_argmax = [[1, 2, 3], [1, 2, 3], [1, 2, 4], [1, 2, 4], [1, 2, 4]]
    conf = torch.full((1, 3, 8), -30.0); conf[..., 0] = 30.0     # confident rows
    unsure = torch.zeros(1, 3, 8)                                  # uniform rows
    seq_logits = [conf, conf, unsure, conf, conf]
    for stab in (0, 1, 2):
        crit = gen.StableAndConfidentStoppingCriteria(stability_threshold=stab, confidence_threshold=0.005)
        crit.reset()
        decisions = [bool(crit(torch.tensor([a]), l)[0]) for a, l in zip(seq_argmax, seq_logits)]
        stop_cases.append(dict(stability=stab, confidence=0.005, argmax=seq_argmax,
                               entropy=[[float(x) for x in torch.distributions.Categorical(logits=l).entropy()[0]] for l in seq_logits],
                               stop=decisions))
    out["stop"] = stop_cases
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures"))
    ap.add_argument("--only", choices=["chat"], help="regenerate only these cases; the others are kept from the existing "
                    "trajectories.json (a full run can move a recorded mean entropy by one float32 ulp: torch's mean "
                    "reduction depends on the buffer's alignment)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path = os.path.join(args.out, "trajectories.json")
    if args.only:
        with open(path) as f:
            old = json.load(f)
        new = chat_cases(args.out)
        names = {r["name"] for r in new}
        old["cases"] = [c for c in old["cases"] if c["name"] not in names] + new
        with open(path, "w") as f:
            json.dump(old, f, indent=None, separators=(",", ":"))
        return
    make_sharp(args.out)
    records = []
    for case in CASES:
        cfg = json.load(open(os.path.join(args.out, case["model"], "config.json")))
        V = cfg["text_config"]["vocab_size"]
        prompt = np.random.default_rng(case["seed"]).integers(0, V, case["prompt_len"]).tolist()
        params = dict(case["params"])
        if "eos_from_position" in case:   # dry run, then make a token of the first committed canvas the EOS
            canv, new, _ = run(args.out, case["model"], case["dtype"], prompt, dict(params, eos_token_id=[]), case["seed"])
            params["eos_token_id"] = [new[case["eos_from_position"]]]
        canvases, new, emitted = run(args.out, case["model"], case["dtype"], prompt, params, case["seed"])
        steps = [len(c) for c in canvases]
        print(f"{case['name']}: canvases {len(canvases)}, steps {steps}, emitted {len(emitted)}", file=sys.stderr)
        records.append(dict(name=case["name"], model=case["model"], dtype=case["dtype"], prompt=prompt,
                            seed=case["seed"], params=params, canvases=canvases, sequence=new, emitted=emitted))
    records += chat_cases(args.out)
    # the CLI test's expectation: `dgemma generate` on the first case prints exactly these tokens
    first = records[0]
    d = os.path.join(args.out, "tiny-a", "cli-f32")
    open(os.path.join(d, "gen-prompt.txt"), "w").write(" ".join(map(str, first["prompt"])) + "\n")
    open(os.path.join(d, "gen-expected.txt"), "w").write(" ".join(map(str, first["emitted"])) + "\n")
    with open(os.path.join(args.out, "trajectories.json"), "w") as f:
        json.dump(dict(generator="tools/reference/make_trajectories.py", cases=records, units=unit_vectors()), f, indent=None,
                  separators=(",", ":"))


if __name__ == "__main__":
    main()
