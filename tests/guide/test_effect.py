"""With a DPO-trained tiny guide, weak-to-strong search raises the strong model's gold reward."""

# The margins quoted in this file's comments were measured on world version 2. On version 4 (neutral openings,
# a mood and a topic, the tense set by the response) every trained test here passed in worlds 0, 1 and 2
# (make test; make test-trained WORLD=1 and WORLD=2); the figures were not re-measured one by one.

import statistics

import pytest

from w2s.data.world import gold_reward, world_prompts
from w2s.guide import GuideConfig, generate

PROMPTS = world_prompts("test", 192)
COMMON = dict(strong_model="tiny:strong", temperature=1.0, top_k=0, max_new_tokens=64, seed=0, batch_size=32)


@pytest.mark.slow
@pytest.mark.trained
def test_cbs_with_a_dpo_guide_beats_plain_sampling(tiny_guide):
    plain = generate(GuideConfig.from_dict(dict(decoder="sample", **COMMON)), PROMPTS, progress=False)
    pair = dict(tuned=str(tiny_guide["tuned"]), untuned=str(tiny_guide["untuned"]))
    cbs = generate(
        GuideConfig.from_dict(dict(decoder="cbs", width=4, successors=4, chunk_len=5, **pair, **COMMON)),
        PROMPTS,
        progress=False,
    )
    r_plain = gold_reward(PROMPTS, [g.text for g in plain])
    r_cbs = gold_reward(PROMPTS, [g.text for g in cbs])
    # What training guarantees is a gain many standard errors wide, not its size: the guide's gain differs
    # from world to world. Paired by prompt over 192 prompts, measured gain ± SE: +4.99 ± 0.34 (z 14.5),
    # +1.67 ± 0.31 (z 5.5), +2.76 ± 0.30 (z 9.3) in worlds 0, 1, 2; the bar z > 3 leaves the weakest world
    # 2.5 SE. 48 prompts were too few: world 1's z ranged 1.6-4.2 over four disjoint sets of 48.
    diff = [c - p for c, p in zip(r_cbs, r_plain, strict=True)]
    gain, se = statistics.mean(diff), statistics.stdev(diff) / len(diff) ** 0.5
    assert gain > 3 * se, (statistics.mean(r_plain), statistics.mean(r_cbs), gain, se)
