"""Logit arithmetic: greedy decoding equals a brute-force loop of full forwards and the papers' formulas."""

import pytest
import torch

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.fusion import fuse
from w2s.guide.models import chat_prompt

PROMPTS = world_prompts("test", 4)
ALPHAS = torch.arange(0, 21) * 0.1


def brute_force_alpha(base, experts, untuned):
    """Explicit loops over experts and the grid, KL from its definition."""

    def kl(a, b):  # KL(softmax a || softmax b)
        pa, la, lb = a.softmax(-1), a.log_softmax(-1), b.log_softmax(-1)
        return float((pa * (la - lb)).sum())

    best = None
    for t in range(len(experts)):
        for alpha in ALPHAS.tolist():
            fused = base + alpha * (experts[t] - untuned)
            objective = sum(
                (kl(fused, base) - kl(experts[s], untuned)) ** 2 + (kl(base, fused) - kl(untuned, experts[s])) ** 2
                for s in range(len(experts))
            )
            if best is None or objective < best[0] - 1e-9:
                best = (objective, t, alpha)
    return best[1], best[2]


def test_dynamic_fusion_alpha_equals_grid_search():
    torch.manual_seed(0)
    for _ in range(20):
        base, untuned = torch.randn(1, 50) * 2, torch.randn(1, 50)
        experts = untuned + torch.randn(2, 1, 50) * torch.rand(2, 1, 1) * 3
        _, chosen = fuse(base, experts, untuned, ALPHAS)
        t, alpha = brute_force_alpha(base[0], experts[:, 0], untuned[0])
        assert chosen[0].sum().item() == pytest.approx(alpha, abs=1e-6)  # one expert active ...
        if alpha > 0:
            assert chosen[0, t].item() == pytest.approx(alpha, abs=1e-6)  # ... the brute force's


def greedy_by_brute_force(models, tokenizer, prompt, combine, steps):
    """Re-runs every model over the whole text at every step (no caches)."""
    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
    out = []
    for _ in range(steps):
        with torch.no_grad():
            logits = [m(torch.tensor([ids + out])).logits[0, -1] for m in models]
        token = int(combine(logits).argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    return tokenizer.decode(out, skip_special_tokens=True)


@pytest.mark.parametrize("decoder", ["eft", "fusion"])
def test_greedy_logit_arithmetic_equals_brute_force(decoder):
    config = GuideConfig.from_dict(dict(
        decoder=decoder, tuned="tiny:strong", untuned="tiny:weak", strong_model="tiny:strong", beta=0.7,
        temperature=0.0, max_new_tokens=24, batch_size=4,
    ))  # fmt: skip
    guide = Guide(config)
    models = [guide.engine.model, guide.pairs[0].tuned, guide.pairs[0].untuned]
    if decoder == "eft":

        def combine(logits):
            return logits[0] + 0.7 * (logits[1] - logits[2])
    else:

        def combine(logits):
            _, alpha = brute_force_alpha(logits[0], [logits[1]], logits[2])
            return logits[0] + alpha * (logits[1] - logits[2])

    out = guide.generate(PROMPTS, progress=False)
    for prompt, got in zip(PROMPTS, out, strict=True):
        assert got.text == greedy_by_brute_force(models, guide.engine.tokenizer, prompt, combine, 24)


def test_different_vocabularies_point_to_cbs_or_wsd():
    config = GuideConfig.from_dict(dict(decoder="eft", tuned="tiny:weak_b", untuned="tiny:weak_b"))
    with pytest.raises(ValueError, match=r"decoder: cbs.*decoder: wsd"):
        Guide(config).generate(PROMPTS, progress=False)


@pytest.mark.parametrize("decoder", ["eft", "fusion"])
def test_logit_arithmetic_honours_stop_strings(decoder):
    common = dict(tuned="tiny:strong", untuned="tiny:weak", beta=0.5, temperature=0.0, max_new_tokens=40, batch_size=4)
    full = Guide(GuideConfig.from_dict(dict(decoder=decoder, **common))).generate(PROMPTS, progress=False)
    # the stop string comes from the texts in hand (a greedy decoder may loop on one word and never end a
    # sentence on some build): the end of a sentence if one is written, else a word written after the first
    words = [" " + w for g in full for w in g.text.split()[1:]]
    assert words, [g.text for g in full]
    stop = " ." if " ." in words else words[0]
    cut = Guide(GuideConfig.from_dict(dict(decoder=decoder, stop=[stop], **common))).generate(PROMPTS, progress=False)
    stopped = 0
    for whole, first in zip(full, cut, strict=True):
        if stop in whole.text:  # the unstopped text goes on past the stop string; the stopped one ends before it
            assert first.text == whole.text[: whole.text.index(stop)]
            stopped += 1
        else:
            assert first.text == whole.text
    assert stopped >= 1
