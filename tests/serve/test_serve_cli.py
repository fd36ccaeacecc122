"""Bad input to `w2s serve` is one line and exit status 2, before any model loads (guide/commands.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from tests.serve.conftest import ROOT

GUIDE = ["--config", "recipes/tiny/guide.yaml"]


def serve(args: list[str]) -> list[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("W2S_UNSET_KEY", None)
    result = subprocess.run([sys.executable, "-m", "w2s.cli", "serve", *args], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, lines
    assert len(lines) == 1 and "Traceback" not in lines[0], lines
    return lines


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--config", "recipes/tiny/nope.yaml"], "nope.yaml"),
        ([*GUIDE, "--widht", "2"], "--widht"),
        ([*GUIDE, "--api_key_env", "W2S_UNSET_KEY"], "W2S_UNSET_KEY"),
        (["--config", "recipes/tiny/eval.yaml", "--systems", "base,nope"], "'nope'"),
        ([*GUIDE, "--max_queue", "0"], "--max_queue"),
    ],
    ids=["no-recipe", "unknown-key", "unset-key", "unknown-system", "bad-flag"],
)
def test_bad_input_is_one_line_and_exit_2(args, named):
    assert named in serve(args)[0]


def test_a_port_in_use_is_one_line_before_any_model_loads():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        (line,) = serve([*GUIDE, "--port", str(taken.getsockname()[1])])
    assert "cannot listen on 127.0.0.1" in line
