"""The `w2s` command and the packaging."""

import subprocess
import sys
import zipfile
from pathlib import Path

from w2s.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_fails(capsys):
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_console_script_runs():
    out = subprocess.run([Path(sys.executable).parent / "w2s", "--help"], capture_output=True, text=True, check=True)
    assert "world" in out.stdout


def test_wheel_holds_every_stage_package(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("w2s-*.whl")
    names = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {"w2s", "data", "train", "guide", "eval"} <= names
