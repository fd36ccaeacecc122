"""SFT and DPO on the chat template of a Llama-3-style vocabulary (100k tokens, two end tokens, no padding
token), on the pairs `w2s data build` wrote over it (tests/conftest.py `vocab_build`): what training guarantees,
measured with w2s's own log pi(y|x)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import AutoModelForCausalLM

from w2s.guide.models import load_model_and_tokenizer
from w2s.guide.scoring import response_logprobs
from w2s.train import dpo, sft
from w2s.train.evaluation import dpo_loss, implicit_margins
from w2s.train.recipes import parse_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


def recipe(tmp_path: Path, stage: str, **values) -> Path:
    """The tiny world's recipe for `stage` with the model, data and steps of these tests."""
    config = yaml.safe_load((RECIPES / f"{stage}.yaml").read_text())
    config.pop("completion_column", None)
    config |= {"num_train_epochs": 1, "per_device_train_batch_size": 4, "logging_steps": 1, **values}
    path = tmp_path / f"{stage}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def moved(before: str | Path, after: str | Path) -> list[str]:
    a, b = (AutoModelForCausalLM.from_pretrained(str(p)) for p in (before, after))
    return [n for (n, p), q in zip(a.named_parameters(), b.parameters(), strict=True) if not torch.equal(p, q)]


def test_sft_on_the_llama3_chat_template_raises_the_responses_log_likelihood(vocab_models, vocab_build, tmp_path):
    base, out = vocab_models["llama3"], tmp_path / "sft"
    config = recipe(tmp_path, "sft", model_name_or_path=str(base), dataset_name=str(vocab_build), max_steps=6,
                    learning_rate=1e-2)  # fmt: skip
    sft.main(*parse_recipe(sft.DATACLASSES, ["--config", str(config), "--output_dir", str(out)]))
    assert moved(base, out)
    rows = load_from_disk(str(vocab_build / "sft"))["train"]
    prompts = [r["messages"][:-1] for r in rows]
    responses = [r["messages"][-1]["content"] for r in rows]

    def mean_logprob(path) -> float:  # finished responses: their <|eot_id|> counts, as SFT trained on it
        model, tok = load_model_and_tokenizer(str(path))
        return sum(response_logprobs(model, tok, prompts, responses, True)) / len(rows)

    # a random model starts near -ln(100k) = -11.5 nats a token; six Adam steps on these rows must gain nats
    assert mean_logprob(out) > mean_logprob(base) + 1.0


def test_dpo_on_the_llama3_chat_template_learns_its_pairs(vocab_models, vocab_build, tmp_path):
    base, out = vocab_models["llama3"], tmp_path / "dpo"
    config = recipe(tmp_path, "dpo", model_name_or_path=str(base), dataset_name=str(vocab_build), max_steps=6,
                    learning_rate=1e-3, beta=0.1)  # fmt: skip
    dpo.main(*parse_recipe(dpo.DATACLASSES, ["--config", str(config), "--output_dir", str(out)]))
    assert moved(base, out)
    pairs = load_from_disk(str(vocab_build / "pairs"))["train"]
    margins = implicit_margins(out, base, pairs)  # the guide pair's log-ratio of chosen minus rejected
    # untrained, every margin is 0 and the loss log 2: DPO's steps on these pairs must bring it below
    assert dpo_loss(margins, 0.1) < math.log(2) - 0.01
