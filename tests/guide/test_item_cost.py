"""Each item's cost is its own: an item's tokens per model sum, over a batch, to what each model ran; they
differ between items; they do not depend on the batch the item was decoded in; plain decoding's by hand."""

from __future__ import annotations

import pytest
import torch

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.models import chat_prompt
from w2s.guide.state import LMState, track_states

PROMPTS = world_prompts("test", 6)
COMMON = dict(
    strong_model="tiny:strong", tuned="tiny:guide", untuned="tiny:weak", pilot="tiny:guide", max_new_tokens=16,
    temperature=1.0, top_k=0, width=2, successors=2, chunk_len=4, num_samples=3, threshold=0.3, seed=3,
)  # fmt: skip
MODELS = {
    "sample": {"strong"},
    "cbs": {"strong", "tuned", "untuned"},
    "bon": {"strong", "tuned", "untuned"},
    "wsd": {"strong", "pilot"},
    "eft": {"strong", "tuned", "untuned"},
    "fusion": {"strong", "tuned", "untuned"},
}


def test_an_item_is_charged_the_tokens_fed_for_its_rows(strong):
    """Copies share their row's prefix for free, dropped rows keep their cost, re-fed tokens count again."""
    state = LMState(strong[0], 3)
    state.append([[5, 6, 7], [8], [9, 10]])  # three prompts, prefilled once each
    assert state.item_tokens == [3, 1, 2]
    state.select([0, 0, 2])  # item 0 copied, item 1 dropped
    assert state.row_item == [0, 0, 2] and state.item_tokens == [3, 1, 2]
    state.append([[11], [12, 13], []])
    assert state.item_tokens == [6, 1, 2]
    state.rollback(1, 2)  # forgotten tokens stay paid for; the one re-fed is paid again
    state.append([[], [12], [14]])
    assert state.item_tokens == [7, 1, 3]
    state.select([2, 1])
    state.append([[15, 16], []])
    assert state.row_item == [2, 0] and state.item_tokens == [7, 1, 5]
    assert sum(state.item_tokens) == state.tokens_run == 13


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory):
    """A real, untrained one-logit reward model on the strong base's architecture and tokenizer."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from w2s.guide.models import load_tokenizer, resolve_model_path

    strong = resolve_model_path("tiny:strong")
    folder = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(strong, num_labels=1)).save_pretrained(
        folder
    )
    load_tokenizer(strong).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("decoder", ["sample", "cbs", "bon", "bon-rm", "wsd", "eft", "fusion"])
def test_item_tokens_are_exact_and_do_not_depend_on_the_batch(world_paths, decoder, request):
    extra = {}
    if decoder == "bon-rm":
        decoder, extra = "bon", {"reward_model": request.getfixturevalue("reward_model")}
    guide = Guide(GuideConfig.from_dict(dict(decoder=decoder, batch_size=len(PROMPTS), **COMMON, **extra)))
    before = guide.reward_model.tokens_run if extra else 0
    with track_states() as states:
        batch = guide.decode(PROMPTS)
    models = {"strong": guide.engine.model}
    if guide.pairs:
        models |= {"tuned": guide.pairs[0].tuned, "untuned": guide.pairs[0].untuned}
    if guide.pilot:
        models["pilot"] = guide.pilot[0]
    expected = {"strong", "reward_model"} if extra else MODELS[decoder]
    assert all(set(g.tokens) == expected for g in batch)

    # (a) over the batch, the items' tokens are what each model ran, exactly
    for name in expected:
        if name == "reward_model":
            total = guide.reward_model.tokens_run - before
        else:
            total = sum(s.tokens_run for s in states if s.model is models[name])
        assert sum(g.tokens[name] for g in batch) == total > 0, name
    assert all(sum(s.item_tokens) == s.tokens_run for s in states)
    # (b) items of different prompts and responses cost differently
    for name in expected:
        assert len({g.tokens[name] for g in batch}) > 1, name
    # (c) each item alone costs what it cost in the batch (and the same batch in another order, the same)
    guide.config.batch_size = 1  # the batch size is read by each call
    alone = guide.generate(PROMPTS, progress=False)
    assert [g.text for g in alone] == [g.text for g in batch]
    assert [g.tokens for g in alone] == [g.tokens for g in batch]
    guide.config.batch_size = 3
    order = [5, 2, 0, 4, 1, 3]
    mixed = guide.generate([PROMPTS[i] for i in order], progress=False)
    assert [g.tokens for g in mixed] == [batch[i].tokens for i in order]
    # wall time: an item's share of its batch's
    assert all(g.batch_seconds > 0 and g.seconds == pytest.approx(g.batch_seconds / len(PROMPTS)) for g in batch)


def greedy_ids(model, tokenizer, prompt: str, steps: int, eos: set[int]) -> list[int]:
    """Argmax of a full forward over the whole text at every step (no cache), up to `steps` tokens; the end
    token that stops it is included."""
    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
    out: list[int] = []
    while len(out) < steps:
        with torch.no_grad():
            token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        out.append(token)
        if token in eos:
            break
    return out


def test_plain_decoding_costs_its_prompt_and_every_sampled_token_but_the_last(strong):
    """The engine feeds the prompt once, then each sampled token that does not end the response: not the end
    token, not the token that reaches the limit. So tokens = prompt + sampled - 1, by a brute-force greedy."""
    model, tokenizer = strong
    guide = Guide(
        GuideConfig.from_dict(dict(decoder="sample", strong_model="tiny:strong", temperature=0.0, max_new_tokens=40))
    )
    eos = guide.engine.stop.eos_ids
    stops = set()
    for limit in (40, 5):
        guide.config.max_new_tokens = guide.engine.stop.max_new_tokens = limit
        for prompt in PROMPTS:
            [g] = guide.decode([prompt])
            sampled = greedy_ids(model, tokenizer, prompt, limit, eos)
            assert g.text == tokenizer.decode([t for t in sampled if t not in eos], skip_special_tokens=True)
            prompt_len = len(tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids)
            assert g.tokens == {"strong": prompt_len + len(sampled) - 1}, (prompt, g.stop)
            stops.add(g.stop)
    assert stops == {"eos", "max_new_tokens"}  # both ends seen
