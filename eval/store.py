"""Crash-safe whole-file writes of eval's results (its logs are guide/logs.py's `ResumableLog`)."""

from __future__ import annotations

import json
from pathlib import Path

from w2s.guide.files import write_atomic


def write_json(path: Path, data) -> None:
    """`data` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
