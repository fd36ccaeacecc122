"""A data build whose generator is a served model (`kind: openai`, data/generators.py) against a real vLLM
server: sharded, and killed mid-generation and resumed, it writes the pairs an uninterrupted build writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from tests.processes import kill_when
from tests.served import SERVED_NAME
from w2s.data.build import build
from w2s.data.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.served, pytest.mark.slow]


def recipe_of(world_paths, output: Path) -> dict:
    generator = {"name": "served", "kind": "openai", "model": SERVED_NAME, "tokenizer": str(world_paths["strong"])}
    return {
        "seed": 7, "shard_size": 3, "num_threads": 1, "prompt_source": "tiny:train", "num_prompts": 12,
        "generators": [generator | {"num_samples": 3, "max_new_tokens": 16, "temperature": 1.0}],
        "judges": [{"name": "gold", "kind": "rule", "rule": "tiny_gold"}],
        "test_fraction": 0.25, "output_dir": str(output),
    }  # fmt: skip


def rows(path: Path) -> dict[str, list[dict]]:
    data = load_from_disk(str(path))
    return {split: data[split].to_list() for split in data}


def test_a_served_generator_builds_the_same_pairs_sharded_and_resumed(vllm_server, world_paths, tmp_path, monkeypatch):
    monkeypatch.setenv("W2S_STRONG_BASE_URL", vllm_server)  # the server, as a user names it (and its subprocesses)
    reference = tmp_path / "reference"
    config = tmp_path / "reference.yaml"
    config.write_text(yaml.safe_dump(recipe_of(world_paths, reference)))
    assert build(load_recipe(config), progress=False) == reference
    pairs = rows(reference / "pairs")
    assert sum(map(len, pairs.values())) >= 3

    sharded = tmp_path / "sharded"  # two "processes", then merged
    config = tmp_path / "sharded.yaml"
    config.write_text(yaml.safe_dump(recipe_of(world_paths, sharded)))
    assert build(load_recipe(config), shard="0/2", progress=False) is None
    assert build(load_recipe(config), shard="1/2", progress=False) == sharded
    assert rows(sharded / "pairs") == pairs

    resumed = tmp_path / "resumed"  # killed once a generation shard is written, then run again
    config = tmp_path / "resumed.yaml"
    config.write_text(yaml.safe_dump(recipe_of(world_paths, resumed)))
    args = ["-m", "w2s.data.cli", "build", "--config", str(config)]
    kill_when(args, ROOT, lambda: any(resumed.glob("work/gen-served-*/*.jsonl")), "generation shard", 300)
    assert not (resumed / "card.json").exists()
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert rows(resumed / "pairs") == pairs and rows(resumed / "sft") == rows(reference / "sft")
    assert json.loads((resumed / "card.json").read_text())["splits"]["pairs"] == {k: len(v) for k, v in pairs.items()}
