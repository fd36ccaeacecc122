"""`w2s generate` over several processes: `--shard i/n`, and the ranks of `accelerate launch` (killed and
resumed), write the bytes one process writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.processes import kill_when
from w2s.cli import main

ROOT = Path(__file__).resolve().parents[2]
N = 10
FLAGS = ["--config", str(ROOT / "recipes/tiny/guide.yaml"), "--num_prompts", str(N), "--decoder", "cbs",
         "--width", "2", "--successors", "2", "--chunk_len", "4", "--max_new_tokens", "24"]  # fmt: skip


def launcher_env() -> dict:
    """Two processes on this CPU (torchrun through accelerate), a rendezvous port of their own."""
    return {**os.environ, "MASTER_PORT": str(21000 + os.getpid() % 20000), "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip


def launch(*args: str) -> list[str]:
    """`python <these>`: `accelerate launch` of `w2s <args>` over two processes."""
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--mixed_precision", "no",
            "-m", "w2s.cli", *args]  # fmt: skip


def logged(out: Path) -> int:
    """Items in every shard's log of `out` so far (whole lines, less each log's recipe line)."""
    logs = out.parent.glob(out.name + ".partial*.jsonl")
    return sum(max(0, p.read_bytes().count(b"\n") - 1) for p in logs)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, world_paths) -> bytes:
    out = tmp_path_factory.mktemp("one") / "whole.json"
    assert main(["generate", *FLAGS, "--batch_size", "4", "--output", str(out)]) == 0
    return out.read_bytes()


@pytest.mark.slow
def test_two_shards_write_what_one_process_writes(tmp_path, one_process, capsys):
    out = tmp_path / "out.json"
    assert main(["generate", *FLAGS, "--batch_size", "3", "--shard", "1/2", "--output", str(out)]) == 0
    assert not out.exists() and "the last shard to finish writes" in capsys.readouterr().out
    partial = out.with_name(out.name + ".partial.1-of-2.jsonl")
    items = [json.loads(line)["index"] for line in partial.read_text().splitlines()[1:]]
    assert items == list(range(1, N, 2))  # shard 1 of 2: every other prompt, from the second

    assert main(["generate", *FLAGS, "--merge", "--output", str(out)]) == 2  # shard 0 has not run
    assert "run every shard" in capsys.readouterr().err and not out.exists()

    assert main(["generate", *FLAGS, "--batch_size", "2", "--shard", "0/2", "--output", str(out)]) == 0
    assert out.read_bytes() == one_process  # the last shard merged
    assert not list(tmp_path.glob("*.partial*"))


@pytest.mark.slow
def test_a_run_resumed_with_another_number_of_processes_reuses_every_finished_item(tmp_path, one_process):
    out = tmp_path / "out.json"
    assert main(["generate", *FLAGS, "--shard", "2/3", "--output", str(out)]) == 0  # prompts 2, 5, 8
    assert main(["generate", *FLAGS, "--shard", "0/2", "--output", str(out)]) == 0  # 0, 4, 6 (2, 8: done)
    assert logged(out) == 3 + 3
    assert main(["generate", *FLAGS, "--output", str(out)]) == 0  # one process: 1, 3, 7, 9
    assert out.read_bytes() == one_process


@pytest.mark.slow
def test_accelerate_launch_killed_and_resumed_writes_what_one_process_writes(tmp_path, one_process):
    out = tmp_path / "out.json"
    args = launch("generate", *FLAGS, "--batch_size", "1", "--output", str(out))
    logs = [out.with_name(f"{out.name}.partial.{i}-of-2.jsonl") for i in range(2)]  # each rank its own log

    def ready() -> bool:  # an item of each rank, 3 in all (ranks start at different times)
        return all(p.exists() and p.read_bytes().count(b"\n") >= 2 for p in logs) and logged(out) >= 3

    kill_when(args, ROOT, ready, "3 items in the shards' logs, some of each rank", env=launcher_env())
    assert 3 <= logged(out) < N and not out.exists(), "killed too late"
    kill_when(args, ROOT, lambda: logged(out) >= 6, "6 items in the shards' logs", env=launcher_env())
    done = subprocess.run([sys.executable, *args], cwd=ROOT, env=launcher_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_bytes() == one_process
    assert not list(tmp_path.glob("*.partial*"))
