"""The tiny world's guides: trained by the real scripts, judged by the gold reward (issue 3, acceptance 1)."""

# The margins quoted in this file's comments were measured on world version 2. On version 4 (neutral openings,
# a mood and a topic, the tense set by the response) every trained test here passed in worlds 0, 1 and 2
# (make test; make test-trained WORLD=1 and WORLD=2); the figures were not re-measured one by one.

from __future__ import annotations

import math
import statistics

import pytest
import torch
import yaml
from datasets import load_from_disk
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer

from w2s.data.world.preferences import world_preferences
from w2s.train.evaluation import binomial_lower_bound, dpo_loss, implicit_margins, paired_z, sample_rewards
from w2s.train.guides import ensure_guide
from w2s.train.tiny import GUIDE_RECIPES, GUIDES
from w2s.train.world import ensure_base


@pytest.fixture(scope="module")
def held_out_pairs():
    return load_from_disk(str(world_preferences(ensure_base("weak"))))["test"]


def dpo_beta(kind: str) -> float:
    """The beta of the guide's DPO stage: its flag, else the tiny DPO recipe's."""
    flags = GUIDES[kind][2]
    if "--beta" in flags:
        return float(flags[flags.index("--beta") + 1])
    return float(yaml.safe_load(GUIDE_RECIPES["dpo"].read_text())["beta"])


@pytest.mark.slow
@pytest.mark.trained
@pytest.mark.parametrize("kind", ["sft_dpo", "dpo"])
def test_guide_prefers_gold_on_held_out_pairs(kind, held_out_pairs):
    # What guarantees the margins: DPO minimises -log sigmoid(beta * margin) over pairs drawn like the held-out
    # ones (gold best vs worst of the weak base's samples), so on them the guide's log-ratio must prefer the
    # chosen response more often than chance, and its mean loss must sit below log 2 (0.69), the loss of a guide
    # that learned nothing. Across worlds 0-2 (90 pairs each) accuracy was 0.78-0.86, its exact 99.9% lower
    # bound 0.62-0.71 (a chance guide clears 0.5 with probability < 0.001), and the loss 0.29-0.48, at least
    # 2.3 SE below log 2 (the thinnest: sft_dpo in world 1, 0.48 +- 0.09).
    tuned, untuned = ensure_guide(kind), ensure_base("weak")
    assert len(held_out_pairs) >= 50
    margins = implicit_margins(tuned, untuned, held_out_pairs)
    wins = sum(m > 0 for m in margins)
    assert binomial_lower_bound(wins, len(margins), confidence=0.999) > 0.5, (wins, len(margins))
    assert dpo_loss(margins, dpo_beta(kind)) < math.log(2)


@pytest.mark.slow
@pytest.mark.trained
@pytest.mark.parametrize("kind", ["sft_dpo", "dpo"])
def test_guide_writes_better_than_its_untuned_twin(kind, one_thread):
    # What guarantees the margin: DPO on gold-judged pairs raises the gold reward of the guide's own samples over
    # its untuned twin's; the test asks only that the gain be real (z > 3), not that it be of some size. One
    # sample per prompt leaves an SD of the paired difference near 6 (+1.0 over 200 samples failed on another
    # machine with a gain of 0.6); 5 samples on each of 1000 prompts bring the SE to 0.07-0.12. Measured (gain,
    # z): dpo +0.82 (6.9) in world 0 and +2.82 (34) in world 2; sft_dpo +4.3-5.3 (z 47-64) in worlds 0-2.
    # A gain of 0.6, as on that other machine, would give z near 5. This test is the one that catches a collapsed
    # guide: world 1's dpo guide at beta 0.1 wrote runs of ". ." (mean reward -95 vs -5.6, z -109) while its
    # held-out reward accuracy (0.82) and loss (0.43) passed the test above.
    num_prompts, num_samples = 1000, 5
    tuned = sample_rewards(ensure_guide(kind), num_prompts=num_prompts, num_samples=num_samples)
    untuned = sample_rewards(ensure_base("weak"), num_prompts=num_prompts, num_samples=num_samples)
    tuned_means, untuned_means = [statistics.fmean(r) for r in tuned], [statistics.fmean(r) for r in untuned]
    z = paired_z(tuned_means, untuned_means)
    assert z > 3, (statistics.fmean(tuned_means), statistics.fmean(untuned_means), z)


def test_tiny_guide_fixture_is_a_tuned_untuned_pair(tiny_guide):
    tuned, untuned = tiny_guide["tuned"], tiny_guide["untuned"]
    assert untuned == ensure_base("weak") and tuned != untuned
    # one architecture and one vocabulary (the log-ratio reads both on the same tokens) ...
    assert AutoConfig.from_pretrained(tuned).to_dict() | {"_name_or_path": ""} == (
        AutoConfig.from_pretrained(untuned).to_dict() | {"_name_or_path": ""}
    )
    assert AutoTokenizer.from_pretrained(tuned).get_vocab() == AutoTokenizer.from_pretrained(untuned).get_vocab()
    # ... and other weights: training moved the tuned one away from its twin
    a, b = load_file(tuned / "model.safetensors"), load_file(untuned / "model.safetensors")
    assert a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a)
    assert any(not torch.equal(a[k], b[k]) for k in a)
