"""Where the tiny world keeps what it builds, and how a build is made atomic."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock

# Bump when the grammar, the reward or the tokenizers change: every cached model depends on them.
WORLD_VERSION = "2"


def cache_root() -> Path:
    """`$W2S_CACHE`, else `$XDG_CACHE_HOME/w2s`, else `~/.cache/w2s`."""
    if os.environ.get("W2S_CACHE"):
        return Path(os.environ["W2S_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "w2s"


def content_key(*parts: str | bytes) -> str:
    """A short hash of everything a cached artefact depends on."""
    h = hashlib.sha256(WORLD_VERSION.encode())
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        yield


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """Runs `build(tmp_dir)` unless `path` exists, then moves the result to `path` atomically.

    A crashed build leaves no half-written `path`; concurrent callers wait on a lock.
    """
    if path.is_dir():
        return path
    with _locked(path):
        if path.is_dir():
            return path
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            build(tmp)
            tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return path
