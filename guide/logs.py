"""The resumable log of a long job: finished records appended to a JSONL file, batch by batch.

A job killed at any instant leaves its log with whole records plus at most one partial last line; the
log drops that line on reading (and cuts it off its own file), so a rerun continues from the last record
that reached the disk and never writes a record twice. The first line of a log may hold what its records
were made by (e.g. the outputs' recipe and the sampler): a log of another header is refused, never mixed
in. Each shard of a job appends to its own file (guide/shards.py `shard_log`) and reads the union of every
shard's log (`shard_logs`), whatever number of processes wrote them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from w2s.guide.commands import GuideError
from w2s.guide.files import jsonl_rows, naming
from w2s.guide.shards import Shard, shard_log, shard_logs


class LogMismatch(GuideError):
    """A log left by a run of another recipe (or sampler, ...): its header's `field` was `was`, not `now`."""

    def __init__(self, path: Path, field: str, was, now):
        self.path, self.field, self.was, self.now = path, field, was, now
        super().__init__(
            f"{path}: left by a run of another {field} (was {was!r}, now {now!r}): delete it to start again"
        )


def read_lines(path: Path) -> list:
    """The whole lines of a JSONL log, parsed (a line cut by a kill is dropped); a whole line that is not JSON
    is an error naming the file and line."""
    data = path.read_bytes()
    try:
        return [row for _, row in jsonl_rows(data[: data.rfind(b"\n") + 1].splitlines(), path, GuideError)]
    except GuideError as e:
        raise GuideError(f"{e}: delete the file to start again") from None


class ResumableLog:
    """Records keyed by their `key` field, in this shard's file of the log `path`, read from every shard's.

    With a `header` (a dict: what the records were made by), each file's first line is that header, checked
    field by field on opening (`LogMismatch`); a field named in `since` may be missing from the header of a log
    written before the field was (an older release). A file is written once it has a record (opening writes
    nothing)."""

    def __init__(
        self, path: str | Path, key: str, *, header: dict | None = None, since: tuple = (), shard: Shard = (0, 1)
    ):
        base = Path(path)
        self.path, self.key, self.header, self.since = shard_log(base, shard), key, header, since
        self.records: dict = {}
        for log in shard_logs(base):
            if log == self.path:  # its own: a line cut by a kill is cut off (another's may be being written)
                _cut_partial_line(log)
            self._load(log)

    def _load(self, path: Path) -> None:
        lines = read_lines(path)
        if self.header is not None and lines:
            first = lines[0] if isinstance(lines[0], dict) else {}
            for field, now in self.header.items():
                if field in self.since and field not in first:
                    continue
                if first.get(field) != now:
                    raise LogMismatch(path, field, first.get(field), now)
            lines = lines[1:]
        for record in lines:
            self.records.setdefault(record[self.key], record)

    def __contains__(self, key) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def get(self, key):
        return self.records.get(key)

    def append(self, records: Iterable[dict]) -> None:
        """Writes the records not already present (headed by the header in a new file), flushed and fsynced."""
        new = [r for r in records if r[self.key] not in self.records]
        if not new:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with naming(self.path), open(self.path, "a", encoding="utf-8") as f:  # a full disk names the log
            head = [self.header] if self.header is not None and f.tell() == 0 else []
            f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in head + new))
            f.flush()
            os.fsync(f.fileno())
        for r in new:
            self.records[r[self.key]] = r


def _cut_partial_line(path: Path) -> None:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):  # killed in the middle of a line: drop the fragment
        with open(path, "r+b") as f:
            f.truncate(end)


def log_header(path: Path) -> dict | None:
    """The first whole line of the log `path` (its header, in a log that has one); None if it has none yet."""
    lines = read_lines(path) if path.exists() else []
    return lines[0] if lines and isinstance(lines[0], dict) else None
