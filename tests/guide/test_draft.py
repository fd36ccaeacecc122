"""Draft-switch decoding: the switch point is the rule's, applied by brute force to the whole draft."""

import dataclasses
import itertools
import math

import pytest
import torch

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.draft import switch_index
from w2s.guide.models import chat_prompt

PROMPTS = world_prompts("test", 12)


def test_switch_index_by_hand():
    p = [0.1, 0.9, 0.9, 0.9, 0.5, 0.99, 0.99, 0.99]
    lp = [math.log(x) for x in p]
    # windows of 3: geometric means 0.43, 0.9 (i=3) -> first reaching 0.8 is i=3
    assert switch_index(lp, 3, 0.8) == 3
    assert switch_index(lp, 3, 0.95) == 7  # 0.99 ** 3 ** (1/3)
    assert switch_index(lp, 3, 0.999) is None
    assert switch_index(lp, 3, 0.8, stable=3) is None  # the fourth token may still change


@pytest.mark.slow
@pytest.mark.parametrize("pilot", ["tiny:weak", "tiny:weak_b"])
def test_switch_point_equals_brute_force(pilot):
    window, max_new = 4, 48
    config = GuideConfig.from_dict(
        dict(decoder="wsd", pilot=pilot, window=window, temperature=0.0, max_new_tokens=max_new, batch_size=12)
    )
    guide = Guide(config)
    # brute force: the pilot's whole greedy draft, scored by the base in one forward
    drafts = Guide(GuideConfig.from_dict(dict(strong_model=pilot, temperature=0.0, max_new_tokens=max_new))).generate(
        PROMPTS, progress=False
    )
    base, tok = guide.engine.model, guide.engine.tokenizer
    logprobs, kept = [], []
    for prompt, draft in zip(PROMPTS, drafts, strict=True):
        prompt_ids = tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids
        draft_ids = tok(draft.text, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + draft_ids])
        with torch.no_grad():
            lp = torch.log_softmax(base(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
        logprobs.append(lp[len(prompt_ids) - 1 :].tolist())
        kept.append(draft_ids)

    # The operating point comes from the models in hand (a fixed tau switched nowhere on another build):
    # tau sits mid-way, in log space, in the widest gap between measured window scores that leaves at
    # least one draft below it everywhere (no switch) and one reaching it (a switch), so both branches run
    # and no window lies within float noise of tau.
    scores = [[sum(lp[i - window + 1 : i + 1]) / window for i in range(window - 1, len(lp))] for lp in logprobs]
    best = [max(s, default=-math.inf) for s in scores]
    lowest, highest = min(best), max(best)
    values = sorted({v for s in scores for v in s if lowest <= v <= highest})
    assert len(values) >= 2, f"every draft's best window scores the same ({best}): no tau splits them"
    lo, hi = max(itertools.pairwise(values), key=lambda g: g[1] - g[0])
    assert hi - lo > 1e-3, (lo, hi)  # far wider than the incremental forward's float error (~1e-5)
    threshold = math.exp((lo + hi) / 2)
    out = guide.generate(PROMPTS, progress=False, decoder=dataclasses.replace(guide.decoder, threshold=threshold))

    switched = whole = 0
    for got, draft, draft_ids, lp in zip(out, drafts, kept, logprobs, strict=True):
        i = switch_index(lp, window, threshold)
        if i is None:
            whole += 1
            assert got.switch_at is None and got.text == draft.text
        else:
            switched += 1
            assert got.switch_at == i + 1
            assert got.text.startswith(tok.decode(draft_ids[: i + 1]))
    assert switched >= 1 and whole >= 1, (switched, whole, threshold)


def test_wsd_needs_a_pilot():
    with pytest.raises(ValueError, match="needs a `pilot`"):
        Guide(GuideConfig.from_dict(dict(decoder="wsd"))).generate(PROMPTS[:1], progress=False)
