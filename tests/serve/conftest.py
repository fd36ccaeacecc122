"""`w2s serve` in a subprocess on loopback, and `w2s generate` of the same prompts to compare its answers with."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from w2s.guide.cli import generate
from w2s.guide.vllm import stop_group

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0  # seconds to load the systems and listen (about 8 s for the tiny eval recipe's 14 on 2 cores)


@contextlib.contextmanager
def w2s_serve(args: list[str], log: Path, env: dict | None = None) -> Iterator[str]:
    """`w2s serve <args> --port 0` in its own process group; yields its base URL (…/v1) once /health answers, and
    stops it on exit. Its stderr goes to `log`."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "w2s.cli", "serve", *args, "--port", "0"], cwd=ROOT, stdout=subprocess.PIPE,
            stderr=err, text=True, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, start_new_session=True,
        )  # fmt: skip
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT)
        if not line or "http://" not in line[0]:
            proc.kill()
            pytest.fail(f"w2s serve did not start: {log.read_text()[-2000:]}")
        url = line[0].split()[-1]
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=5):
                    break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"w2s serve does not answer /health: {log.read_text()[-2000:]}")
                time.sleep(0.1)
        yield url
    finally:
        stop_group(proc, grace=15)
        proc.stdout.close()


def health(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/health", timeout=10) as response:
        return json.loads(response.read())


def generated(recipe: dict, prompts: list[str], folder: Path, *flags: str) -> list[str]:
    """What `w2s generate` writes for `prompts` under the guide recipe `recipe` (and `flags`): each output's text."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "guide.yaml").write_text(yaml.safe_dump(recipe))
    (folder / "prompts.json").write_text(json.dumps([{"instruction": p} for p in prompts]))
    out = folder / "out.json"
    argv = ["--config", str(folder / "guide.yaml"), "--prompts", str(folder / "prompts.json"), "--output", str(out)]
    assert generate([*argv, *flags]) == 0
    return [item["output"] for item in json.loads(out.read_text())]
