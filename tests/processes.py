"""Helpers for the tests that kill a real run (SIGKILL) mid-way and resume it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest


def kill_when(
    args: list[str], cwd: Path, ready: Callable[[], bool], what: str, timeout: float = 300, env: dict | None = None
) -> None:
    """Starts `python <args>` and SIGKILLs it, with every process it started (e.g. a launcher's workers), as
    soon as `ready()` holds; fails the test, with the run's stderr, if it ends first, or if `ready()` does not
    hold within `timeout` seconds (`what` says what)."""
    proc = subprocess.Popen(
        [sys.executable, *args], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        start_new_session=True,  # its own process group: killed as a whole
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} within {timeout:.0f} s")
            time.sleep(0.002)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)
