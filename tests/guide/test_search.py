"""Chunk-level beam search, best-of-N and sampling through the shared engine."""

import pytest

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.pair import GuidePair
from w2s.guide.search import BestOfN, ChunkBeamSearch

PROMPTS = world_prompts("test", 6)
COMMON = dict(temperature=1.0, top_k=0, max_new_tokens=40, seed=3, batch_size=6)


def record_finished(guide: Guide, monkeypatch) -> dict[str, bool]:
    """{text: whether its row ended by the end-of-turn token}, filled as the engine turns rows into text.

    Whether a row ends within the token limit depends on the build, and the text alone cannot say: sampled
    special tokens vanish from it and stray bytes re-encode longer (1 to 4 of 300 sampled rows in worlds 0-2), so
    counting its tokens misjudges a row near the limit. The row's own flag, read as its text is made, does not.
    """
    finished: dict[str, bool] = {}
    text = guide.engine.text

    def recording(row):
        out = text(row)
        finished[out] = row.finished  # the last call for a text is the returned row's
        return out

    monkeypatch.setattr(guide.engine, "text", recording)
    return finished


@pytest.fixture(scope="module")
def guided():
    return Guide(GuideConfig.from_dict(dict(decoder="cbs", tuned="tiny:strong", untuned="tiny:weak", **COMMON)))


def test_cbs_with_one_beam_and_one_successor_is_sampling(guided):
    sampled = Guide(GuideConfig.from_dict(dict(decoder="sample", **COMMON))).generate(PROMPTS, progress=False)
    searched = guided.generate(PROMPTS, progress=False, decoder=ChunkBeamSearch(width=1, successors=1))
    assert [g.text for g in searched] == [g.text for g in sampled]


def test_shared_prefixes_change_no_output():
    """The strong model's beams reading their common prefix once give the same search as rows apart."""
    config = dict(decoder="cbs", tuned="tiny:strong", untuned="tiny:weak", width=2, successors=3, chunk_len=4)
    outputs = []
    for share in (True, False):
        guide = Guide(GuideConfig.from_dict(dict(**config, share_prefixes=share, **COMMON)))
        outputs.append([(g.text, round(g.score, 3)) for g in guide.generate(PROMPTS, progress=False)])
    assert outputs[0] == outputs[1]
    assert len({text for text, _ in outputs[0]}) > 1


def test_best_of_n_equals_scoring_every_sample(guided):
    n = 5
    engine = guided.engine
    engine.sampler = type(engine.sampler)(engine.sampling)  # fresh seeded stream
    samples = engine.start(PROMPTS, copies=n)
    samples.sample(engine.stop.max_new_tokens)
    rows = samples.rows
    texts = [engine.text(r) for r in rows]
    pair: GuidePair = guided.pairs[0]
    scores = pair.score([PROMPTS[r.prompt] for r in rows], texts, [r.finished for r in rows])
    expected = []
    for p in range(len(PROMPTS)):
        candidates = [(scores[i], texts[i]) for i, r in enumerate(rows) if r.prompt == p]
        expected.append(max(candidates, key=lambda c: c[0]))

    engine.sampler = type(engine.sampler)(engine.sampling)
    bon = guided.generate(PROMPTS, progress=False, decoder=BestOfN(n))
    assert [g.text for g in bon] == [t for _, t in expected]
    assert [g.score for g in bon] == pytest.approx([s for s, _ in expected], abs=1e-4)

    # ... and best-of-N is CBS(1, N, ∞)
    engine.sampler = type(engine.sampler)(engine.sampling)
    cbs = guided.generate(PROMPTS, progress=False, decoder=ChunkBeamSearch(1, n, 10_000))
    assert [g.text for g in cbs] == [g.text for g in bon]


def test_cbs_reports_the_true_score_of_its_choice(guided, monkeypatch):
    ended = record_finished(guided, monkeypatch)
    out = guided.generate(PROMPTS, progress=False, decoder=ChunkBeamSearch(2, 3, 4))
    finished = [ended[g.text] for g in out]  # the score counts the end-of-turn token of a finished row
    assert [g.score for g in out] == pytest.approx(
        guided.pairs[0].score(PROMPTS, [g.text for g in out], finished), abs=1e-3
    )
    assert all(g.tokens["strong"] > 0 and g.tokens["tuned"] > 0 for g in out)


def test_cbs_with_family_b_guides_steers_a_family_a_model(lora_guide_b, monkeypatch):
    config = GuideConfig.from_dict(
        dict(decoder="cbs", tuned="tiny:weak_b", untuned="tiny:weak", width=2, successors=2, chunk_len=5)
    )
    with pytest.raises(ValueError, match="share one tokenizer"):
        Guide(config)
    config = GuideConfig.from_dict(
        dict(decoder="cbs", adapter=str(lora_guide_b["adapter"]), width=2, successors=2, chunk_len=5, **COMMON)
    )
    guide = Guide(config)
    assert guide.pairs[0].tokenizer.get_vocab() != guide.engine.tokenizer.get_vocab()
    ended = record_finished(guide, monkeypatch)
    out = guide.generate(PROMPTS, progress=False)
    assert all(g.text for g in out)
    full = guide.pairs[0].score(PROMPTS, [g.text for g in out], [ended[g.text] for g in out])
    assert [g.score for g in out] == pytest.approx(full, abs=1e-3)
    assert max(abs(s) for s in full) > 0.1


def test_best_of_n_by_a_reward_model_equals_scoring_every_sample(tmp_path):
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from w2s.guide.models import load_tokenizer, resolve_model_path

    strong = resolve_model_path("tiny:strong")
    config = AutoConfig.from_pretrained(strong, num_labels=1)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_config(config).eval()  # a real, untrained reward model
    rm.save_pretrained(tmp_path / "rm")
    tokenizer = load_tokenizer(strong)
    tokenizer.save_pretrained(tmp_path / "rm")

    n = 4
    guide = Guide(
        GuideConfig.from_dict(dict(decoder="bon", num_samples=n, reward_model=str(tmp_path / "rm"), **COMMON))
    )
    engine = guide.engine
    samples = engine.start(PROMPTS, copies=n)
    samples.sample(engine.stop.max_new_tokens)
    rows = samples.rows
    texts = [engine.text(r) for r in rows]

    def reward(prompt, text):  # the reward model over the conversation in its chat template
        messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
        ids = tokenizer(tokenizer.apply_chat_template(messages, tokenize=False), return_tensors="pt",
                        add_special_tokens=False)  # fmt: skip
        with torch.no_grad():
            return rm(**ids).logits[0, 0].item()

    expected = []
    for p in range(len(PROMPTS)):
        candidates = [(reward(PROMPTS[p], texts[i]), texts[i]) for i, r in enumerate(rows) if r.prompt == p]
        expected.append(max(candidates, key=lambda c: c[0]))
    engine.sampler = type(engine.sampler)(engine.sampling)  # the same seeded stream again
    out = guide.generate(PROMPTS, progress=False)
    assert [g.text for g in out] == [t for _, t in expected]
    assert [g.score for g in out] == pytest.approx([s for s, _ in expected], abs=1e-4)
    assert len({round(s, 6) for s, _ in expected}) > 1  # the reward model really discriminates
