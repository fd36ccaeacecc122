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


def test_install_puts_only_w2s_into_site_packages(tmp_path):
    """`pip install` of the project: one top-level package, `w2s` (with the stages and recipes inside), and its
    dist-info; a user's own `data/` or `train/` package is never shadowed."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path, ROOT],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("w2s-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"w2s", f"{wheel.name.split('-py')[0]}.dist-info"}
    for module in ("guide/engine.py", "data/world/grammar.py", "train/dpo.py", "eval/run.py", "cli.py"):
        assert f"w2s/{module}" in names
    assert "w2s/recipes/tiny/dpo.yaml" in names  # the tiny world's recipes travel with the package
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        check=True,
        capture_output=True,
    )
    assert {p.name for p in target.iterdir() if not p.name.endswith(".dist-info")} == {"w2s", "bin"}  # bin: the command


def test_a_user_project_with_its_own_data_and_train_packages_imports_both(tmp_path):
    project = tmp_path / "project"
    for package in ("data", "train"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"WHO = {package!r}\n")
    script = (
        "import data, train, w2s.data.world, w2s.train.recipes\n"
        "print(data.WHO, '|', train.WHO, '|', w2s.data.world.world_prompts('test', 1)[0], '|', "
        "w2s.train.recipes.RecipeError.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=project, capture_output=True, text=True, check=True)
    own_data, own_train, prompt, error = out.stdout.strip().split(" | ")
    assert (own_data, own_train) == ("data", "train")  # the user's own packages, not w2s's stages
    assert prompt.endswith(".") and error == "RecipeError"
