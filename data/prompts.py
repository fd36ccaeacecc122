"""Prompt sources: hub ids, `save_to_disk` folders, JSON/JSONL files, and the tiny world's prompt set.

Every prompt becomes a list of chat messages ending with the user's turn; a
field may hold a plain string (one user message) or a list of messages (the
conversation up to its last user message is kept).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from w2s.data.world import world_prompts
from w2s.guide.commands import UserError
from w2s.guide.files import read_rows

logger = logging.getLogger(__name__)

Messages = list[dict[str, str]]
TINY_PREFIX = "tiny:"
TINY_DEFAULT_SIZE = 600


class PromptError(UserError, ValueError):
    """A prompt source that cannot be read: the message names the file, line or field."""


def prompt_text(messages: Messages) -> str:
    """The last user message of a prompt: what rules, filters and the tiny world's reward read."""
    return next(m["content"] for m in reversed(messages) if m["role"] == "user")


def to_messages(value: Any, where: str) -> Messages | None:
    """A field's value (a string or chat messages) as chat messages; None for an empty prompt."""
    if isinstance(value, str):
        return [{"role": "user", "content": value}] if value.strip() else None
    if isinstance(value, list) and all(isinstance(m, dict) and {"role", "content"} <= m.keys() for m in value):
        last_user = max((i for i, m in enumerate(value) if m["role"] == "user"), default=None)
        if last_user is None:
            raise PromptError(f"{where}: the messages hold no user turn")
        messages = [{"role": m["role"], "content": m["content"]} for m in value[: last_user + 1]]
        return messages if messages[-1]["content"].strip() else None
    raise PromptError(f"{where}: expected a string or a list of {{role, content}} messages, got {value!r:.80}")


def read_json_rows(path: Path) -> list[tuple[str, Any]]:
    """(where, row) for each object of a .jsonl or .json prompt file (guide/files.py), errors as PromptError."""
    return read_rows(path, PromptError)


def read_dataset_rows(source: str, split: str, subset: str | None) -> list[tuple[str, Any]]:
    """(where, row) for each row of a `save_to_disk` folder or a hub data set's split."""
    from datasets import Dataset, DatasetDict, load_dataset, load_from_disk

    path = Path(source).expanduser()
    if path.is_dir():
        data = load_from_disk(str(path))
        if isinstance(data, DatasetDict):
            if split not in data:
                raise PromptError(f"{source}: no split {split!r} (it has {', '.join(data)}); set prompt_split")
            data = data[split]
    else:
        try:
            data = load_dataset(source, subset, split=split)
        except Exception as e:  # the hub raises many types; the message is what matters
            raise PromptError(f"{source}: not a local file or folder, and the hub did not serve it ({e})") from e
    assert isinstance(data, Dataset)
    return [(f"{source} [{split}] row {i}", row) for i, row in enumerate(data)]


def load_prompts(
    source: str,
    *,
    field: str = "prompt",
    split: str = "train",
    subset: str | None = None,
    limit: int | None = None,
) -> tuple[list[Messages], int]:
    """The prompts of `source` as chat messages (first `limit`), and how many empty ones were dropped."""
    if source.startswith(TINY_PREFIX):
        rows = [
            (f"{source} item {i}", {field: p})
            for i, p in enumerate(world_prompts(source[len(TINY_PREFIX) :], limit or TINY_DEFAULT_SIZE))
        ]
    else:
        path = Path(source).expanduser()
        if path.suffix in (".json", ".jsonl"):
            if not path.is_file():
                raise PromptError(f"{source}: no such prompt file")
            rows = read_json_rows(path)
        else:
            rows = read_dataset_rows(source, split, subset)
    if limit is not None:
        rows = rows[:limit]
    prompts, empty = [], 0
    for where, row in rows:
        if not isinstance(row, dict):
            raise PromptError(f"{where}: expected an object with a {field!r} field, got {row!r:.80}")
        if field not in row:
            raise PromptError(
                f"{where}: no field {field!r} (it has {', '.join(map(str, row)) or 'none'}); set prompt_field"
            )
        messages = to_messages(row[field], f"{where}: field {field!r}")
        if messages is None:
            empty += 1
        else:
            prompts.append(messages)
    if not prompts:
        raise PromptError(f"{source}: the prompt set is empty (field {field!r}, {len(rows)} rows, {empty} empty)")
    return prompts, empty
