"""Filters: duplicate and contaminated prompts, empty or degenerate responses, margin and length-ratio bounds.

Each filter returns what it keeps; the build counts what each one removed for the card.
Near duplicates are found with MinHash locality-sensitive hashing over word 3-gram
sets, then confirmed by their exact Jaccard similarity.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict

_SPACE = re.compile(r"\s+")
NUM_PERM = 64
BANDS = 16  # 16 bands of 4 rows: pairs at Jaccard 0.9 collide with probability ~1 - (1 - 0.9**4)**16


def normalise(text: str) -> str:
    """Lower case, single spaces: the form duplicates are compared in."""
    return _SPACE.sub(" ", text.lower()).strip()


def words(text: str) -> list[str]:
    return normalise(text).split()


def ngrams(tokens: list[str], n: int) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n is one n-gram of itself."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


def exact_duplicates(texts: list[str]) -> list[bool]:
    """True for each text whose normalised form appeared earlier."""
    seen: set[str] = set()
    out = []
    for text in texts:
        key = normalise(text)
        out.append(key in seen)
        seen.add(key)
    return out


def _minhash(shingles: set[tuple[str, ...]]) -> list[int]:
    hashes = [int.from_bytes(hashlib.blake2b(" ".join(s).encode(), digest_size=8).digest(), "big") for s in shingles]
    mask = (1 << 64) - 1
    # NUM_PERM cheap universal hashes of the 64-bit shingle hashes
    return [min(((h * (2 * k + 1) + k * 0x9E3779B97F4A7C15) & mask) for h in hashes) for k in range(NUM_PERM)]


def near_duplicates(texts: list[str], threshold: float = 0.9, n: int = 3) -> list[bool]:
    """True for each text whose word n-gram set has Jaccard similarity >= threshold with an earlier kept text."""
    shingles = [ngrams(words(t), n) for t in texts]
    rows = NUM_PERM // BANDS
    buckets: dict[tuple[int, tuple[int, ...]], list[int]] = defaultdict(list)
    out = []
    for i, sh in enumerate(shingles):
        signature = _minhash(sh) if sh else [0] * NUM_PERM
        keys = [(b, tuple(signature[b * rows : (b + 1) * rows])) for b in range(BANDS)]
        candidates = {j for key in keys for j in buckets.get(key, ())}
        duplicate = any(jaccard(sh, shingles[j]) >= threshold for j in sorted(candidates))
        out.append(duplicate)
        if not duplicate:
            for key in keys:
                buckets[key].append(i)
    return out


def contaminated(texts: list[str], eval_texts: list[str], n: int = 8) -> list[bool]:
    """True for each text sharing a word n-gram with an evaluation text (whole text when shorter than n)."""
    eval_grams: set[tuple[str, ...]] = set()
    for t in eval_texts:
        eval_grams |= ngrams(words(t), n)
    return [bool(ngrams(words(t), n) & eval_grams) for t in texts]


def degenerate(response: str, max_repeat_fraction: float = 0.5) -> bool:
    """Empty, or mostly repeated: the share of repeated word 3-grams exceeds `max_repeat_fraction`."""
    tokens = words(response)
    if not tokens:
        return True
    grams = [tuple(tokens[i : i + 3]) for i in range(len(tokens) - 2)]
    return bool(grams) and 1 - len(set(grams)) / len(grams) > max_repeat_fraction


def length_ratio(chosen: str, rejected: str) -> float:
    """words(chosen) / words(rejected) (an empty rejected counts as one word)."""
    return len(words(chosen)) / max(len(words(rejected)), 1)
