"""Recipes: every one parses; the real ones run two steps on tiny-world stand-ins; bad ones name what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from w2s.train import distill, dpo, sft
from w2s.train.recipes import RecipeError, parse_recipe
from w2s.train.run import run

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SCRIPTS = {"sft": sft, "distill_sequence": sft, "distill_cbs": sft, "dpo": dpo, "distill": distill}
ALL = sorted(p for p in RECIPES.glob("*/*.yaml") if p.stem in SCRIPTS)
REAL = [p for p in ALL if p.parent.name != "tiny"]
# on CPU: no bf16; the real model and data replaced by tiny-world ones
CPU = ["--bf16", "false", "--report_to", "none"]


def script_for(recipe: Path):
    return SCRIPTS[recipe.stem]


def test_the_real_recipes_exist():
    names = {f"{p.parent.name}/{p.stem}" for p in REAL}
    assert {"llama-3.2-3b-pilot/sft", "llama-3.2-3b-pilot/dpo", "qwen2.5-0.5b/dpo", "gpt2-imdb/dpo"} <= names
    gpt2 = yaml.safe_load((RECIPES / "gpt2-imdb" / "dpo.yaml").read_text())
    assert gpt2["learning_rate"] == 5.0e-4 and gpt2["num_train_epochs"] == 3


@pytest.mark.parametrize("recipe", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_recipe_parses_and_flags_override_it(recipe):
    script = script_for(recipe)
    parsed = parse_recipe(script.DATACLASSES, ["--config", str(recipe), *CPU, "--output_dir", "o", "--seed", "7"])
    values = yaml.safe_load(recipe.read_text())
    _, training_args, model_args = parsed
    assert training_args.seed == 7  # the flag wins over the recipe
    assert model_args.model_name_or_path == values["model_name_or_path"]
    if "learning_rate" in values:
        assert training_args.learning_rate == pytest.approx(float(values["learning_rate"]))


@pytest.mark.parametrize("recipe", REAL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_real_recipe_runs_two_steps_on_tiny_stand_ins(recipe, tmp_path):
    script = script_for(recipe)
    stand_in = ["--model_name_or_path", "tiny:weak", "--dataset_name", "tiny:preferences", "--dtype", "float32"]
    steps = ["--max_steps", "2", "--per_device_train_batch_size", "2", "--gradient_accumulation_steps", "1",
             "--eval_strategy", "no", "--save_strategy", "no", "--max_length", "128"]  # fmt: skip
    out = tmp_path / "out"
    code = run(script.main, script.DATACLASSES,
               ["--config", str(recipe), *CPU, *stand_in, *steps, "--output_dir", str(out)])  # fmt: skip
    assert code == 0
    card = (out / "README.md").read_text()
    assert "| step | 2 |" in card
    assert "base_model: tiny:weak" in card
    assert (out / "adapter_config.json").is_file() or (out / "config.json").is_file()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


TINY_DPO = (RECIPES / "tiny" / "dpo.yaml").read_text()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (TINY_DPO + "bta: 0.1\n", "unknown key 'bta' (did you mean 'beta'?)"),
        (TINY_DPO.replace("beta: 0.1", "beta: high"), "key 'beta': expects float, got 'high'"),
        (
            TINY_DPO.replace("per_device_train_batch_size: 16", "per_device_train_batch_size: 1.5"),
            "expects int, got 1.5",
        ),
        (TINY_DPO + "datasets:\n  - path: x.jsonl\n    fracton: 0.5\n", "unknown key 'fracton'"),
        (TINY_DPO.replace("lr_scheduler_type: constant", "lr_scheduler_type: sometimes"), "'sometimes' is not one"),
    ],
    ids=["unknown-key", "wrong-type", "int-not-float", "mixture-key", "bad-choice"],
)
def test_bad_recipe_names_the_key(tmp_path, text, message):
    recipe = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        parse_recipe(dpo.DATACLASSES, ["--config", str(recipe), "--output_dir", str(tmp_path / "o")])
    assert message in str(err.value)
    assert str(recipe) in str(err.value)


def test_missing_recipe_file_and_unknown_flag_are_named(tmp_path):
    with pytest.raises(RecipeError, match=r"nope\.yaml.*no such file"):
        parse_recipe(dpo.DATACLASSES, ["--config", str(tmp_path / "nope.yaml")])
    with pytest.raises(RecipeError, match="unknown flag '--bta' \\(did you mean 'beta'\\?\\)"):
        parse_recipe(dpo.DATACLASSES, ["--config", str(RECIPES / "tiny" / "dpo.yaml"), "--bta", "0.2"])


def test_yaml_numbers_without_a_dot_are_read_as_numbers(tmp_path):
    # YAML 1.1 reads `5e-4` as a string; the recipe loader converts it the way the command line would
    recipe = write(tmp_path, TINY_DPO.replace("learning_rate: 1.0e-3", "learning_rate: 5e-4"))
    _, training_args, _ = parse_recipe(dpo.DATACLASSES, ["--config", str(recipe), "--output_dir", "o"])
    assert training_args.learning_rate == 5e-4


def test_bad_data_exits_non_zero_naming_file_or_column(tmp_path, capsys):
    missing = tmp_path / "missing.jsonl"
    args = ["--config", str(RECIPES / "tiny" / "dpo.yaml"), "--output_dir", str(tmp_path / "o")]
    assert run(dpo.main, dpo.DATACLASSES, [*args, "--dataset_name", str(missing)]) != 0
    assert f"{missing}" in capsys.readouterr().err and not (tmp_path / "o").exists()

    assert run(dpo.main, dpo.DATACLASSES, [*args, "--model_name_or_path", str(tmp_path / "no-model")]) != 0
    assert f"model_name_or_path: '{tmp_path / 'no-model'}' is not a model folder" in capsys.readouterr().err

    no_rejected = tmp_path / "pairs.jsonl"
    no_rejected.write_text(json.dumps({"prompt": "the film was good .", "chosen": "it was fun ."}) + "\n")
    assert run(dpo.main, dpo.DATACLASSES, [*args, "--dataset_name", str(no_rejected)]) != 0
    err = capsys.readouterr().err
    assert "missing column(s) ['rejected']" in err and not (tmp_path / "o").exists()
