"""The tiny world's guides: trained by the real scripts, judged by the gold reward (issue 3, acceptance 1)."""

from __future__ import annotations

import pytest
from datasets import load_from_disk

from data.world.preferences import world_preferences
from train.evaluation import reward_accuracy, sample_reward
from train.world import ensure_base, ensure_guide


@pytest.fixture(scope="module")
def held_out_pairs():
    return load_from_disk(str(world_preferences(ensure_base("weak"))))["test"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sft_dpo", "dpo"])
def test_guide_prefers_gold_and_writes_better(kind, held_out_pairs):
    tuned, untuned = ensure_guide(kind), ensure_base("weak")
    assert len(held_out_pairs) >= 50
    assert reward_accuracy(tuned, untuned, held_out_pairs) >= 0.8
    tuned_reward, _ = sample_reward(tuned, num_prompts=200)
    untuned_reward, _ = sample_reward(untuned, num_prompts=200)
    assert tuned_reward > untuned_reward + 1.0


def test_tiny_guide_fixture_is_a_tuned_untuned_pair(tiny_guide):
    assert (tiny_guide["tuned"] / "config.json").is_file()
    assert (tiny_guide["tuned"] / "README.md").read_text().count("dpo") >= 1
    assert tiny_guide["untuned"] == ensure_base("weak")
    assert tiny_guide["tuned"] != tiny_guide["untuned"]
