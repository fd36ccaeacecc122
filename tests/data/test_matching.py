"""Matched pairing (a data recipe's `match`): which pairs form among responses the control judges score alike,
by hand, and a real build whose pairs and card a brute-force recomputation from its responses agrees with."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from datasets import load_from_disk

from w2s.data.build import build, read_jsonl
from w2s.data.pairing import Candidate, make_pairs, matcher
from w2s.data.recipe import MatchConfig, RecipeError, load_recipe
from w2s.data.world.reward import malformed_count, sentiment_reward

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny" / "data.yaml"

# five responses of one prompt: sentiment s (what pairs are made on) and malformed sentences m (the control)
HAND = {"A": (3, 1), "B": (2, 0), "C": (0, 1), "D": (-1, 0), "E": (1, 2)}
CANDIDATES = [Candidate(k, "g", s, {"sentiment": s, "malformed": m}) for k, (s, m) in HAND.items()]


def pairs(strategy: str, *controls: MatchConfig) -> list[str]:
    made = make_pairs(CANDIDATES, strategy, random.Random(0), matcher(controls))
    return [a.response + b.response for a, b in made]


def test_pairs_form_only_among_responses_alike_on_the_controls():
    exact = MatchConfig("malformed")
    # without controls: best against worst; every ordered pair
    assert pairs("best_worst") == ["AD"]
    assert pairs("all_pairs") == ["AB", "AC", "AD", "AE", "BC", "BD", "BE", "CD", "EC", "ED"]
    # exactly alike: m=1 {A, C} (gap 3), m=0 {B, D} (gap 3), m=2 {E} alone; the widest gap, the first best on a tie
    assert pairs("best_worst", exact) == ["AC"]
    assert pairs("all_pairs", exact) == ["AC", "BD"]
    assert pairs("best_random", exact) == ["AC"]  # A's only partner
    # within 1 malformed sentence: A (m=1) may pair with all; its worst is D
    assert pairs("best_worst", MatchConfig("malformed", tolerance=1)) == ["AD"]
    # relative: |x - y| <= 0.5 * max(|x|, |y|): A (1) with E (2) and C (1), not with B or D (0)
    assert pairs("all_pairs", MatchConfig("malformed", 0.5, relative=True)) == ["AC", "AE", "BD", "EC"]
    # nothing alike: no pair
    alone = [CANDIDATES[0], CANDIDATES[1]]
    assert make_pairs(alone, "best_worst", random.Random(0), matcher([exact])) == []


def test_controls_are_checked_against_the_judges(tmp_path):
    judges = [{"name": "sentiment", "kind": "rule", "rule": "tiny_sentiment"}]
    with pytest.raises(RecipeError, match=r"match\[0\].judge 'malformd' is not a judge of the recipe"):
        load_recipe(TINY, {"judges": judges, "match": [{"judge": "malformd"}]})
    with pytest.raises(RecipeError, match="every judge is a control"):
        load_recipe(TINY, {"judges": judges, "match": [{"judge": "sentiment"}]})
    both = [*judges, {"name": "malformed", "kind": "rule", "rule": "tiny_malformed"}]
    with pytest.raises(RecipeError, match=r"match\[0\].tolerance must be"):
        load_recipe(TINY, {"judges": both, "match": [{"judge": "malformed", "tolerance": -1}]})


@pytest.mark.slow
def test_a_matched_build_pairs_and_counts_as_a_recomputation_from_its_responses(tmp_path):
    judges = [
        {"name": "sentiment", "kind": "rule", "rule": "tiny_sentiment"},
        {"name": "malformed", "kind": "rule", "rule": "tiny_malformed"},
    ]
    common = {"num_prompts": 120, "shard_size": 64, "judges": judges, "work_dir": str(tmp_path / "work")}
    out = build(load_recipe(TINY, common | {"output_dir": str(tmp_path / "out"), "match": [{"judge": "malformed"}]}))
    free = build(load_recipe(TINY, common | {"output_dir": str(tmp_path / "free")}))  # the same samples, unmatched
    card = json.loads((out / "card.json").read_text())
    data = load_from_disk(str(out / "pairs"))
    made = {row["prompt_id"]: row for split in data for row in data[split]}

    # brute force over the generated responses: per prompt, the widest sentiment gap between two responses with
    # as many malformed sentences (the first best, then the first worst, on ties)
    prompts = {
        p["id"]: p
        for p in read_jsonl(next(p for p in (tmp_path / "work").glob("prompts-*") if p.is_dir()) / "prompts.jsonl")
    }
    expected, lost, removed, unmatched_gaps = {}, 0, 0, []
    for shard in sorted((tmp_path / "work").glob("gen-*/*.jsonl")):
        for row in read_jsonl(shard):
            text = prompts[row["prompt_id"]]["messages"][-1]["content"]  # what the rule judges read
            responses = [r for r in row["responses"] if r.split()]
            s = sentiment_reward([text] * len(responses), responses)
            m = malformed_count([text] * len(responses), responses)
            alike = [
                (i, j) for i, j in itertools.permutations(range(len(responses)), 2) if s[i] > s[j] and m[i] == m[j]
            ]
            widest = max((s[i] - s[j] for i, j in alike), default=None)
            if alike:
                i, j = next((i, j) for i, j in sorted(alike, key=lambda p: (-s[p[0]], p[0], s[p[1]], p[1]))
                            if s[i] - s[j] == widest)  # fmt: skip
                expected[row["prompt_id"]] = (responses[i], responses[j])
            any_pair = len(set(s)) > 1
            lost += any_pair and not alike
            removed += any_pair - bool(alike)
            if any_pair:  # best against worst, unmatched
                best = max(range(len(s)), key=s.__getitem__)
                worst = min(range(len(s)), key=s.__getitem__)
                unmatched_gaps.append(m[best] - m[worst])
    assert {k: (v["chosen"][0]["content"], v["rejected"][0]["content"]) for k, v in made.items()} == expected
    counts = card["counts"]["pairs"]
    assert counts["prompts without a pair alike on the controls"] == lost > 0
    assert counts["pairs the controls removed"] == removed
    assert counts["kept"] == len(expected)
    controls = card["controls"]["malformed"]
    assert controls["mean_chosen_minus_rejected"] == 0.0  # exact matching: zero by construction
    assert controls["unmatched_mean_chosen_minus_rejected"] == pytest.approx(sum(unmatched_gaps) / len(unmatched_gaps))
    # unmatched, the same samples pair by sentiment alone: more pairs, and the controls' gap is not zero
    free_card = json.loads((free / "card.json").read_text())
    assert free_card["counts"]["pairs"]["kept"] == len(expected) + removed and "controls" not in free_card
    assert "## Matched pairing" in (out / "README.md").read_text()
