"""`w2s eval` of systems whose strong model is a real vLLM server (strong_backend openai): sharded, and killed
mid-generation and resumed, it writes what one uninterrupted run writes."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.eval.test_shards import leaderboard
from tests.processes import kill_when
from tests.served import SERVED_NAME
from w2s.eval.config import load_config
from w2s.eval.run import evaluate

ROOT = Path(__file__).resolve().parents[2]
N = 8
FILES = ["base/model_outputs.json", "cbs/model_outputs.json", "base/annotations.json", "cbs/annotations.json"]
pytestmark = [pytest.mark.served, pytest.mark.slow]


def recipe(folder: Path, world_paths, batch_size: int = 4) -> Path:
    served = {
        "strong_backend": "openai",
        "strong_model": SERVED_NAME,
        "strong_tokenizer": str(world_paths["strong"]),
        "max_new_tokens": 20,
        "temperature": 1.0,
        "top_k": 0,
        "batch_size": batch_size,
    }
    settings = {
        "num_instructions": N, "reference": "base", "judge": "gold", "batch_size": batch_size,
        "bootstrap_samples": 100, "lc_bootstrap_samples": 0, "output_dir": str(folder),
        "systems": [
            {"name": "base", "guide": served},
            {"name": "cbs", "guide": {**served, "tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs",
                                      "width": 2, "successors": 2, "chunk_len": 5}},
        ],
    }  # fmt: skip
    path = folder.with_suffix(".yaml")
    path.write_text(yaml.safe_dump(settings))
    return path


def assert_same(folder: Path, reference: Path) -> None:
    for name in FILES:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name
    assert leaderboard(folder) == leaderboard(reference)


def test_a_served_eval_sharded_and_killed_and_resumed_writes_what_one_run_writes(
    vllm_server, world_paths, tmp_path, monkeypatch
):
    monkeypatch.setenv("W2S_STRONG_BASE_URL", vllm_server)  # as a user sets it (and its subprocesses see it)
    whole = tmp_path / "whole"
    assert evaluate(load_config(recipe(whole, world_paths)), progress=False).complete

    sharded = tmp_path / "sharded"  # two "processes", other batch sizes; the last one merges
    first = evaluate(load_config(recipe(sharded, world_paths, 3)), progress=False, shard=(1, 2))
    assert not first.complete and first.generation["cbs"] == {"reused": 0, "generated": N // 2}
    assert evaluate(load_config(recipe(sharded, world_paths, 1)), progress=False, shard=(0, 2)).complete
    assert_same(sharded, whole)

    killed = tmp_path / "killed"  # SIGKILLed once the second system has begun, then run again
    config = recipe(killed, world_paths, 2)
    log = killed / "cbs" / "generations.jsonl"
    begun = lambda: log.is_file() and log.read_bytes().count(b"\n") >= 2  # noqa: E731 (header + one record)
    kill_when(["-m", "w2s.cli", "eval", "--config", str(config), "--quiet"], ROOT, begun, "cbs generation record", 300)
    assert not (killed / "leaderboard.csv").exists()
    resumed = evaluate(load_config(config), progress=False)
    assert resumed.complete and resumed.generation["base"] == {"reused": N, "generated": 0}
    assert 0 < resumed.generation["cbs"]["reused"] < N
    assert_same(killed, whole)
