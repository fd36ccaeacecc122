"""The tiny world's base models: built from `recipes/tiny/base_*.yaml` on first use and cached.

Each model lives in `<cache>/tiny-world/<name>-<key>/`, where the key hashes
its recipe, its tokenizer and the world's version, so editing a recipe builds
a new model and never serves a stale one. Set `W2S_CACHE` to move the cache.
"""

from __future__ import annotations

import logging
from pathlib import Path

from data.world.cache import build_once, cache_root, content_key
from data.world.tokenizers import world_tokenizer_path

logger = logging.getLogger(__name__)

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
BASES = {"strong": "base_strong.yaml", "weak": "base_weak.yaml", "weak_b": "base_weak_b.yaml"}


def base_recipe(name: str) -> Path:
    if name not in BASES:
        raise ValueError(f"unknown tiny-world base {name!r}: choose one of {sorted(BASES)}")
    return RECIPES_DIR / BASES[name]


def base_path(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The cache folder of base model `name` (it may not be built yet)."""
    from train.pretrain import parse

    recipe = recipe or base_recipe(name)
    script_args, _ = parse(["--config", str(recipe), "--output_dir", "unused", *overrides])
    tokenizer = world_tokenizer_path(script_args.tokenizer_family)
    key = content_key(recipe.read_bytes(), " ".join(overrides), tokenizer.name)
    return cache_root() / "tiny-world" / f"{name.replace('_', '-')}-{key}"


def ensure_base(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The folder of base model `name`, pretraining it first if it is not cached."""
    from train.pretrain import main, parse

    recipe = recipe or base_recipe(name)
    path = base_path(name, recipe, overrides)

    def build(tmp: Path) -> None:
        logger.info("pretraining the tiny world's %s base from %s (cached in %s)", name, recipe, path)
        main(*parse(["--config", str(recipe), "--output_dir", str(tmp), *overrides]))

    return build_once(path, build)


def ensure_world(names: tuple[str, ...] = tuple(BASES), overrides: list[str] = ()) -> dict[str, Path]:
    """Every base model of the tiny world, built if needed."""
    return {name: ensure_base(name, overrides=overrides) for name in names}


def show_samples(paths: dict[str, Path], *, num_prompts: int = 4, seed: int = 0, max_new_tokens: int = 80) -> None:
    """Prints each base model's continuations of the same test prompts with their gold reward."""
    from data.world import score_review, world_prompts
    from guide.models import load_model_and_tokenizer
    from guide.sampling import sample

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
