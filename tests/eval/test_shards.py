"""`w2s eval` over several processes: `--shard i/n`, and the ranks of `accelerate launch` (killed and resumed),
write what one process writes."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.guide.test_generate_shards import launch, launcher_env
from tests.processes import kill_when
from w2s.eval.config import load_config
from w2s.eval.run import evaluate

ROOT = Path(__file__).resolve().parents[2]
N = 10
SAMPLE = {"strong_model": "tiny:strong", "max_new_tokens": 24, "temperature": 1.0, "top_k": 0}
SETTINGS = {
    "num_instructions": N,
    "reference": "base",  # a system: each shard judges its share against its own outputs of the reference
    "judge": "gold",
    "batch_size": 2,
    "bootstrap_samples": 100,
    "lc_bootstrap_samples": 0,
    "systems": [
        {"name": "base", "guide": SAMPLE},
        {"name": "cbs", "guide": {**SAMPLE, "tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs",
                                  "width": 2, "successors": 2, "chunk_len": 4}},
    ],
}  # fmt: skip
FILES = ["base/model_outputs.json", "cbs/model_outputs.json", "base/annotations.json", "cbs/annotations.json"]


def recipe(folder: Path, **changes) -> Path:
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump({**SETTINGS, "output_dir": str(folder), **changes}))
    return path


def leaderboard(folder: Path) -> list[dict]:
    """The leaderboard without its wall-time column (the one figure that differs from run to run)."""
    rows = list(csv.DictReader(io.StringIO((folder / "leaderboard.csv").read_text())))
    return [{k: v for k, v in row.items() if k != "seconds_per_item"} for row in rows]


def assert_same(folder: Path, reference: Path) -> None:
    for name in FILES:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert leaderboard(folder) == leaderboard(reference)


def generated(folder: Path) -> int:
    """Whole records in every system's generation logs so far (less each log's header line)."""
    return sum(max(0, p.read_bytes().count(b"\n") - 1) for p in folder.glob("*/generations*.jsonl"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, world_paths) -> Path:
    folder = tmp_path_factory.mktemp("one") / "out"
    evaluate(load_config(recipe(folder)), progress=False)
    return folder


@pytest.mark.slow
def test_two_shards_write_what_one_process_writes(tmp_path, one_process):
    folder = tmp_path / "out"
    first = evaluate(load_config(recipe(folder, batch_size=3)), progress=False, shard=(1, 2))
    assert not first.complete and not (folder / "leaderboard.csv").exists()
    assert first.generation["cbs"] == {"reused": 0, "generated": N // 2}
    assert first.judging["judged"] > 0  # its share is judged by the shard itself
    last = evaluate(load_config(recipe(folder)), progress=False, shard=(0, 2))
    assert last.complete  # the last shard to finish writes the results
    assert_same(folder, one_process)
    assert last.judging["judged"] == 0  # the merge re-judges nothing: each shard judged its share
    assert not (folder / ".w2s-shards-done").exists()


@pytest.mark.slow
def test_accelerate_launch_killed_and_resumed_writes_what_one_process_writes(tmp_path, one_process):
    folder = tmp_path / "out"
    args = launch("eval", "--config", str(recipe(folder, batch_size=1)), "--quiet")
    logs = [folder / "base" / f"generations.{i}-of-2.jsonl" for i in range(2)]  # each rank its own log

    def ready() -> bool:  # both ranks wrote, and 4 items in all (ranks start at different times)
        return all(p.exists() and p.read_bytes().count(b"\n") >= 2 for p in logs) and generated(folder) >= 4

    kill_when(args, ROOT, ready, "4 generated items, some of each rank", env=launcher_env())
    assert 4 <= generated(folder) < 2 * N and not (folder / "leaderboard.csv").exists(), "killed too late"
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=launcher_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(folder, one_process)


@pytest.mark.slow
def test_the_scale_bench_prints_its_ratio_and_checks_both_sides_agree(world_paths, capsys):
    from w2s.cli import main

    assert main(["bench", "eval", "--num_instructions", "4", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "same outputs: yes" in out and "2 processes / 1 process, items per second" in out
