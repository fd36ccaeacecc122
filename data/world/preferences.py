"""Gold-judged preference pairs on the tiny world, in TRL's conversational format.

A quick, cached builder: sample responses from a model, judge them with the
gold reward (or one of its two attributes, for an expert), keep best vs worst
per prompt (ties dropped). The general
GenerAlign-style pipeline lives in `data/`; this is the tiny world's default set.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from datasets import Dataset, DatasetDict, load_from_disk

from w2s.data.world.cache import build_once, cache_root, content_key
from w2s.data.world.grammar import world_prompts
from w2s.data.world.reward import REWARDS
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
    reward: str = "gold",
) -> DatasetDict:
    """Best-vs-worst pairs of `model_path`'s samples on the world's train prompts, judged by `reward` (gold,
    sentiment or topic)."""
    if reward not in REWARDS:
        raise ValueError(f"unknown tiny-world reward {reward!r}: choose one of {sorted(REWARDS)}")

    prompts = world_prompts("train", num_prompts)
    samples = world_samples(
        model_path, num_prompts=num_prompts, samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens,
        seed=seed,
    )  # fmt: skip
    responses = json.loads(samples.read_text())
    rows = []
    for prompt, candidates in zip(prompts, responses, strict=True):
        scores = REWARDS[reward]([prompt] * len(candidates), candidates)
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


def world_samples(model_path: str | Path, *, num_prompts: int, samples_per_prompt: int, max_new_tokens: int,
                  seed: int) -> Path:  # fmt: skip
    """A JSON file of `model_path`'s samples on the world's first `num_prompts` train prompts (a list of
    `samples_per_prompt` responses per prompt), sampled once and cached: the pairs of every reward share them."""
    settings = dict(num_prompts=num_prompts, samples_per_prompt=samples_per_prompt, max_new_tokens=max_new_tokens,
                    seed=seed)  # fmt: skip
    folder = (
        cache_root() / "tiny-world" / f"samples-{content_key(Path(model_path).name, repr(sorted(settings.items())))}"
    )

    def build(tmp: Path) -> None:
        model, tokenizer = load_model_and_tokenizer(str(model_path))
        prompts = world_prompts("train", num_prompts)
        responses = sample(
            model, tokenizer, prompts, num_samples=samples_per_prompt, max_new_tokens=max_new_tokens, seed=seed,
            progress=True,
        )  # fmt: skip
        (tmp / "samples.json").write_text(json.dumps(responses))

    return build_once(folder, build) / "samples.json"


def world_preferences(model_path: str | Path, **kwargs) -> Path:
    """Folder (`load_from_disk`) of :func:`build_world_preferences`' pairs, built once and cached."""
    key = content_key(Path(model_path).name, repr(sorted(kwargs.items())))
    path = cache_root() / "tiny-world" / f"preferences-{key}"
    return build_once(path, lambda tmp: build_world_preferences(model_path, **kwargs).save_to_disk(tmp))


__all__ = ["build_world_preferences", "load_from_disk", "world_preferences", "world_samples"]
