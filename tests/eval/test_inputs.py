"""Instruction sets and eval recipes: every source reads, every bad input names its file, line or key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from w2s.eval.config import EvalConfigError, load_config
from w2s.eval.instructions import InstructionSetError, load_difficulty, load_instructions

ROOT = Path(__file__).resolve().parents[2]
RECORDS = [
    {"instruction": "say hi", "output": "hi", "dataset": "greet"},
    {"instruction": "count to two", "output": "one two"},
    {"instruction": "no reference here"},
]


def test_alpacaeval_json_and_jsonl(tmp_path):
    (tmp_path / "set.json").write_text(json.dumps(RECORDS))
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    for name in ("set.json", "set.jsonl"):
        items = load_instructions(str(tmp_path / name))
        assert [i.instruction for i in items] == [r["instruction"] for r in RECORDS]
        assert [i.reference for i in items] == ["hi", "one two", None]
        assert items[0].dataset == "greet" and items[1].dataset == "set"
    assert len(load_instructions(str(tmp_path / "set.json"), limit=2)) == 2


def test_folders_saved_datasets_and_json_files(tmp_path):
    from datasets import Dataset, DatasetDict

    DatasetDict({"eval": Dataset.from_list(RECORDS[:2])}).save_to_disk(str(tmp_path / "saved"))
    items = load_instructions(str(tmp_path / "saved"), split="eval")
    assert [i.reference for i in items] == ["hi", "one two"]
    with pytest.raises(InstructionSetError, match="no split 'test'"):
        load_instructions(str(tmp_path / "saved"), split="test")
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "a.json").write_text(json.dumps(RECORDS[:1]))
    (tmp_path / "files" / "b.jsonl").write_text(json.dumps(RECORDS[1]) + "\n")
    assert [i.instruction for i in load_instructions(str(tmp_path / "files"))] == ["say hi", "count to two"]


def test_tiny_world_set():
    from w2s.data.world import world_prompts

    items = load_instructions("tiny:test", limit=5)
    assert [i.instruction for i in items] == world_prompts("test", 5)
    assert all(i.reference is None for i in items)


def test_duplicate_instructions_keep_their_first_record_and_are_counted(tmp_path, caplog):
    # alpaca_eval pairs outputs by instruction text: a repeated text would pair each output with both references
    records = [RECORDS[0], RECORDS[1], {**RECORDS[0], "output": "hello"}, RECORDS[2], RECORDS[0], RECORDS[1]]
    (tmp_path / "set.json").write_text(json.dumps(records))
    with caplog.at_level("WARNING"):
        items = load_instructions(str(tmp_path / "set.json"))
    assert [i.instruction for i in items] == [r["instruction"] for r in RECORDS]
    assert [i.reference for i in items] == ["hi", "one two", None]  # the first record's reference
    assert [i.duplicates for i in items] == [2, 1, 0] and [i.position for i in items] == [0, 1, 3]
    assert "3 duplicate instruction(s) dropped" in caplog.text and "record 1" in caplog.text
    assert [i.duplicates for i in load_instructions(str(tmp_path / "set.json"), limit=3)] == [1, 0]  # the first 3 only


def test_instruction_difficulty_files(tmp_path):
    items = load_instructions(str(_write(tmp_path / "set.json", RECORDS)))
    by_text = tmp_path / "by_text.csv"
    by_text.write_text(
        '\ufeffinstruction,instruction_difficulty\nno reference here,0.5\n"say hi",-1\ncount to two,2e-1\n'
    )
    assert load_difficulty(by_text, items) == [-1.0, 0.2, 0.5]
    records = [{"instruction": r["instruction"], "instruction_difficulty": k} for k, r in enumerate(RECORDS)]
    assert load_difficulty(_write(tmp_path / "d.json", records), items) == [0.0, 1.0, 2.0]
    # AlpacaEval's own file: the place of each instruction in its eval set (from 0), here this set's places
    alpaca_eval = tmp_path / "instruction_difficulty.csv"
    alpaca_eval.write_text("index,instruction_difficulty\n0,0.3\n1,-0.2\n2,0.9\n3,7\n")
    assert load_difficulty(alpaca_eval, items) == [0.3, -0.2, 0.9]
    alpaca_eval.write_text("index,instruction_difficulty\n0,0.3\n2,0.9\n")
    with pytest.raises(
        InstructionSetError, match=r"no difficulty for instruction 2 \('count to two', index 1\); 1 of the 3"
    ):
        load_difficulty(alpaca_eval, items)
    by_text.write_text("instruction,instruction_difficulty\nsay hi,1\n")
    with pytest.raises(InstructionSetError, match=r"by_text.csv: no difficulty for instruction 2 \('count to two'\)"):
        load_difficulty(by_text, items)
    by_text.write_text("instruction,instruction_difficulty\nsay hi,1\ncount to two,hard\n")
    with pytest.raises(
        InstructionSetError, match=r"by_text.csv row 2: instruction 'count to two' with instruction_difficulty 'hard'"
    ):
        load_difficulty(by_text, items)
    by_text.write_text("prompt,difficulty\nsay hi,1\n")
    with pytest.raises(InstructionSetError, match=r"by_text.csv: no field 'instruction_difficulty'"):
        load_difficulty(by_text, items)


def _write(path, records):
    path.write_text(json.dumps(records))
    return path


def test_bad_instruction_files_name_the_place(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": \n')
    with pytest.raises(InstructionSetError, match=r"bad.jsonl line 2: not valid JSON"):
        load_instructions(str(bad))
    missing = tmp_path / "missing.jsonl"
    missing.write_text('{"instruction": "ok"}\n{"prompt": "no"}\n')
    with pytest.raises(InstructionSetError, match=r"missing.jsonl line 2: missing field 'instruction'"):
        load_instructions(str(missing))
    with pytest.raises(InstructionSetError, match="no such file"):
        load_instructions(str(tmp_path / "nope.json"))


SYSTEMS = [{"name": "base", "guide": {"strong_model": "tiny:strong", "decoder": "sample"}}]


def test_recipe_errors_name_the_key(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("judeg: gold\nsystems: []\n")
    with pytest.raises(EvalConfigError, match=r"eval.yaml: unknown key 'judeg' \(did you mean 'judge'\?\)"):
        load_config(recipe)
    recipe.write_text("num_instructions: many\n")
    with pytest.raises(EvalConfigError, match="'num_instructions' expects an integer"):
        load_config(recipe)
    with pytest.raises(EvalConfigError, match="'judge': 'oracle' is not one of"):
        load_config(None, {"judge": "oracle", "systems": SYSTEMS})
    with pytest.raises(EvalConfigError, match="judge 'llm' compares pairs"):
        load_config(None, {"judge": "llm", "judge_model": "tiny:strong", "systems": SYSTEMS})
    with pytest.raises(EvalConfigError, match=r"systems\[1\]: duplicate system name 'base'"):
        load_config(None, {"systems": SYSTEMS + SYSTEMS})


def test_lc_difficulty_is_checked_up_front(tmp_path):
    two = [*SYSTEMS, {"name": "other", "guide": SYSTEMS[0]["guide"]}]
    assert load_config(None, {"systems": SYSTEMS}).lc_difficulty == "none"
    recipe = tmp_path / "eval.yaml"
    recipe.write_text("lc_difficulty: hardness.csv\nsystems: []\n")
    with pytest.raises(
        EvalConfigError, match=r"eval.yaml: key 'lc_difficulty': 'hardness.csv' is neither none, fitted"
    ):
        load_config(recipe, {"systems": SYSTEMS})
    with pytest.raises(
        EvalConfigError, match=r"key 'lc_difficulty': fitted needs at least two systems besides the reference"
    ):
        load_config(None, {"systems": two, "reference": "base", "lc_difficulty": "fitted"})
    assert (
        load_config(None, {"systems": two, "reference": "dataset", "lc_difficulty": "fitted"}).lc_difficulty == "fitted"
    )
    (tmp_path / "hardness.csv").write_text("instruction,instruction_difficulty\n")
    assert load_config(None, {"systems": SYSTEMS, "lc_difficulty": str(tmp_path / "hardness.csv")})
    with pytest.raises(EvalConfigError, match="lc_bootstrap_samples must be >= 0, got -1"):
        load_config(None, {"systems": SYSTEMS, "lc_bootstrap_samples": -1})


@pytest.mark.parametrize("recipe", sorted((ROOT / "recipes").glob("*/eval.yaml")), ids=lambda p: p.parent.name)
def test_shipped_eval_recipes_parse(recipe):
    from w2s.guide import GuideConfig

    config = load_config(recipe)
    for s in config.system_list():
        GuideConfig.from_dict(dict(s.guide), source=f"{recipe}: {s.name}")  # every system is a valid guide recipe


def test_alignment_tax_without_lm_eval_fails_before_any_work(tmp_path, capsys):
    import importlib.util

    from w2s.eval.cli import main as eval_main

    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm-evaluation-harness is installed here")
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\nsystems:\n  - name: base\n    guide: {{strong_model: tiny:strong}}\n"
    )
    assert eval_main(["--config", str(recipe), "--lm_eval_tasks", "arc_easy"]) == 2
    assert "pip install lm-eval" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
