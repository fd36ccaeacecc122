"""Crash-safe files: an append-only JSONL log of finished work, and atomic whole-file writes.

A job killed at any instant leaves the log with whole records plus at most one
partial last line; :class:`JsonlLog` cuts that line off on opening, so a rerun
continues from the last record that reached the disk and never writes a record twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from w2s.guide.files import naming, write_atomic
from w2s.guide.shards import Shard, shard_log, shard_logs


class JsonlLog:
    """Records keyed by `key_field`, appended and flushed to disk batch by batch.

    With `shard` (i, n), this process appends to its own file (guide/shards.py `shard_log`) and reads every
    log of `path` that processes of any number wrote, so a shard sees the work of the others so far."""

    def __init__(self, path: Path, key_field: str, *, shard: Shard = (0, 1)):
        base = Path(path)
        self.path = shard_log(base, shard)
        self.key_field = key_field
        self.records: dict = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._load(self.path, own=True)
        for other in shard_logs(base):
            if other != self.path:
                self._load(other, own=False)

    def _load(self, path: Path, *, own: bool) -> None:
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data) and own:  # killed in the middle of a line: drop the fragment (another process's
            with open(path, "r+b") as f:  # last line may be one it is writing: only skipped)
                f.truncate(end)
        for n, line in enumerate(data[:end].splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path} line {n}: not valid JSON ({e.msg}); delete the file to start over") from e
            self.records.setdefault(rec[self.key_field], rec)

    def __contains__(self, key) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key):
        return self.records.get(key)

    def append(self, records: Iterable[dict]) -> None:
        """Writes the records not already present, then flushes them to disk."""
        new = [r for r in records if r[self.key_field] not in self.records]
        if not new:
            return
        with naming(self.path), open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self.records[r[self.key_field]] = r


def write_json(path: Path, data) -> None:
    """`data` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
