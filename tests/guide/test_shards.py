"""Spreading a job over processes (guide/shards.py `ShardedJob`): the merge is done by exactly one process, the
last to finish."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from w2s.guide.shards import ShardedJob


def test_the_last_shard_to_finish_merges_and_only_it(tmp_path):
    marks = tmp_path / ".job.shards-done"
    jobs = [ShardedJob(marks, (i, 3)) for i in range(3)]
    assert [j.items(8) for j in jobs] == [[0, 3, 6], [1, 4, 7], [2, 5]]
    for job, expected in zip((jobs[2], jobs[0]), (False, False), strict=True):
        with job.finish() as last:
            assert last is expected
    assert sorted(p.name for p in marks.iterdir()) == ["0-of-3", "2-of-3"]
    jobs[0].begin()  # shard 0 runs again: not finished until it says so
    with jobs[1].finish() as last:
        assert not last
    with pytest.raises(RuntimeError), jobs[0].finish() as last:  # the last one, whose merge fails
        assert last
        raise RuntimeError("merge failed")
    assert marks.is_dir()  # a failed merge keeps the marks: the next to finish merges
    with jobs[0].finish() as last:
        assert last
    assert not marks.exists()  # merged: the marks are gone

    with ShardedJob(marks).finish() as last:  # one process merges, always
        assert last
    marks.mkdir()
    (marks / "0-of-2").write_text("")
    with ShardedJob(marks, (1, 3)).finish(force=True) as last:  # a merge asked for by hand
        assert last
    assert not marks.exists()


FINISH = """
import sys, time
from pathlib import Path
from w2s.guide.shards import ShardedJob
marks, i, n, go, merges = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
while not go.exists():  # every process finishes at once
    time.sleep(0.001)
with ShardedJob(marks, (i, n)).finish() as last:
    if last:
        with open(merges, "a") as f:
            f.write(f"{i}\\n")
"""


def test_processes_finishing_at_once_merge_exactly_once(tmp_path):
    n, go, merges = 4, tmp_path / "go", tmp_path / "merges"
    args = [str(tmp_path / "marks"), "{i}", str(n), str(go), str(merges)]
    procs = [subprocess.Popen([sys.executable, "-c", FINISH, *(a.format(i=i) for a in args)]) for i in range(n)]
    time.sleep(1.0)  # each has imported and waits
    go.write_text("")
    assert [p.wait(60) for p in procs] == [0] * n
    assert len(merges.read_text().splitlines()) == 1 and not (tmp_path / "marks").exists()
