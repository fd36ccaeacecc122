"""`w2s bench data`: the generation stage's tokens per second against a plain batched `generate` loop.

Both sides run in one process over the same prompts, models and sampling settings (temperature 1,
the full distribution, each response ended by EOS or the token limit, its tokens counted up to and
including its EOS), after a warm-up, back to back in rounds that alternate which side goes first;
the figure is the median of the rounds' ratios, by wall clock and by CPU time (steadier on a shared
machine). Each side's time includes loading its models. The stage is `data.build.generate_shards`
(chat templates, per-shard seeds, the engine, atomic shard files); the reference is the shortest
loop that does the same sampling.

The default model, `random:6x256`, is a random-initialised Llama (6 layers x 256, a 2048-token
context) with the tiny world's family-A tokenizer, as in `w2s bench guide`: it rarely samples EOS, so
responses run long (the printed mean length says how long). The tiny world's trained models
(`--models tiny:weak tiny:strong`) end their reviews with EOS after about 25 tokens whatever the limit
(their context is 128 positions): they measure short responses, not the limit.

    w2s bench data                       # random:6x256, 64 prompts x 4 samples (256 rows), 256 new tokens at most
    w2s bench data --max_new_tokens 1024 --rounds 1
    w2s bench data --models tiny:weak tiny:strong --max_new_tokens 48
"""

from __future__ import annotations

import argparse
import logging
import re
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from w2s.data.build import generate_shards, plan
from w2s.data.recipe import recipe_from_dict
from w2s.data.world import world_prompts
from w2s.data.world.tokenizers import world_tokenizer_path
from w2s.eval.bench_guide import make_model
from w2s.guide.commands import UserError
from w2s.guide.models import chat_prompt, load_model_and_tokenizer
from w2s.guide.sampling import count_new_tokens
from w2s.train.world import ensure_world

logger = logging.getLogger(__name__)


@torch.no_grad()
def plain_loop(model_name: str, prompts: list[str], *, num_samples: int, max_new_tokens: int, batch_size: int) -> int:
    """Loads a model and samples every prompt `num_samples` times, `batch_size` rows per call; returns tokens."""

    model, tok = load_model_and_tokenizer(model_name)
    torch.manual_seed(0)
    texts = [chat_prompt(tok, p) for p in prompts for _ in range(num_samples)]
    tokens = 0
    for start in range(0, len(texts), batch_size):
        batch = tok(texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
        out = model.generate(
            **batch,
            do_sample=True,
            temperature=1.0,
            top_k=0,  # the full distribution, as the stage samples (None would be generation_config's 50)
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        tokens += count_new_tokens(out[:, batch["input_ids"].shape[1] :], tok.eos_token_id)
    return tokens


def stage(models: list[str], num_prompts: int, *, num_samples: int, max_new_tokens: int, batch_size: int) -> int:
    """The build's generation stage over the same prompts, in a fresh folder; returns tokens."""
    with tempfile.TemporaryDirectory() as out:
        recipe = recipe_from_dict(
            {
                "output_dir": out,
                "prompt_source": "tiny:train",
                "num_prompts": num_prompts,
                "dedup_prompts": "none",
                "shard_size": batch_size // num_samples,  # one generate call per shard, as in the loop
                "generators": [
                    {
                        "name": f"g{i}",
                        "model": m,
                        "num_samples": num_samples,
                        "max_new_tokens": max_new_tokens,
                        "batch_size": batch_size,
                    }
                    for i, m in enumerate(models)
                ],
                "judges": [{"name": "gold", "kind": "rule"}],
            }
        )
        p = plan(recipe)
        spent = generate_shards(p, list(range(len(p.shards))), progress=False)
        return int(sum(s["tokens"] for s in spent.values()))


RANDOM = re.compile(r"random:(\d+)x(\d+)")
CONTEXT = 2048  # the random models' positions: room for long responses


def bench_model(spec: str, folder: Path) -> str:
    """A model name for both sides: `random:<layers>x<width>` is saved under `folder` first (its weights
    seeded by its shape); any other name is used as it is."""
    if not spec.startswith("random:"):
        return spec
    match = RANDOM.fullmatch(spec)
    if not match:
        raise UserError(f"--models {spec}: expected random:<layers>x<width>, e.g. random:6x256, or a model name")
    layers, width = map(int, match.groups())
    tokenizer = AutoTokenizer.from_pretrained(world_tokenizer_path("a"))
    tokenizer.model_max_length = CONTEXT
    path = folder / spec.replace(":", "-")
    make_model(tokenizer, layers, width, seed=layers * 1000 + width, context=CONTEXT).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def main(args: argparse.Namespace) -> int:
    """`w2s bench data`, its flags parsed by eval/cli.py."""
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        run(args)
    finally:
        torch.set_num_threads(threads)
    return 0


def run(args: argparse.Namespace) -> None:
    """The rounds, and the printed ratios."""
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        if any(not m.startswith("random:") for m in args.models):
            ensure_world()  # build (or find) the tiny world before timing
        models = [bench_model(m, Path(folder)) for m in args.models]
        rounds(args, models)


def rounds(args: argparse.Namespace, models: list[str]) -> None:
    prompts = world_prompts("train", args.num_prompts)
    kw = {"num_samples": args.num_samples, "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size}
    sides = {
        "plain loop": lambda: sum(plain_loop(m, prompts, **kw) for m in models),
        "data stage": lambda: stage(models, args.num_prompts, **kw),
    }
    sides["plain loop"](), sides["data stage"]()  # warm-up: imports, caches, allocator
    ratios, cpu_ratios = [], []
    tokens: dict[str, list[int]] = {name: [] for name in sides}
    for r in range(args.rounds):  # back to back, alternating which side goes first
        rate, cpu_rate = {}, {}
        for name in list(sides)[:: 1 if r % 2 == 0 else -1]:
            wall, cpu = time.perf_counter(), time.process_time()
            tokens[name].append(sides[name]())
            rate[name] = tokens[name][-1] / (time.perf_counter() - wall)
            cpu_rate[name] = tokens[name][-1] / (time.process_time() - cpu)
        ratios.append(rate["data stage"] / rate["plain loop"])
        cpu_ratios.append(cpu_rate["data stage"] / cpu_rate["plain loop"])
        print(
            f"round {r + 1}: plain loop {rate['plain loop']:,.0f} tok/s, data stage {rate['data stage']:,.0f} tok/s, "
            f"ratio {ratios[-1]:.2f} (per CPU second: {cpu_ratios[-1]:.2f})",
            flush=True,
        )
    rows = args.num_prompts * args.num_samples * len(models)
    length = {name: statistics.fmean(t) / rows for name, t in tokens.items()}
    print(
        f"models {', '.join(args.models)}; {args.num_prompts} prompts x {args.num_samples} samples, "
        f"{args.max_new_tokens} new tokens at most, {args.batch_size} rows per call"
    )
    print(
        f"mean response length, tokens up to and including EOS: plain loop {length['plain loop']:.1f}, "
        f"data stage {length['data stage']:.1f} (of {args.max_new_tokens} at most)"
    )
    print(
        f"data build generation / plain generate loop at {args.max_new_tokens} new tokens, tokens per second "
        f"(median of {args.rounds} rounds): {statistics.median(ratios):.2f}x by wall clock, "
        f"{statistics.median(cpu_ratios):.2f}x per CPU second (target at 256 new tokens: at least 2x)"
    )
