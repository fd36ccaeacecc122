"""w2s's own outputs as training data, without conversion: AlpacaEval outputs (`w2s generate`, `w2s eval`) and
other layouts through the column mapping (prompt_column / completion_column), for one source and a mixture."""

from __future__ import annotations

import json
from pathlib import Path

from w2s.train import sft
from w2s.train.data import SFT_COLUMNS, TrainScriptArguments, load_checked_data

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_alpaca_eval_outputs_are_read_as_chat_prompt_completion(tmp_path):
    # the layout of `w2s eval`'s <system>/model_outputs.json
    items = [{"instruction": f"the film {i} was good .", "output": f"it was fun {i} .", "generator": "cbs",
              "dataset": "tiny:test"} for i in range(5)]  # fmt: skip
    path = tmp_path / "model_outputs.json"
    path.write_text(json.dumps(items))
    train, evaluation = load_checked_data(TrainScriptArguments(dataset_name=str(path)), SFT_COLUMNS, "SFT")
    assert evaluation is None
    assert train["prompt"] == [user(x["instruction"]) for x in items]
    assert train["completion"] == [assistant(x["output"]) for x in items]


def test_column_mapping_reads_other_layouts_in_one_source_and_in_a_mixture(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"q{i}", "answer": f"a{i}", "id": i}) + "\n" for i in range(4)))
    args = TrainScriptArguments(dataset_name=str(qa), prompt_column="question", completion_column="answer")
    train, _ = load_checked_data(args, SFT_COLUMNS, "SFT")
    assert train["prompt"] == [user(f"q{i}") for i in range(4)]
    assert train["completion"] == [assistant(f"a{i}") for i in range(4)]
    assert train["id"] == list(range(4))  # other columns are kept

    # the same keys on a source of a mixture; the other source (AlpacaEval) is read by the default mapping
    outputs = tmp_path / "cbs.json"
    outputs.write_text(json.dumps([{"instruction": f"i{i}", "output": f"o{i}", "generator": "cbs"} for i in range(3)]))
    mixture = [{"path": str(qa), "prompt_column": "question", "completion_column": "answer"}, {"path": str(outputs)}]
    train, _ = load_checked_data(TrainScriptArguments(datasets=mixture), SFT_COLUMNS, "SFT")
    assert sorted(train.column_names) == ["completion", "prompt"]
    assert train["prompt"] == [user(f"q{i}") for i in range(4)] + [user(f"i{i}") for i in range(3)]
    assert train["completion"] == [assistant(f"a{i}") for i in range(4)] + [assistant(f"o{i}") for i in range(3)]


def test_a_mapping_naming_a_missing_column_stops_before_any_model_loads(tmp_path, capsys):
    outputs = tmp_path / "cbs.json"
    outputs.write_text(json.dumps([{"instruction": "the film was good .", "output": "it was fun .", "stop": "eos"}]))
    out = tmp_path / "o"
    args = ["--config", str(RECIPES / "distill_sequence.yaml"), "--dataset_name", str(outputs), "--output_dir",
            str(out), "--completion_column", "response"]  # fmt: skip
    assert sft.cli(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # one line (after datasets' progress bars)
    assert f"data source '{outputs}': completion_column 'response' is not one of its columns" in err
    assert "['instruction', 'output', 'stop']" in err
    assert not out.exists()

    # a mixture's source names its own columns the same way
    recipe = tmp_path / "mix.yaml"
    recipe.write_text((RECIPES / "distill_sequence.yaml").read_text().replace(
        "dataset_name: tiny:teacher_outputs", f"datasets:\n  - path: {outputs}\n    prompt_column: question"))  # fmt: skip
    assert sft.cli(["--config", str(recipe), "--output_dir", str(out)]) == 2
    assert f"data source '{outputs}': prompt_column 'question' is not one of its columns" in capsys.readouterr().err
    assert not out.exists()
