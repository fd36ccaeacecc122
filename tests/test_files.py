"""Atomic writes get the umask's mode; a run removes the temporary files of killed runs, not of live ones."""

from __future__ import annotations

import os

import pytest

from tests.processes import dead_pid
from w2s.guide.files import TEMP_MARK, RecipeError, check_writable, remove_stale_temps, write_atomic


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
