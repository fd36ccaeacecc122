"""The tiny world's base models: built from `recipes/tiny/base_*.yaml` on first use and cached.

Each model lives in `<cache>/tiny-world/<name>-<key>/`, where the key hashes
its recipe, its tokenizer and the world's version, so editing a recipe builds
a new model and never serves a stale one. Set `W2S_CACHE` to move the cache.
"""

from __future__ import annotations

import logging
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import torch

from w2s.data.world import Review, score_review, world_corpus, world_prompts
from w2s.data.world.cache import build_once, cache_root, content_key, world_seed, world_tag, world_training_seed
from w2s.data.world.tokenizers import world_tokenizer_path
from w2s.guide.files import RecipeError
from w2s.guide.models import load_model_and_tokenizer
from w2s.guide.sampling import sample
from w2s.guide.scoring import response_logprobs
from w2s.train.pretrain import PretrainArguments, main, parse
from w2s.train.recipes import recipe_parser
from w2s.train.tiny import BASES, RECIPES_DIR

logger = logging.getLogger(__name__)

WORLD_THREADS = 2  # torch threads for pretraining the bases (see ensure_base)


def base_recipe(name: str) -> Path:
    if name not in BASES:
        raise RecipeError(f"unknown tiny-world base {name!r}: choose one of {sorted(BASES)}")
    return RECIPES_DIR / BASES[name]


def seed_flags(recipe: Path) -> list[str]:
    """`--seed` for training from `recipe` in the current world (none in world 0: the recipe's own seed)."""
    if not world_seed():
        return []
    import yaml

    return ["--seed", str(world_training_seed(int(yaml.safe_load(recipe.read_text()).get("seed", 0))))]


def base_path(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The cache folder of base model `name` (it may not be built yet)."""
    recipe = recipe or base_recipe(name)
    overrides = [*overrides, *seed_flags(recipe)]
    # only the model's own arguments: building an SFTConfig here would reset accelerate's distributed state
    script_args, _ = recipe_parser((PretrainArguments,)).parse_args_and_config(
        ["--config", str(recipe), *overrides], return_remaining_strings=True
    )
    tokenizer = world_tokenizer_path(script_args.tokenizer_family)
    key = content_key(recipe.read_bytes(), " ".join(overrides), tokenizer.name)
    return cache_root() / "tiny-world" / f"{name.replace('_', '-')}{world_tag()}-{key}"


def ensure_base(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The folder of base model `name`, pretraining it first if it is not cached."""

    recipe = recipe or base_recipe(name)
    path = base_path(name, recipe, overrides)

    overrides = [*overrides, *seed_flags(recipe)]

    def build(tmp: Path) -> None:
        logger.info("pretraining the tiny world's %s base from %s (cached in %s)", name, recipe, path)
        # Float sums depend on how many threads split them, and training amplifies the difference: pin the
        # count so the world is the same whatever the caller set (data builds run on one thread).
        threads = torch.get_num_threads()
        torch.set_num_threads(WORLD_THREADS)
        try:
            main(*parse(["--config", str(recipe), "--output_dir", str(tmp), *overrides]))
        finally:
            torch.set_num_threads(threads)

    return build_once(path, build)


def ensure_prompts(num_prompts: int = 400) -> Path:
    """Folder (`load_from_disk`) of world prompts in conversational form: train and test splits (for distillation)."""
    from datasets import Dataset, DatasetDict

    def rows(split: str, n: int) -> Dataset:
        return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in world_prompts(split, n)])

    path = cache_root() / "tiny-world" / f"prompts-{content_key(str(num_prompts))}"
    return build_once(path, lambda tmp: DatasetDict({"train": rows("train", num_prompts), "test": rows("test", 100)})
                      .save_to_disk(str(tmp)))  # fmt: skip


def ensure_teacher_outputs(num_prompts: int = 400, teacher: str = "strong", seed: int = 0) -> Path:
    """A JSONL of the `teacher` base's samples on world prompts (conversational prompt/completion), for
    sequence-level distillation; built once and cached."""
    import json

    teacher_dir = ensure_base(teacher)
    key = content_key(teacher_dir.name, str(num_prompts), str(seed))
    folder = cache_root() / "tiny-world" / f"teacher-outputs-{teacher.replace('_', '-')}-{key}"

    def build(tmp: Path) -> None:
        model, tokenizer = load_model_and_tokenizer(str(teacher_dir))
        prompts = world_prompts("train", num_prompts)
        responses = sample(model, tokenizer, prompts, max_new_tokens=64, seed=seed, progress=True)
        with open(tmp / "train.jsonl", "w") as f:
            for prompt, (response,) in zip(prompts, responses, strict=True):
                row = {"prompt": [{"role": "user", "content": prompt}],
                       "completion": [{"role": "assistant", "content": response}]}  # fmt: skip
                f.write(json.dumps(row) + "\n")

    return build_once(folder, build) / "train.jsonl"


def ensure_world(names: tuple[str, ...] = tuple(BASES), overrides: list[str] = ()) -> dict[str, Path]:
    """Every base model of the tiny world, built if needed."""
    return {name: ensure_base(name, overrides=overrides) for name in names}


@dataclass
class BaseReport:
    """How a base model writes the tiny world's language."""

    well_formed: float  # share of samples whose every sentence is well formed
    sentences_ok: float  # share of sampled sentences that are well formed
    reward_mean: float
    reward_std: float
    perplexity_per_word: float  # held-out, comparable across tokenizers
    architecture: str = ""  # e.g. "llama, 4 × 192"
    parameters: int = 0


@torch.no_grad()
def perplexity_per_word(model, tokenizer, reviews: list[Review], batch_size: int = 64) -> float:
    """exp(total NLL of the responses, end-of-turn included, / their words + 1 per review).

    Normalising by words, not tokens, makes models with different tokenizers comparable.
    """
    # log pi(review | prompt), EOS (the template's end of turn) included: guide/scoring.py
    logprobs = response_logprobs(
        model, tokenizer, [r.prompt for r in reviews], [r.response for r in reviews], True, batch_size=batch_size
    )
    nll = -sum(logprobs)
    words = sum(len(r.response.split()) + 1 for r in reviews)
    return math.exp(nll / words)


def report_base(path: Path, num_prompts: int = 200, seed: int = 0, max_new_tokens: int = 80) -> BaseReport:
    """Samples `num_prompts` test prompts at temperature 1 and scores them with the gold reward."""

    model, tokenizer = load_model_and_tokenizer(str(path))
    prompts = world_prompts("test", num_prompts)
    responses = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    scores = [score_review(p, r) for p, (r,) in zip(prompts, responses, strict=True)]
    rewards = [s.reward for s in scores]
    held_out = world_corpus("test", num_prompts + 200)[num_prompts:]  # reviews never prompted above
    return BaseReport(
        well_formed=sum(s.well_formed for s in scores) / len(scores),
        sentences_ok=sum(s.n_sentences - s.n_malformed for s in scores) / max(1, sum(s.n_sentences for s in scores)),
        reward_mean=statistics.mean(rewards),
        reward_std=statistics.stdev(rewards),
        perplexity_per_word=perplexity_per_word(model, tokenizer, held_out),
        architecture=f"{model.config.model_type}, {model.config.num_hidden_layers} × {model.config.hidden_size}",
        parameters=sum(p.numel() for p in model.parameters()),
    )


def show_samples(paths: dict[str, Path], *, num_prompts: int = 4, seed: int = 0, max_new_tokens: int = 80) -> None:
    """Prints each base model's continuations of the same test prompts with their gold reward."""

    prompts = world_prompts("test", num_prompts)
    for name, path in paths.items():
        model, tokenizer = load_model_and_tokenizer(str(path))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n== {name} base: {model.config.model_type}, {n_params / 1e6:.2f}M parameters ({path})")
        responses = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
        for prompt, (response,) in zip(prompts, responses, strict=True):
            score = score_review(prompt, response)
            verdict = "well-formed" if score.well_formed else "; ".join(score.errors)
            print(f"  [{score.reward:+6.2f}] {prompt} >> {response}   ({verdict})")


def bases_table(num_prompts: int = 300, seed: int = 0) -> str:
    """The base-model table of docs/tiny-world.md (`w2s world report`): how each base writes the world's language."""
    rows = ["| base | architecture | parameters | well-formed samples | well-formed sentences | gold reward (± sd) "
            "| perplexity / word |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip

    for name in BASES:
        r = report_base(ensure_base(name), num_prompts=num_prompts, seed=seed)
        rows.append(
            f"| {name} | {r.architecture} | "
            f"{r.parameters / 1e6:.2f}M | {r.well_formed:.1%} | {r.sentences_ok:.1%} | {r.reward_mean:+.2f} ± {r.reward_std:.2f} "
            f"| {r.perplexity_per_word:.2f} |"
        )
    return "\n".join(rows) + "\n"
