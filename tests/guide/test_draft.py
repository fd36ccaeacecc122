"""Draft-switch decoding: the switch point is the rule's, applied by brute force to the whole draft."""

import math

import pytest
import torch

from data.world import world_prompts
from guide import Guide, GuideConfig
from guide.draft import switch_index
from guide.models import chat_prompt

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
    window, threshold = 4, 0.5
    config = GuideConfig(
        decoder="wsd", pilot=pilot, window=window, threshold=threshold, temperature=0.0, max_new_tokens=48,
        batch_size=12,
    )  # fmt: skip
    guide = Guide(config)
    out = guide.generate(PROMPTS, progress=False)
    # brute force: the pilot's whole greedy draft, scored by the base in one forward
    drafts = Guide(GuideConfig(strong_model=pilot, temperature=0.0, max_new_tokens=48)).generate(
        PROMPTS, progress=False
    )
    base, tok = guide.engine.model, guide.engine.tokenizer
    switched = 0
    for prompt, got, draft in zip(PROMPTS, out, drafts, strict=True):
        prompt_ids = tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids
        draft_ids = tok(draft.text, add_special_tokens=False).input_ids
        ids = torch.tensor([prompt_ids + draft_ids])
        with torch.no_grad():
            lp = torch.log_softmax(base(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
        i = switch_index(lp[len(prompt_ids) - 1 :].tolist(), window, threshold)
        if i is None:
            assert got.switch_at is None and got.text == draft.text
        else:
            switched += 1
            assert got.switch_at == i + 1
            assert got.text.startswith(tok.decode(draft_ids[: i + 1]))
    assert switched >= 1


def test_wsd_needs_a_pilot():
    with pytest.raises(ValueError, match="needs a `pilot`"):
        Guide(GuideConfig(decoder="wsd")).generate(PROMPTS[:1], progress=False)
