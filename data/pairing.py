"""Pairing: from each prompt's judged responses to (chosen, rejected) pairs; ties are never paired.

Matched pairing (a recipe's `match`) pairs only responses that every control judge scores alike, so a pair
differs in what is judged and not in a confound (length, format, malformed sentences); without controls
every two responses may pair.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from w2s.data.recipe import MatchConfig


@dataclass(frozen=True)
class Candidate:
    """One judged response."""

    response: str
    generator: str
    score: float  # the (ensemble) score pairs are made on
    scores: dict[str, float]  # each judge's raw score


Matched = Callable[[Candidate, Candidate], bool]


def matcher(controls: Sequence[MatchConfig]) -> Matched | None:
    """Whether two candidates score alike on every control judge (None: no controls, any two may pair)."""
    if not controls:
        return None

    def alike(a: Candidate, b: Candidate) -> bool:
        for m in controls:
            x, y = a.scores[m.judge], b.scores[m.judge]
            bound = m.tolerance * max(abs(x), abs(y)) if m.relative else m.tolerance
            if abs(x - y) > bound:
                return False
        return True

    return alike


def make_pairs(
    candidates: list[Candidate], strategy: str, rng: random.Random, matched: Matched | None = None
) -> list[tuple[Candidate, Candidate]]:
    """(chosen, rejected) pairs of one prompt by `strategy`, among the pairs `matched` admits (all without it):

    * all_pairs: every admitted pair with a higher and a lower score;
    * best_worst: the admitted pair of the widest score gap (the first such in the candidates' order; without
      controls, the first best against the first worst);
    * best_random: the best candidate with an admitted lower partner, against one of those partners at random.
    """
    if len(candidates) < 2:
        return []

    def lower(a: Candidate) -> list[Candidate]:
        return [b for b in candidates if b.score < a.score and (matched is None or matched(a, b))]

    if strategy == "all_pairs":
        return [(a, b) for a in candidates for b in lower(a)]
    if strategy not in ("best_worst", "best_random"):
        raise ValueError(f"unknown pairing {strategy!r}: choose best_worst, best_random or all_pairs")
    ranked = sorted(candidates, key=lambda c: -c.score)  # stable: equal scores keep the candidates' order
    if strategy == "best_random":
        for best in ranked:
            partners = lower(best)
            if partners:
                return [(best, rng.choice(partners))]
        return []  # every response tied, or no two alike on the controls
    pair, gap = None, 0.0
    for a in ranked:
        partners = lower(a)
        if partners:
            b = min(partners, key=lambda c: c.score)  # the first of equal worsts
            if a.score - b.score > gap:
                pair, gap = (a, b), a.score - b.score
    return [pair] if pair else []
