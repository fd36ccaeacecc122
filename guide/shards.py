"""Spreading a job's items over processes: `--shard i/n`, or each process's rank under `accelerate launch`.

Item k belongs to shard k mod n, so every shard takes items from the whole set (long and short ones spread
evenly). Every random stream of w2s is keyed by its item (guide/engine.py), never by a batch or a process,
so the outputs of n processes are the outputs of one. Each shard appends to its own log (`<log>.<i>-of-<n>`
suffix; none for one process; guide/logs.py) and readers take the union of every log, whatever n wrote it: a
run resumed with another number of processes reuses every finished item. A `ShardedJob` decides which
process merges the shards' work: the last one to finish.
"""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from w2s.guide.files import RecipeError, write_atomic

Shard = tuple[int, int]  # (i, n): this process is shard i of n


def parse_shard(spec: str | None) -> Shard:
    """`i/n` (this process's share), else the rank under `accelerate launch` (RANK, WORLD_SIZE), else 0/1."""
    if spec is None:
        return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    try:
        i, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise RecipeError(f"--shard {spec!r}: expected i/n, e.g. 0/4") from None
    if not 0 <= i < n:
        raise RecipeError(f"--shard {spec!r}: i must be in 0..n-1")
    return i, n


def shard_items(count: int, shard: Shard) -> list[int]:
    """The items of `count` that shard (i, n) takes: i, i + n, i + 2n, ..."""
    i, n = shard
    return list(range(i, count, n))


def shard_log(path: Path, shard: Shard) -> Path:
    """The log shard (i, n) appends to: `path` itself for one process, else `<stem>.<i>-of-<n><suffix>`."""
    i, n = shard
    return path if n == 1 else path.with_name(f"{path.stem}.{i}-of-{n}{path.suffix}")


def shard_logs(path: Path) -> list[Path]:
    """Every log of `path` on disk, whatever number of processes wrote it (`path` first, then by name)."""
    others = sorted(
        p for p in path.parent.glob(f"{glob.escape(path.stem)}.*-of-*{path.suffix}") if _is_shard_of(p, path)
    )
    return ([path] if path.exists() else []) + others


def _is_shard_of(candidate: Path, path: Path) -> bool:
    middle = candidate.name[len(path.stem) + 1 : len(candidate.name) - len(path.suffix)]
    i, _, n = middle.partition("-of-")
    return i.isdigit() and n.isdigit()


class ShardedJob:
    """Shard (i, n) of a job spread over n processes: the items it takes, and whether it is the last to finish.

    Each shard marks its share finished in the folder `marks` (a file `<i>-of-<n>`); under a file lock beside
    it, the shard that finds the marks of all n is the last to finish, and merges (exactly one does); the marks
    go once it merged (with them any an earlier run over another number of processes left). What a merge does
    is the job's own: this only decides who does it.
    """

    def __init__(self, marks: str | Path, shard: Shard = (0, 1)):
        self.marks, self.shard = Path(marks), shard

    def items(self, count: int) -> list[int]:
        """The items of `count` this shard takes (`shard_items`)."""
        return shard_items(count, self.shard)

    def begin(self) -> None:
        """This shard runs (again): its share is not finished until `finish` says so."""
        i, n = self.shard
        (self.marks / f"{i}-of-{n}").unlink(missing_ok=True)

    @contextmanager
    def finish(self, *, force: bool = False) -> Iterator[bool]:
        """Marks this shard's share finished and yields whether it is the last to finish (it then merges inside
        the `with`, under the lock); the marks go once that merge returns (one that raises keeps them).
        `force`: a merge asked for by hand (`--merge`, `w2s data merge`): yields True, marking nothing."""
        i, n = self.shard
        self.marks.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{self.marks}.lock"):
            if not force:
                write_atomic(self.marks / f"{i}-of-{n}", "")
            last = force or all((self.marks / f"{k}-of-{n}").exists() for k in range(n))
            yield last
            if last:
                shutil.rmtree(self.marks, ignore_errors=True)
