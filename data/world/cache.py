"""Where the tiny world keeps what it builds, and how a build is made atomic."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

from w2s.guide.files import remove_stale_temps, temp_dir

# Bump when the grammar, the reward or the tokenizers change: every cached model depends on them.
WORLD_VERSION = "4"


def cache_root() -> Path:
    """`$W2S_CACHE`, else `$XDG_CACHE_HOME/w2s`, else `~/.cache/w2s`."""
    if os.environ.get("W2S_CACHE"):
        return Path(os.environ["W2S_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "w2s"


def world_seed() -> int:
    """The world seed, `$W2S_WORLD_SEED` (default 0): it seeds the training of every tiny-world model.

    One machine's build is not the world: CPUs differ in their floating-point kernels and training
    amplifies the difference, so the same seeds give other models on another CPU. Worlds built from
    other seeds stand in for other machines; tests and findings must hold on several of them.
    """
    raw = os.environ.get("W2S_WORLD_SEED", "").strip() or "0"
    if not raw.isdigit():
        raise ValueError(f"W2S_WORLD_SEED={raw!r}: the world seed must be a whole number >= 0 (e.g. W2S_WORLD_SEED=1)")
    return int(raw)


def world_training_seed(recipe_seed: int) -> int:
    """The training seed of a tiny-world model whose recipe says `recipe_seed`, in the current world."""
    return recipe_seed + world_seed()


def world_tag() -> str:
    """'' for the default world 0, else '-seed<N>': part of each cached model's folder name."""
    return f"-seed{world_seed()}" if world_seed() else ""


def content_key(*parts: str | bytes, seeded: bool = True) -> str:
    """A short hash of everything a cached artefact depends on, the world seed included unless `seeded=False`
    (the world's language and tokenizers are the same in every world)."""
    h = hashlib.sha256(WORLD_VERSION.encode())
    if seeded and world_seed():  # world 0 keeps the keys it had before seeds existed
        h.update(f"world-seed={world_seed()}\0".encode())
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


_BUILDS: dict[Path, FileLock] = {}


def _one_build_at_a_time(folder: Path) -> FileLock:
    """A machine-wide lock on building tiny-world artefacts (re-entrant within a process).

    Builds train models on every core; two at once (two test sessions, a demo beside a test run) would
    oversubscribe the cores and each take several times as long.
    """
    folder = folder.resolve()
    if folder not in _BUILDS:
        folder.mkdir(parents=True, exist_ok=True)
        _BUILDS[folder] = FileLock(str(folder / ".build.lock"))
    return _BUILDS[folder]


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """Runs `build(tmp_dir)` unless `path` exists, then moves the result to `path` atomically.

    A crashed build leaves no half-written `path`; concurrent callers wait on a lock, and builds
    on one machine run one at a time.
    """
    if path.is_dir():
        return path
    with _one_build_at_a_time(path.parent), _locked(path):  # this order: a build may build what it needs
        if path.is_dir():
            return path
        remove_stale_temps(path.parent, recursive=False)  # a killed build's half-built folder (its process is gone)
        tmp = temp_dir(path)
        try:
            build(tmp)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path
