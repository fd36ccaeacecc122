"""Every data recipe parses; real recipes run end to end with tiny-world models and local files substituted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from w2s.data.build import build
from w2s.data.recipe import RecipeError, load_recipe, recipe_from_dict
from w2s.data.world import world_prompts

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(ROOT.glob("recipes/*/data.yaml"))
REAL = [p for p in RECIPES if p.parent.name != "tiny"]
TINY_MODELS = ["tiny:weak", "tiny:strong", "tiny:weak"]


def test_every_data_recipe_parses():
    assert len(REAL) >= 2
    for path in RECIPES:
        recipe = load_recipe(path)
        assert recipe.generators and recipe.judges


def _substitute(values: dict, tmp_path: Path, reward_model: str) -> dict:
    """The recipe with its hub models and data sets replaced by tiny-world models and local files."""
    field = values["prompt_field"]
    prompts = world_prompts("train", 8)
    rows = [{field: [{"role": "user", "content": p}, {"role": "assistant", "content": "x"}]} if field == "messages" else {field: p} for p in prompts]  # fmt: skip
    source = tmp_path / "prompts.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evaluation = tmp_path / "eval.jsonl"
    evaluation.write_text(json.dumps({"instruction": prompts[0]}) + "\n")  # one contaminated prompt
    out = {**values, "prompt_source": str(source), "num_prompts": 8, "shard_size": 3, "output_dir": str(tmp_path / "out")}  # fmt: skip
    out["decontaminate"] = [{**d, "source": str(evaluation)} for d in values["decontaminate"]]
    out["num_threads"] = 1  # tiny models: one thread is fastest
    out["generators"] = [
        {**g, "model": TINY_MODELS[i % 3], "max_new_tokens": 16, "dtype": "auto", "batch_size": 8}
        for i, g in enumerate(values["generators"])
    ]
    judges = []
    for j in values["judges"]:
        model = reward_model if j["kind"] == "reward_model" else "tiny:weak"
        judges.append({**j, "model": model, "dtype": "auto", "max_length": 256})
    out["judges"] = judges
    return out


@pytest.mark.slow
@pytest.mark.parametrize("path", REAL, ids=[p.parent.name for p in REAL])
def test_real_recipe_runs_with_tiny_models_substituted(path, tmp_path, world_paths):
    from tests.data.test_judges import _tiny_reward_model

    values = _substitute(yaml.safe_load(path.read_text()), tmp_path, _tiny_reward_model(world_paths["weak"]))
    recipe = recipe_from_dict(values, where=str(path))
    out = build(recipe, progress=False)
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["prompts"]["contaminated"] == 1
    pairs = load_from_disk(str(out / "pairs"))
    kept = len(pairs["train"]) + len(pairs["test"])
    assert kept == card["counts"]["pairs"]["kept"] > 0
    for p in pairs["train"]:
        assert p["score_chosen"] - p["score_rejected"] > recipe.min_margin
        assert recipe.min_length_ratio <= max(len(p["chosen"][0]["content"].split()), 1) / max(len(p["rejected"][0]["content"].split()), 1) <= recipe.max_length_ratio  # fmt: skip
        assert {p["generator_chosen"], p["generator_rejected"]} <= {g.name for g in recipe.generators}


def test_unknown_keys_are_errors_that_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "data.yaml"
    values = yaml.safe_load((ROOT / "recipes" / "tiny" / "data.yaml").read_text())
    path.write_text(yaml.safe_dump({**values, "num_promts": 3}))
    with pytest.raises(RecipeError, match=r"data.yaml: unknown key 'num_promts' \(did you mean 'num_prompts'\?\)"):
        load_recipe(path)
    values["generators"][0]["temprature"] = 0.5
    path.write_text(yaml.safe_dump(values))
    with pytest.raises(RecipeError, match=r"generators\[0\]: unknown key 'temprature'"):
        load_recipe(path)
    with pytest.raises(RecipeError, match="key 'seed': expected int"):
        load_recipe(ROOT / "recipes" / "tiny" / "data.yaml", {"seed": "zero"})


@pytest.mark.slow
def test_a_guide_decoder_is_a_generator(tmp_path, world_paths):
    cbs = {"decoder": "cbs", "strong_model": "tiny:strong", "tuned": "tiny:strong", "untuned": "tiny:weak",
           "width": 2, "successors": 2, "chunk_len": 4, "max_new_tokens": 12}  # fmt: skip
    values = {
        "output_dir": str(tmp_path / "out"),
        "num_prompts": 4,
        "generators": [
            {"name": "cbs", "kind": "guide", "num_samples": 2, "guide": cbs},
            {"name": "weak", "model": "tiny:weak", "num_samples": 1, "max_new_tokens": 12},
        ],
        "judges": [{"name": "gold", "kind": "rule"}],
        "test_fraction": 0.0,
    }
    out = build(recipe_from_dict(values), progress=False)
    card = json.loads((out / "card.json").read_text())
    assert card["counts"]["responses"]["generated"] == 4 * 3
    assert card["generator_tokens"]["cbs"] > 0
    with pytest.raises(RecipeError, match=r"generators\[0\].kind 'gide'"):
        recipe_from_dict({**values, "generators": [{"name": "x", "kind": "gide"}]})
