"""The tiny eval recipe served as several models, and `w2s eval` of a system served by `w2s serve` against the
same system run locally: the same outputs and annotations, also when the served run is killed and resumed."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
import yaml

from tests.processes import kill_when
from tests.serve.conftest import ROOT, generated, w2s_serve
from w2s.data.world import world_prompts
from w2s.eval.config import load_config
from w2s.eval.run import evaluate

RECIPE = ROOT / "recipes" / "tiny" / "eval.yaml"


@pytest.fixture(scope="module")
def url(tmp_path_factory, world_paths, tiny_guide):
    folder = tmp_path_factory.mktemp("serve-eval")
    with w2s_serve(["--config", str(RECIPE)], folder / "server.log") as base_url:
        yield base_url


@pytest.fixture(scope="module")
def systems():
    return {s.name: s.guide for s in load_config(RECIPE).system_list()}


@pytest.mark.slow
def test_the_tiny_eval_recipe_is_served_as_one_model_per_system(url, systems, tmp_path):
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == list(systems)
    prompts = list(dict.fromkeys(world_prompts("test", 8)))[:3]
    for name in ("base", "cbs", "wsd", "eft"):  # sampling, search, draft-switch, logit arithmetic
        answers = [
            client.chat.completions.create(model=name, messages=[{"role": "user", "content": p}]).choices[0]
            for p in prompts
        ]
        assert [a.message.content for a in answers] == generated(systems[name], prompts, tmp_path / name), name


def eval_recipe(folder: Path, system: dict, n: int = 12, batch_size: int = 4) -> Path:
    recipe = {"num_instructions": n, "reference": None, "judge": "gold", "batch_size": batch_size,
              "bootstrap_samples": 100, "output_dir": str(folder / "out"), "systems": [system]}  # fmt: skip
    path = folder / "eval.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(recipe))
    return path


def written(folder: Path, name: str = "cbs") -> tuple[bytes, bytes]:
    out = folder / "out" / name
    return (out / "model_outputs.json").read_bytes(), (out / "annotations.json").read_bytes()


def records(log: Path) -> int:
    if not log.exists():
        return 0
    data = log.read_bytes()
    return max(0, len(data[: data.rfind(b"\n") + 1].splitlines()) - 1)  # after the header


@pytest.mark.slow
def test_eval_of_a_served_system_writes_what_the_local_system_writes_also_killed_and_resumed(url, systems, tmp_path):
    local = eval_recipe(tmp_path / "local", {"name": "cbs", "guide": systems["cbs"]})
    evaluate(load_config(local), progress=False)
    served = {"name": "cbs", "endpoint": url, "model": "cbs"}
    result = evaluate(load_config(eval_recipe(tmp_path / "served", served)), progress=False)
    assert result.generation["cbs"] == {"reused": 0, "generated": 12}
    assert written(tmp_path / "served") == written(tmp_path / "local")
    rows = json.loads((tmp_path / "served" / "out" / "results.json").read_text())["rows"]
    assert rows[0]["decoder"] == "endpoint" and rows[0]["strong_tokens_per_item"] > 0  # w2s serve's costs

    # killed (SIGKILL) once the first batch is in its log, resumed: the outputs of one uninterrupted run
    recipe = eval_recipe(tmp_path / "killed", served, batch_size=2)
    log = tmp_path / "killed" / "out" / "cbs" / "generations.jsonl"
    args = ["-m", "w2s.cli", "eval", "--config", str(recipe), "--quiet"]
    kill_when(args, ROOT, lambda: records(log) >= 2, "2 records in the served system's log")
    done = records(log)
    assert 2 <= done < 12, done
    result = evaluate(load_config(recipe), progress=False)
    assert result.generation["cbs"] == {"reused": done, "generated": 12 - done}
    assert written(tmp_path / "killed") == written(tmp_path / "local")
