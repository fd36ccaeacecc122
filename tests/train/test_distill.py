"""Distillation: token-level moves the student towards the teacher; sequence-level runs; vocabularies checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from guide.models import resolve_model_path
from train import distill, sft
from train.evaluation import token_kl
from train.recipes import RecipeError, parse_recipe
from train.world import ensure_base

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


@pytest.mark.slow
def test_token_level_distillation_lowers_kl_to_the_teacher(tmp_path):
    out = tmp_path / "student"
    args = ["--config", str(RECIPES / "distill.yaml"), "--output_dir", str(out), "--model_name_or_path",
            "tiny:student", "--max_steps", "20", "--per_device_train_batch_size", "8"]  # fmt: skip
    distill.main(*parse_recipe(distill.DATACLASSES, args))
    teacher = ensure_base("strong")
    before = token_kl(teacher, resolve_model_path("tiny:student"))
    after = token_kl(teacher, out)
    assert after < 0.85 * before, (before, after)


def test_different_vocabularies_are_refused_by_name(tmp_path):
    args = ["--config", str(RECIPES / "distill.yaml"), "--output_dir", str(tmp_path / "o"),
            "--model_name_or_path", str(ensure_base("weak_b"))]  # fmt: skip
    with pytest.raises(RecipeError, match=r"needs one vocabulary.*weak-b.*strong.*sequence level"):
        distill.main(*parse_recipe(distill.DATACLASSES, args))
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_sequence_level_recipe_runs_on_teacher_outputs(tmp_path):
    out = tmp_path / "seq"
    args = ["--config", str(RECIPES / "distill_sequence.yaml"), "--output_dir", str(out), "--max_steps", "3"]
    sft.main(*parse_recipe(sft.DATACLASSES, args))
    assert (out / "model.safetensors").is_file()
    assert "tiny:teacher_outputs" in (out / "README.md").read_text()
