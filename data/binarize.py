"""Binarising multi-response rated sets (UltraFeedback style) into preference pairs.

Each row holds a prompt and several completions, each with one or more ratings;
a completion's score is the mean of its ratings (ratings that are missing or not
numbers, such as "N/A", are skipped). The highest-scoring completion is chosen
and a random strictly lower one rejected (seeded per row); rows whose
completions all tie are dropped.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.data.prompts import PromptError, read_dataset_rows, read_json_rows, to_messages
from w2s.guide.files import RecipeError, remove_stale_temps, temp_dir
from w2s.guide.ranges import any_number, between, check_ranges

logger = logging.getLogger(__name__)


@dataclass
class BinarizeConfig:
    """Where a rated set keeps its prompt, completions and ratings (UltraFeedback's layout by default)."""

    split: str = "train"
    prompt_field: str = "instruction"
    completions_field: str = "completions"
    response_key: str = "response"
    model_key: str = "model"
    rating_keys: list[str] = field(
        default_factory=lambda: [
            "annotations.helpfulness.Rating",
            "annotations.honesty.Rating",
            "annotations.instruction_following.Rating",
            "annotations.truthfulness.Rating",
        ]
    )
    test_fraction: float = field(default=0.05, metadata=between(0, 1, high_open=True))
    seed: int = field(default=0, metadata=any_number())

    def __post_init__(self):
        check_ranges(self, RecipeError)


def _dig(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if isinstance(obj, dict) and part in obj:
            obj = obj[part]
        elif isinstance(obj, list) and part.isdigit() and int(part) < len(obj):
            obj = obj[int(part)]
        else:
            return None
    return obj


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def binarize_rows(rows: list[tuple[str, dict]], config: BinarizeConfig) -> tuple[list[dict], dict[str, int]]:
    """Preference rows (TRL conversational) from `(where, row)` pairs, and how many rows each reason dropped."""
    out, counts = [], {"rows": len(rows), "fewer than 2 rated completions": 0, "all tied": 0, "empty prompt": 0}
    for index, (where, row) in enumerate(rows):
        if config.prompt_field not in row:
            raise PromptError(
                f"{where}: no field {config.prompt_field!r} (it has {', '.join(row)}); set --prompt_field"
            )
        if config.completions_field not in row:
            raise PromptError(f"{where}: no field {config.completions_field!r}; set --completions_field")
        prompt = to_messages(row[config.prompt_field], f"{where}: field {config.prompt_field!r}")
        if prompt is None:
            counts["empty prompt"] += 1
            continue
        rated = []
        for c in row[config.completions_field] or []:
            ratings = [x for x in (_number(_dig(c, k)) for k in config.rating_keys) if x is not None]
            response = _dig(c, config.response_key)
            if ratings and isinstance(response, str) and response.strip():
                rated.append((statistics.fmean(ratings), response, str(_dig(c, config.model_key) or "")))
        if len(rated) < 2:
            counts["fewer than 2 rated completions"] += 1
            continue
        best = max(rated, key=lambda c: c[0])
        lower = [c for c in rated if c[0] < best[0]]
        if not lower:
            counts["all tied"] += 1
            continue
        rejected = random.Random(f"binarize:{config.seed}:{index}").choice(lower)
        out.append(
            {
                "prompt": prompt,
                "chosen": [{"role": "assistant", "content": best[1]}],
                "rejected": [{"role": "assistant", "content": rejected[1]}],
                "score_chosen": best[0],
                "score_rejected": rejected[0],
                "generator_chosen": best[2],
                "generator_rejected": rejected[2],
            }
        )
    counts["pairs"] = len(out)
    return out, counts


def binarize_to_disk(source: str, output_dir: str | Path, config: BinarizeConfig) -> Path:
    """Binarises `source` (hub id, `save_to_disk` folder, .json/.jsonl) into a train/test DatasetDict on disk."""
    from datasets import Dataset

    path = Path(source).expanduser()
    if path.suffix in (".json", ".jsonl"):
        if not path.is_file():
            raise PromptError(f"{source}: no such file")
        rows = read_json_rows(path)
    else:
        rows = read_dataset_rows(source, config.split, None)
    pairs, counts = binarize_rows(rows, config)
    if not pairs:
        raise PromptError(f"{source}: no row gave a pair ({counts})")
    data = Dataset.from_list(pairs)
    splits = data.train_test_split(test_size=config.test_fraction, seed=config.seed) if config.test_fraction else None
    output_dir = Path(output_dir)
    if output_dir.exists():
        raise PromptError(f"{output_dir}: already exists; choose a new --output_dir")
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(output_dir.parent, recursive=False)
    tmp = temp_dir(output_dir)
    try:
        (splits or data).save_to_disk(str(tmp / "data"))
        os.replace(tmp / "data", output_dir)  # all or nothing
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    logger.info("binarised %s: %s", source, counts)
    return output_dir
