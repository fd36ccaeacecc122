"""Atomic writes get the umask's mode and name their file when the disk is full; a run removes the temporary
files of killed runs, not of live ones; recipes refuse a key written twice; a byte-order mark is no text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.processes import dead_pid
from w2s.guide.files import (
    TEMP_MARK,
    RecipeError,
    check_writable,
    read_recipe,
    read_rows,
    remove_stale_temps,
    write_atomic,
)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_atomic_writes_take_the_umask_mode(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "out.json", "{}")
        (tmp_path / "plain.json").write_text("{}")  # what an ordinary write gives
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o666 & ~umask
    assert (tmp_path / "out.json").stat().st_mode == (tmp_path / "plain.json").stat().st_mode
    assert [p.name for p in tmp_path.iterdir() if TEMP_MARK in p.name] == []


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path):
    dead = dead_pid()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".a.json{TEMP_MARK}{dead}-x1", tmp_path / "sub" / f".b{TEMP_MARK}{dead}-x2"]
    stale[0].write_text("half")
    stale[1].mkdir()
    (stale[1] / "part").write_text("half")
    kept = [
        tmp_path / f".c{TEMP_MARK}{os.getpid()}-x3",
        tmp_path / f".d{TEMP_MARK}{os.getppid()}-x4",
        tmp_path / "e.json",
    ]
    for path in kept:
        path.write_text("")
    assert remove_stale_temps(tmp_path, recursive=False) == 1  # only the top level
    assert remove_stale_temps(tmp_path) == 1
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_an_output_that_cannot_be_written_is_found_before_any_work(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")  # a file where a folder should be
    with pytest.raises(RecipeError, match="cannot write"):
        check_writable(blocked / "out" / "model_outputs.json")
    check_writable(tmp_path / "new" / "out.json")
    assert not (tmp_path / "new").exists()  # the check creates nothing
    (tmp_path / "locked").mkdir(mode=0o555)
    if os.getuid() != 0:  # root writes anywhere
        with pytest.raises(RecipeError, match="not writable"):
            check_writable(tmp_path / "locked" / "out.json")


FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails (EFBIG), as on a full disk (ENOSPC)
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
from w2s.guide.commands import run_command
from w2s.guide.files import write_atomic
sys.exit(run_command("w2s", lambda argv: write_atomic(sys.argv[1], "x" * 100_000), []))
"""


def test_a_write_that_runs_out_of_space_names_its_file(tmp_path):
    out = tmp_path / "out.json"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}  # a .pyc cut at the limit would break later imports
    result = subprocess.run([sys.executable, "-c", FULL_DISK, str(out)], capture_output=True, text=True, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert f"File too large: {out}" in result.stderr
    assert list(tmp_path.iterdir()) == []  # no temporary left, no half file


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("decoder: cbs\nwidth: 2\ndecoder: bon\n", "key 'decoder' written twice (lines 1 and 3)"),
        ("systems:\n- name: a\n  guide:\n    decoder: cbs\n    width: 2\n    decoder: bon\n",
         "key 'decoder' written twice (lines 4 and 6)"),
        ("guide: {beta: 1, beta: 2}\n", "key 'beta' written twice (lines 1 and 1)"),
    ],
)  # fmt: skip
def test_a_key_written_twice_is_an_error_naming_both_lines(tmp_path, text, lines):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(text)
    with pytest.raises(RecipeError) as e:
        read_recipe(recipe)
    assert str(e.value) == f"{recipe}: {lines}"


def test_a_byte_order_mark_is_not_part_of_the_first_row_or_key(tmp_path):
    rows = [{"instruction": "the film"}, {"instruction": "the songs"}]
    (tmp_path / "a.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n", encoding="utf-8-sig")
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8-sig")
    (tmp_path / "r.yaml").write_text("decoder: cbs\n", encoding="utf-8-sig")
    for name in ("a.jsonl", "a.json"):
        assert (tmp_path / name).read_bytes()[:3] == b"\xef\xbb\xbf"
        assert [row for _, row in read_rows(tmp_path / name)] == rows
    assert read_recipe(tmp_path / "r.yaml") == {"decoder": "cbs"}
