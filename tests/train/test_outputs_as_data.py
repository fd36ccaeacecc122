"""w2s's own outputs as training data, without conversion: AlpacaEval outputs (`w2s generate`, `w2s eval`), a
`w2s data build` folder, and other layouts through the column mapping (prompt_column / completion_column)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from w2s.cli import main
from w2s.train import distill, sft
from w2s.train.data import (
    DISTILL_COLUMNS,
    DPO_COLUMNS,
    SFT_COLUMNS,
    DataError,
    TrainScriptArguments,
    load_checked_data,
)
from w2s.train.recipes import parse_recipe
from w2s.train.world import ensure_base

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


def test_distillation_reads_prompts_alone_from_outputs_and_conversations(tmp_path):
    outputs = tmp_path / "cbs.json"
    outputs.write_text(json.dumps([{"instruction": f"the film {i} was good .", "output": "it was fun ."}
                                   for i in range(3)]))  # fmt: skip
    train, _ = load_checked_data(TrainScriptArguments(dataset_name=str(outputs)), DISTILL_COLUMNS, "distillation")
    assert train["prompt"] == [user(f"the film {i} was good .") for i in range(3)]
    assert "completion" not in train.column_names  # the student writes its own

    # a conversation (e.g. `w2s data build`'s sft set) is read up to its last user turn
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": user(f"the plot {i} was dull .") + assistant("it was .")}) + "\n"
                             for i in range(3)))  # fmt: skip
    train, _ = load_checked_data(TrainScriptArguments(dataset_name=str(chats)), DISTILL_COLUMNS, "distillation")
    assert train["prompt"] == [user(f"the plot {i} was dull .") for i in range(3)]


def test_token_level_distillation_trains_on_the_prompts_of_conversations(tmp_path):
    # TRL's DistillationTrainer reads a `prompt` column: conversations used to reach it as `messages` and fail
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": user(f"the plot {i} was dull .") + assistant("it was .")}) + "\n"
                             for i in range(4)))  # fmt: skip
    out = tmp_path / "student"
    args = ["--config", str(RECIPES / "distill.yaml"), "--dataset_name", str(chats), "--output_dir", str(out),
            "--max_steps", "1", "--per_device_train_batch_size", "4", "--max_completion_length", "8"]  # fmt: skip
    assert distill.cli(args) == 0
    assert (out / "model.safetensors").is_file()


def jsonl_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_data_build_folder_is_read_as_the_set_each_trainer_needs(tmp_path):
    built = tmp_path / "data"
    assert main(["data", "build", "--config", str(RECIPES / "data.yaml"), "--output_dir", str(built),
                 "--num_prompts", "40"]) == 0  # fmt: skip
    best = jsonl_rows(built / "jsonl" / "sft-train.jsonl")  # each prompt's best judged response
    pairs = jsonl_rows(built / "jsonl" / "pairs-train.jsonl")
    assert best and pairs

    def load(accepted, **recipe):
        return load_checked_data(TrainScriptArguments(dataset_name=str(built), **recipe), accepted, "test")[0]

    assert load(SFT_COLUMNS)["messages"] == [r["messages"] for r in best]
    assert load(DISTILL_COLUMNS)["prompt"] == [r["messages"][:-1] for r in best]
    assert load(DPO_COLUMNS)["chosen"] == [r["chosen"] for r in pairs]
    on_chosen = load(SFT_COLUMNS, completion_column="chosen")  # SFT on the pairs' chosen side, as recipes/tiny/sft
    assert on_chosen["completion"] == [r["chosen"] for r in pairs]
    assert load(SFT_COLUMNS, dataset_config="pairs", completion_column="rejected")["completion"] == [
        r["rejected"] for r in pairs
    ]
    with pytest.raises(DataError, match=r"a w2s data build folder with the sets \['sft', 'pairs'\], not 'best'"):
        load(SFT_COLUMNS, dataset_config="best")

    out = tmp_path / "sft"
    args = ["--config", str(RECIPES / "sft.yaml"), "--dataset_name", str(built), "--output_dir", str(out),
            "--max_steps", "2"]  # fmt: skip
    assert sft.cli(args) == 0
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_sft_on_the_outputs_of_weak_to_strong_search(tmp_path, monkeypatch, capsys, tiny_guide):
    # the two commands of issue #18, on fewer prompts:
    #   w2s generate --config recipes/tiny/guide.yaml --num_prompts 16 --output cbs16.json
    #   python train/sft.py --config recipes/tiny/distill_sequence.yaml --dataset_name cbs16.json --max_steps 2
    monkeypatch.chdir(tmp_path)
    generate = ["generate", "--config", str(RECIPES / "guide.yaml"), "--num_prompts", "8", "--output", "cbs8.json"]
    assert main(generate) == 0
    outputs = json.loads(Path("cbs8.json").read_text())
    args = ["--config", str(RECIPES / "distill_sequence.yaml"), "--dataset_name", "cbs8.json", "--max_steps", "2",
            "--output_dir", "seqdistill"]  # fmt: skip
    assert sft.cli(args) == 0
    assert (tmp_path / "seqdistill" / "model.safetensors").is_file()
    assert "cbs8.json" in (tmp_path / "seqdistill" / "README.md").read_text()
    before = AutoModelForCausalLM.from_pretrained(str(ensure_base("weak")))
    after = AutoModelForCausalLM.from_pretrained(str(tmp_path / "seqdistill"))
    assert any(not torch.equal(p, q) for p, q in zip(before.parameters(), after.parameters(), strict=True))

    # what it trained on: the generated instruction/output pairs, as chat prompt/completion
    script_args, _, _ = parse_recipe(sft.DATACLASSES, args)
    train, evaluation = load_checked_data(script_args, SFT_COLUMNS, "SFT")
    assert len(outputs) == 8 and evaluation is None
    assert train["prompt"] == [user(o["instruction"]) for o in outputs]
    assert train["completion"] == [assistant(o["output"]) for o in outputs]

    # the scores and costs beside the outputs are not the data: said so, before any model loads
    capsys.readouterr()
    details = ["--config", str(RECIPES / "distill_sequence.yaml"), "--dataset_name", "cbs8.details.json",
               "--output_dir", "refused"]  # fmt: skip
    assert sft.cli(details) == 2
    assert "writes beside its outputs: train on 'cbs8.json'" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
