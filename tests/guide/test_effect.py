"""With a DPO-trained tiny guide, weak-to-strong search raises the strong model's gold reward."""

import statistics

import pytest

from data.world import gold_reward, world_prompts
from guide import GuideConfig, generate

PROMPTS = world_prompts("test", 48)
COMMON = dict(strong_model="tiny:strong", temperature=1.0, top_k=0, max_new_tokens=64, seed=0, batch_size=16)


@pytest.mark.slow
def test_cbs_with_a_dpo_guide_beats_plain_sampling(tiny_guide):
    plain = generate(GuideConfig(decoder="sample", **COMMON), PROMPTS, progress=False)
    pair = dict(tuned=str(tiny_guide["tuned"]), untuned=str(tiny_guide["untuned"]))
    cbs = generate(
        GuideConfig(decoder="cbs", width=4, successors=4, chunk_len=5, **pair, **COMMON), PROMPTS, progress=False
    )
    r_plain = gold_reward(PROMPTS, [g.text for g in plain])
    r_cbs = gold_reward(PROMPTS, [g.text for g in cbs])
    gain = statistics.mean(r_cbs) - statistics.mean(r_plain)
    se = (statistics.variance(r_cbs) / len(r_cbs) + statistics.variance(r_plain) / len(r_plain)) ** 0.5
    assert gain > 2 * se, (statistics.mean(r_plain), statistics.mean(r_cbs), se)
