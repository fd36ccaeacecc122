"""Each item samples from its own random stream: outputs do not depend on the batch size or on which
other prompts share the batch, and a repeated prompt draws new samples."""

from __future__ import annotations

import pytest
import torch

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.streams import Sampler, SamplingParams, item_keys

PROMPTS = world_prompts("test", 8)
COMMON = dict(
    strong_model="tiny:strong", tuned="tiny:guide", untuned="tiny:weak", pilot="tiny:guide", max_new_tokens=16,
    temperature=1.0, top_k=0, width=2, successors=2, chunk_len=4, num_samples=3, threshold=0.3, seed=3,
)  # fmt: skip


@pytest.mark.parametrize("decoder", ["sample", "bon", "cbs", "wsd", "eft"])
def test_outputs_do_not_depend_on_the_batch_size(world_paths, decoder):
    texts = {}
    for size in (1, 3, 8):
        guide = Guide(GuideConfig.from_dict(dict(decoder=decoder, batch_size=size, **COMMON)))
        texts[size] = [g.text for g in guide.generate(PROMPTS, progress=False)]
    assert texts[1] == texts[3] == texts[8]
    assert len(set(texts[8])) > 1  # real samples, not one fixed string
    # an item alone, or among other prompts, in another order: the same text
    alone = Guide(GuideConfig.from_dict(dict(decoder=decoder, batch_size=8, **COMMON))).generate(
        PROMPTS[5:6], progress=False
    )
    assert alone[0].text == texts[8][5]


def test_a_repeated_prompt_draws_new_samples_and_the_seed_matters(world_paths):
    guide = Guide(GuideConfig.from_dict(dict(decoder="sample", batch_size=2, **COMMON)))
    outs = [g.text for g in guide.generate([PROMPTS[0]] * 4, progress=False)]
    assert len(set(outs)) > 1  # four samples of one prompt, not one sample four times (batches of 2)
    other = Guide(GuideConfig.from_dict(dict(decoder="sample", batch_size=8, **{**COMMON, "seed": 4})))
    assert [g.text for g in other.generate(PROMPTS, progress=False)] != [
        g.text
        for g in Guide(GuideConfig.from_dict(dict(decoder="sample", batch_size=8, **COMMON))).generate(
            PROMPTS, progress=False
        )
    ]


def test_keyed_gumbel_max_draws_from_the_distribution():
    """Over 20,000 keys, the frequency of each of five tokens is its probability (within 4 binomial sd)."""
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]])
    probs = torch.softmax(logits, -1)[0]
    sampler = Sampler(SamplingParams(temperature=1.0, top_k=0, seed=7))
    keys = item_keys([f"prompt {i}" for i in range(200)])
    draws = torch.cat([sampler(logits.expand(100, -1), [(k, 0, pos) for pos in range(100)]) for k in keys])
    counts = torch.bincount(draws, minlength=5).double()
    n = len(draws)
    assert ((counts / n - probs).abs() <= 4 * (probs * (1 - probs) / n).sqrt()).all(), (counts / n, probs)
    wide = torch.randn(3, 1000)  # the same keys, the same draws; another slot or seed, others
    assert sampler(wide, [(keys[0], 1, 2)] * 3).tolist() == sampler(wide, [(keys[0], 1, 2)] * 3).tolist()
    assert sampler(wide, [(keys[0], s, 2) for s in range(3)]).tolist() != sampler(wide, [(keys[0], 1, 2)] * 3).tolist()
    assert len(set(item_keys(["a", "b", "a"]))) == 3  # the second "a" is another item


def test_a_prompt_keys_its_stream_by_its_content_as_text_or_messages():
    user = [{"role": "user", "content": "a"}]
    conversation = [{"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}, *user]
    keys = item_keys([user, conversation, "a"])
    assert keys[0] == item_keys(["a"])[0]  # one user message is the same prompt as its text
    assert len(set(keys)) == 3  # the earlier turns count; the repeated "a" is another item
    assert item_keys([conversation]) == [keys[1]]


@pytest.mark.parametrize("vocab", [1000, 40_000])  # one noise slice, and several (NOISE_CHUNK = 16,384)
@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (1, 1.0), (7, 1.0), (50, 0.9), (0, 0.8)])
def test_a_draw_is_the_argmax_of_the_warped_logits_plus_the_whole_rows_noise(vocab, top_k, top_p):
    """However the sampler draws (noise a vocabulary slice at a time, or only at the top-k candidates), its
    token is the brute-force argmax of log-probability + the keyed noise of every token of the row."""
    from w2s.guide.streams import _signed, gumbel_noise, stream_key

    torch.manual_seed(vocab + top_k)
    logits = torch.randn(6, vocab) * 4
    logits[5, :20] = logits[5].max() + 1  # twenty tokens tied at the top: top-k keeps them all (no gather)
    sampler = Sampler(SamplingParams(temperature=0.8, top_k=top_k, top_p=top_p, seed=11))
    keys = [(123 + i, i % 2, 40 + i) for i in range(6)]
    drawn = sampler(logits, keys)
    rows = torch.tensor([_signed(stream_key(11, *k)) for k in keys])
    ids = torch.arange(vocab)
    whole = torch.stack([gumbel_noise(rows[i : i + 1], ids)[0] for i in range(6)])  # row by row, one pass
    expected = (sampler.warp(logits).double() + whole).argmax(-1)
    assert drawn.tolist() == expected.tolist()
    if top_k:
        assert all(torch.isfinite(sampler.warp(logits)[i, t]) for i, t in enumerate(drawn.tolist()))
