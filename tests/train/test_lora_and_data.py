"""LoRA runs (adapter saved, merged model equal to base + adapter) and the data sources a recipe may name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from peft import PeftModel
from transformers import AutoModelForCausalLM

from w2s.train import dpo, sft
from w2s.train.data import DataError, TrainScriptArguments, check_columns, check_pairs, load_training_data
from w2s.train.recipes import parse_recipe
from w2s.train.world import ensure_base

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def test_lora_run_saves_adapter_and_merged_model_matches(tmp_path):
    out = tmp_path / "lora"
    args = ["--config", str(RECIPES / "dpo.yaml"), "--output_dir", str(out), "--max_steps", "4", "--use_peft",
            "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "all-linear", "--learning_rate", "5e-2",
            "--merge_adapter"]  # fmt: skip
    dpo.main(*parse_recipe(dpo.DATACLASSES, args))
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # the adapter alone, not a copy of the base
    assert "lora" in (out / "README.md").read_text()

    base = AutoModelForCausalLM.from_pretrained(str(ensure_base("weak")))
    ids = torch.randint(3, base.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        base_logits = base(ids).logits
        with_adapter = PeftModel.from_pretrained(base, str(out)).eval()
        adapter_logits = with_adapter(ids).logits
        merged_logits = AutoModelForCausalLM.from_pretrained(str(out / "merged")).eval()(ids).logits
    assert (adapter_logits - base_logits).abs().max() > 1e-3  # the adapter learned something
    torch.testing.assert_close(merged_logits, adapter_logits, atol=1e-5, rtol=1e-5)


def rows(n: int, tag: str) -> list[dict]:
    return [{"prompt": f"{tag} {i}", "completion": f"c{i}", "extra": i} for i in range(n)]


def test_sources_jsonl_save_to_disk_and_mixture_fractions(tmp_path):
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows(30, "a")))
    folder = tmp_path / "b"
    DatasetDict({"train": Dataset.from_list(rows(50, "b")), "test": Dataset.from_list(rows(5, "b"))}).save_to_disk(
        str(folder)
    )

    train, test = load_training_data(TrainScriptArguments(dataset_name=str(folder)))
    assert (len(train), len(test)) == (50, 5)
    train, test = load_training_data(TrainScriptArguments(dataset_name=str(jsonl), test_split_size=0.2))
    assert (len(train), len(test)) == (24, 6)

    # shares 1:3 -> the largest mixture without repeating rows: b limits it to 50/0.75 = 66.7 rows
    mixture = [{"path": str(jsonl), "fraction": 1.0}, {"path": str(folder), "fraction": 3.0}]
    train, test = load_training_data(TrainScriptArguments(datasets=mixture))
    tags = [p.split()[0] for p in train["prompt"]]
    assert (tags.count("a"), tags.count("b")) == (round(0.25 * 50 / 0.75), 50)
    assert test is None


def test_missing_columns_and_sources_are_named(tmp_path):
    data = Dataset.from_list([{"prompt": "x", "chosen": "y"}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['rejected'\]"):
        check_columns(data, dpo_columns(), "DPO train data")
    with pytest.raises(DataError, match=r"nowhere\.jsonl"):
        load_training_data(TrainScriptArguments(dataset_name=str(tmp_path / "nowhere.jsonl")))
    with pytest.raises(DataError, match="completion_column 'best' is not one of its columns"):
        load_training_data(TrainScriptArguments(dataset_name="tiny:preferences", completion_column="best"))
    with pytest.raises(DataError, match="unknown tiny-world data set 'tiny:nothing'"):
        load_training_data(TrainScriptArguments(dataset_name="tiny:nothing"))


def dpo_columns():
    from w2s.train.data import DPO_COLUMNS

    return DPO_COLUMNS


def test_sft_on_chosen_trains_and_writes_a_model_card(tmp_path):
    out = tmp_path / "sft"
    sft.main(*parse_recipe(sft.DATACLASSES, ["--config", str(RECIPES / "sft.yaml"), "--output_dir", str(out),
                                             "--max_steps", "3", "--logging_steps", "1"]))  # fmt: skip
    before = AutoModelForCausalLM.from_pretrained(str(ensure_base("weak")))
    after = AutoModelForCausalLM.from_pretrained(str(out))
    moved = [
        n for (n, p), q in zip(before.named_parameters(), after.parameters(), strict=True) if not torch.equal(p, q)
    ]
    assert moved  # parameters changed
    card = (out / "README.md").read_text()
    assert card.startswith("---\nbase_model: tiny:weak\n")
    assert "tiny:preferences" in card and "completion_column: chosen" in card and "| step | 3 |" in card
    assert "| train_loss |" in card


def test_pairs_whose_chosen_is_their_rejected_are_counted(caplog):
    rows = [{"prompt": "the film", "chosen": "it was good .", "rejected": "it were bad ."},
            {"prompt": "the songs", "chosen": "they were fun .", "rejected": "they were fun ."},
            {"prompt": "the end", "chosen": "ok .", "rejected": "ok ."}]  # fmt: skip
    with caplog.at_level("WARNING"):
        check_pairs(Dataset.from_list(rows), "DPO train data")
    assert "chosen equals rejected in 2 of 3 rows" in caplog.text
    chat = [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": [{"role": "assistant", "content": r["rejected"]}]} for r in rows[1:]]  # fmt: skip
    with pytest.raises(DataError, match="chosen equals rejected in all 2 rows"):
        check_pairs(Dataset.from_list(chat), "DPO train data")
