"""Guide pairs: incremental scores equal full recomputation; adapter and folder pairs agree."""

import pytest

from w2s.data.world import world_corpus
from w2s.guide.pair import GuidePair, PairScorer

REVIEWS = world_corpus("test", 5)
PROMPTS = [r.prompt for r in REVIEWS]


def grow_and_check(pair: GuidePair):
    rows = [0, 0, 1, 2, 3, 4]
    scorer = PairScorer(pair, PROMPTS, rows)
    # cuts fall mid-word, so re-tokenising changes the last tokens between updates
    for cut in (3, 8, 13, 21, 34, 1000):
        texts = [REVIEWS[p].response[: cut + 3 * i] for i, p in enumerate(rows)]
        finished = [cut == 1000] * len(rows)
        incremental = scorer.update(texts, finished)
        full = pair.score([PROMPTS[p] for p in rows], texts, finished)
        assert incremental == pytest.approx(full, abs=1e-4)
    # beams copied and dropped, then grown again
    index = [1, 1, 0, 4]
    scorer.select(index)
    rows = [rows[i] for i in index]
    texts = [REVIEWS[p].response[: 17 + 5 * i] + " the" for i, p in enumerate(rows)]
    incremental = scorer.update(texts, [False] * 4)
    assert incremental == pytest.approx(pair.score([PROMPTS[p] for p in rows], texts, [False] * 4), abs=1e-4)
    return incremental


def test_incremental_scores_equal_full_recomputation_family_a(pair_a):
    scores = grow_and_check(pair_a)
    # a real ratio, not a trivially zero one: two bases of different sizes disagree by nats over a sentence
    # (measured largest |ratio| 4.2, 5.8, 8.9 in worlds 0, 1, 2)
    assert max(abs(s) for s in scores) > 0.5


def test_incremental_scores_equal_full_recomputation_family_b(lora_guide_b):
    scores = grow_and_check(GuidePair.from_folders(str(lora_guide_b["merged"]), "tiny:weak_b"))
    assert max(abs(s) for s in scores) > 0.1


def test_rows_left_unchanged_cost_nothing(pair_a):
    scorer = PairScorer(pair_a, PROMPTS[:2], [0, 1])
    scorer.update(["it was good .", "they were"], [False, False])
    before = scorer.tokens_run["tuned"]
    scorer.update([None, "they were"], [False, False])
    assert scorer.tokens_run["tuned"] == before


def test_rows_extended_at_a_token_boundary_run_only_the_new_tokens(pair_a):
    tok = pair_a.tokenizer
    first, second = "it was good .", " they were bad ."
    assert tok(first + second).input_ids[: len(tok(first).input_ids)] == tok(first).input_ids
    scorer = PairScorer(pair_a, PROMPTS[:1], [0])
    scorer.update([first], [False])
    before = scorer.tokens_run["tuned"]
    scores = scorer.update([first + second], [False])
    assert scorer.tokens_run["tuned"] - before == len(tok(first + second).input_ids) - len(tok(first).input_ids)
    assert scores == pytest.approx(pair_a.score(PROMPTS[:1], [first + second], [False]), abs=1e-4)


def test_adapter_pair_and_folder_pair_agree(lora_guide):
    adapter = GuidePair.from_adapter(str(lora_guide["adapter"]))
    folders = GuidePair.from_folders(str(lora_guide["merged"]), "tiny:weak")
    texts = [r.response for r in REVIEWS]
    for finished in (False, True):
        a = adapter.score(PROMPTS, texts, [finished] * 5)
        f = folders.score(PROMPTS, texts, [finished] * 5)
        assert a == pytest.approx(f, abs=1e-3)
        assert max(abs(x) for x in a) > 0.1  # the adapter really changes the model
    # and incrementally, with the adapter switched on and off over one copy of the weights
    grow_and_check(adapter)
