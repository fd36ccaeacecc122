"""Gold-judged preference pairs on the tiny world, in TRL's conversational format.

A quick, cached builder: sample responses from a model, judge them with the
gold reward, keep best vs worst per prompt (ties dropped). The general
GenerAlign-style pipeline lives in `data/`; this is the tiny world's default set.
"""

from __future__ import annotations

import logging
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from w2s.data.world.cache import build_once, cache_root, content_key
from w2s.data.world.grammar import world_prompts
from w2s.data.world.reward import gold_reward
from w2s.guide.models import load_model_and_tokenizer
from w2s.guide.sampling import sample

logger = logging.getLogger(__name__)


def build_world_preferences(
    model_path: str | Path,
    *,
    num_prompts: int = 600,
    samples_per_prompt: int = 4,
    max_new_tokens: int = 64,
    test_fraction: float = 0.15,
    seed: int = 0,
) -> DatasetDict:
    """Best-vs-worst gold-judged pairs of `model_path`'s samples on the world's train prompts."""

    model, tokenizer = load_model_and_tokenizer(str(model_path))
    prompts = world_prompts("train", num_prompts)
    responses = sample(
        model, tokenizer, prompts, num_samples=samples_per_prompt, max_new_tokens=max_new_tokens, seed=seed,
        progress=True,
    )  # fmt: skip
    rows = []
    for prompt, candidates in zip(prompts, responses, strict=True):
        scores = gold_reward([prompt] * len(candidates), candidates)
        best = max(range(len(candidates)), key=scores.__getitem__)
        worst = min(range(len(candidates)), key=scores.__getitem__)
        if scores[best] == scores[worst]:
            continue  # a tie teaches nothing
        rows.append(
            {
                "prompt": [{"role": "user", "content": prompt}],
                "chosen": [{"role": "assistant", "content": candidates[best]}],
                "rejected": [{"role": "assistant", "content": candidates[worst]}],
                "score_chosen": scores[best],
                "score_rejected": scores[worst],
            }
        )
    return Dataset.from_list(rows).train_test_split(test_size=test_fraction, seed=seed)


def world_preferences(model_path: str | Path, **kwargs) -> Path:
    """Folder (`load_from_disk`) of :func:`build_world_preferences`' pairs, built once and cached."""
    key = content_key(Path(model_path).name, repr(sorted(kwargs.items())))
    path = cache_root() / "tiny-world" / f"preferences-{key}"
    return build_once(path, lambda tmp: build_world_preferences(model_path, **kwargs).save_to_disk(tmp))


__all__ = ["build_world_preferences", "load_from_disk", "world_preferences"]
