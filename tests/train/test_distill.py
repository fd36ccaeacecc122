"""Distillation: token-level moves the student towards the teacher; sequence-level runs; vocabularies checked."""

# The margins quoted in this file's comments were measured on world version 2. On version 4 (neutral openings,
# a mood and a topic, the tense set by the response) every trained test here passed in worlds 0, 1 and 2
# (make test; make test-trained WORLD=1 and WORLD=2); the figures were not re-measured one by one.

from __future__ import annotations

from pathlib import Path

import pytest

from w2s.guide.models import resolve_model_path
from w2s.train import distill, sft
from w2s.train.evaluation import paired_z, review_kls
from w2s.train.recipes import RecipeError, parse_recipe
from w2s.train.world import ensure_base, seed_flags

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "tiny"


@pytest.mark.slow
@pytest.mark.trained
def test_token_level_distillation_lowers_kl_to_the_teacher(tmp_path):
    out = tmp_path / "student"
    args = ["--config", str(RECIPES / "distill.yaml"), "--output_dir", str(out), "--model_name_or_path",
            "tiny:student", "--max_steps", "20", "--per_device_train_batch_size", "8",
            *seed_flags(RECIPES / "distill.yaml")]  # fmt: skip
    distill.main(*parse_recipe(distill.DATACLASSES, args))
    teacher = ensure_base("strong")
    before = review_kls(teacher, resolve_model_path("tiny:student"))
    after = review_kls(teacher, out)
    # What guarantees the margin: 20 steps of forward KL(teacher || student) on the student's own completions
    # lower that KL on held-out reviews of the same world. Over 200 held-out reviews the per-token KL fell to
    # 0.71-0.77 of its value before (0.70 -> 0.50 in world 0) and the per-review paired decrease had z 27-63
    # across worlds 0-2 (this run's seed follows the world, like the models'). The gates, a ratio below 0.9 and
    # z > 10, sit > 10 SE inside every world (the ratio's SE from review sampling is ~0.01).
    kl_before, kl_after = ([kl / n for kl, n in per_review] for per_review in (before, after))
    total_before, total_after = (sum(kl for kl, _ in r) / sum(n for _, n in r) for r in (before, after))
    assert total_after < 0.9 * total_before, (total_before, total_after)
    assert paired_z(kl_before, kl_after) > 10, (total_before, total_after)


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
