"""The allowed range of every numeric recipe key, declared once, on its dataclass field, and checked by the
recipe readers of every stage (guide, eval, data, train), so that a count, length or size of zero or below
is one line naming the key before any model loads:

    max_new_tokens: int = field(default=64, metadata=at_least(1))
    top_p: float = field(default=1.0, metadata=between(0, 1, low_open=True))
    beta: float = field(default=1.0, metadata=any_number())  # numeric, but every value means something

`docs/recipes.md` lists every such key with its range (tests/test_ranges.py keeps it in step and tries a
value outside each range).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RANGE = "w2s_range"  # the field-metadata key


@dataclass(frozen=True)
class Range:
    """An interval of allowed values; None for an unbounded end; `None` as a value is always allowed (the
    keys typed `int | None` read it as "all" or "the default")."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself excluded
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def __str__(self) -> str:
        if self.low is None and self.high is None:
            return "any number"
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def outside(self) -> list[float]:
        """Values just outside the range (for tests): each bounded end's first value not allowed."""
        out = []
        if self.low is not None:
            out.append(self.low if self.low_open else self.low - 1)
        if self.high is not None:
            out.append(self.high if self.high_open else self.high + 1)
        return out


def at_least(low: float) -> dict:
    """Field metadata: values >= `low` (counts: at_least(1))."""
    return {RANGE: Range(low)}


def above(low: float) -> dict:
    """Field metadata: values > `low`."""
    return {RANGE: Range(low, low_open=True)}


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> dict:
    """Field metadata: values from `low` to `high` (each end included unless open)."""
    return {RANGE: Range(low, high, low_open, high_open)}


def any_number() -> dict:
    """Field metadata: a numeric key whose every value is meaningful (a weight, a seed)."""
    return {RANGE: Range()}


def field_range(f: dataclasses.Field) -> Range | None:
    """The range a dataclass field declares, or None."""
    return f.metadata.get(RANGE)


def check_ranges(obj: Any, error: Callable[[str], Exception] = ValueError, prefix: str = "") -> None:
    """Raises `error(message)` naming the first field of dataclass `obj` (or of a dataclass it holds, alone or in a
    list: `generators[0].num_samples`) whose value is outside its declared range."""
    for f in dataclasses.fields(obj):
        value, name = getattr(obj, f.name), f"{prefix}{f.name}"
        allowed = field_range(f)
        if allowed is not None and isinstance(value, int | float) and not isinstance(value, bool):
            if value not in allowed:
                raise error(f"{name} must be {allowed}, got {value!r}")
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_ranges(value, error, f"{name}.")
        elif isinstance(value, list):
            for i, item in enumerate(value):
                if dataclasses.is_dataclass(item) and not isinstance(item, type):
                    check_ranges(item, error, f"{name}[{i}].")


def range_rows(cls: type) -> list[tuple[str, str, str, str]]:
    """(key, type, default, range) of each field of dataclass `cls` that declares a range."""
    rows, hints = [], typing.get_type_hints(cls)  # the annotations (HF's parser rewrites a field's `type`)
    for f in dataclasses.fields(cls):
        allowed = field_range(f)
        if allowed is None:
            continue
        default = f.default if f.default is not dataclasses.MISSING else "(required)"
        hint = hints[f.name]
        rows.append((f.name, hint.__name__ if isinstance(hint, type) else str(hint), repr(default), str(allowed)))
    return rows
