"""File and recipe helpers shared by every stage (the lowest layer holds them): atomic writes, strict YAML
recipes, did-you-mean hints."""

from __future__ import annotations

import difflib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import yaml

from w2s.guide.commands import UserError


class RecipeError(UserError, ValueError):
    """A recipe or a flag that cannot be used (unknown key, wrong type, missing file or column): every stage's."""


def write_atomic(path: str | Path, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, syncs it, then renames it over `path`.

    Readers see the old file or the new one, never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_recipe(path: str | Path, error: type[Exception] = ValueError) -> dict:
    """A recipe file's top-level YAML mapping (empty file: {}); `error` naming the file when it cannot be one."""
    path = Path(path)
    if not path.is_file():
        raise error(f"recipe {str(path)!r}: no such file")
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise error(f"{path}: not valid YAML ({e})") from e
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise error(f"{path}: a recipe is a YAML mapping of key: value, got {type(values).__name__}")
    return values


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest of `choices` to a mistyped key, or ''."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""
