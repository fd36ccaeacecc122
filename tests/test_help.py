"""`--help` of every script and `w2s` command: its help once, exit 0, nothing built; a bad flag: one short line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from w2s.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["train/sft.py", "train/dpo.py", "train/distill.py", "train/pretrain.py"]
SUBCOMMANDS = {
    "world": ["build", "samples", "report"],
    "train": ["sft", "dpo", "distill", "guide"],
    "bench": ["guide", "data", "eval", "serve"],
    "data": ["build", "merge", "binarize"],
}
W2S = [[], *([name] for name in COMMANDS), *([name, sub] for name, subs in SUBCOMMANDS.items() for sub in subs)]
# `-h` too where a dispatcher reads the flag itself or hands it on to TRL's parser
SHORT = [["train/dpo.py"], [], ["train"], ["bench"], ["data"]]
CASES = (
    [[script, "--help"] for script in SCRIPTS]
    + [["-m", "w2s.cli", *command, "--help"] for command in W2S]
    + [[*command, "-h"] if command[:1] == ["train/dpo.py"] else ["-m", "w2s.cli", *command, "-h"] for command in SHORT]
)

GENERATE = ["-m", "w2s.cli", "generate", "--config", "recipes/tiny/guide.yaml"]


def run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    # an empty cache: anything that builds the tiny world (or fetches a model) would show up there
    env = {**os.environ, "W2S_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def test_every_command_is_covered():
    assert set(SUBCOMMANDS) <= set(COMMANDS)
    assert {" ".join(command[:1]) for command in W2S} == {"", *COMMANDS}


@pytest.mark.parametrize("args", CASES, ids=lambda args: " ".join(a for a in args if a not in ("-m", "w2s.cli")))
def test_help_prints_once_and_exits_0(args, tmp_path):
    cache = tmp_path / "cache"
    result = run(args, cache)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert [line for line in output.splitlines() if line.startswith("usage:")], output
    assert len([line for line in output.splitlines() if line.startswith("usage:")]) == 1, output  # printed once
    assert "error:" not in output.lower() and "Traceback" not in output, output
    assert not cache.exists() or not any(cache.iterdir()), "--help built or fetched something"


def test_help_loads_no_torch():
    """`--help` answers at once: no command's parser imports torch (the work loads when it runs)."""
    heavy = [["train", stage] for stage in ("sft", "dpo", "distill")]  # TRL's own parser builds these helps
    commands = [c for c in W2S if c not in heavy]
    script = (
        "import contextlib, io, sys\n"
        "from w2s.cli import main\n"
        f"for command in {commands!r}:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main([*command, '--help'])\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit(f'w2s {\" \".join(command)} --help imported torch')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("args", "flag", "value"),
    [
        (["train/dpo.py", "--beta", "abc"], "--beta", "abc"),
        (["train/pretrain.py", "--hidden_size", "abc"], "--hidden_size", "abc"),
        ([*GENERATE, "--temperature", "abc"], "--temperature", "abc"),
    ],
    ids=["dpo.py", "pretrain.py", "w2s-generate"],
)
def test_bad_float_flag_is_one_line(args, flag, value, tmp_path):
    cache = tmp_path / "cache"
    result = run(args, cache)
    lines = (result.stdout + result.stderr).strip().splitlines()
    assert result.returncode == 2, lines
    assert len(lines) == 1 and len(lines[0]) < 200, lines  # no usage before the message
    assert "error" in lines[0] and flag in lines[0] and value in lines[0], lines
    assert not cache.exists() or not any(cache.iterdir())
