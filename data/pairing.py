"""Pairing: from each prompt's judged responses to (chosen, rejected) pairs; ties are never paired."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    """One judged response."""

    response: str
    generator: str
    score: float  # the (ensemble) score pairs are made on
    scores: dict[str, float]  # each judge's raw score


def make_pairs(candidates: list[Candidate], strategy: str, rng: random.Random) -> list[tuple[Candidate, Candidate]]:
    """(chosen, rejected) pairs of one prompt by `strategy` (best_worst, best_random or all_pairs)."""
    if len(candidates) < 2:
        return []
    if strategy == "all_pairs":
        return [(a, b) for a in candidates for b in candidates if a.score > b.score]
    best = max(candidates, key=lambda c: c.score)  # the first of equal bests: deterministic
    lower = [c for c in candidates if c.score < best.score]
    if not lower:
        return []  # every response tied
    if strategy == "best_worst":
        return [(best, min(lower, key=lambda c: c.score))]
    if strategy == "best_random":
        return [(best, rng.choice(lower))]
    raise ValueError(f"unknown pairing {strategy!r}: choose best_worst, best_random or all_pairs")
