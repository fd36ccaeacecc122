"""The tiny world's language: a seeded generator of short reviews.

A review is 3 to 6 sentences of the form ``SUBJECT BE PREDICATE .``::

    the songs of the film were not very good . they were fun but silly .

* SUBJECT is ``the NOUN``, ``the NOUN of|in the NOUN`` (the verb agrees with the
  first noun, the second is an *attractor*) or a pronoun, ``it`` / ``they``,
  which must agree in number with the head noun of the latest noun subject.
* BE is ``is/are`` (present) or ``was/were`` (past): it agrees with the subject
  in number, and every sentence of a review keeps the tense of the first one.
* PREDICATE is ``[not] [INTENSIFIER] ADJECTIVE``, ``[DOWNTONER] ADJECTIVE`` or ``ADJ and ADJ`` (the corpus uses
  equal polarities) or ``ADJ but ADJ`` (opposite ones).

The first sentence is the prompt (the review's opening); the rest is the
continuation a model writes. Sentiment is drawn per review (a mood) so that the
opening predicts the continuation, as in movie reviews. The gold reward that
values these texts lives in :mod:`data.world.reward`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SINGULAR_NOUNS = (
    "film", "plot", "story", "script", "ending", "hero",
    "villain", "soundtrack", "director", "camera",
)  # fmt: skip
PLURAL_NOUNS = (
    "actors", "songs", "scenes", "jokes", "effects", "characters",
    "costumes", "fights", "twists", "sets",
)  # fmt: skip
# adjective -> signed strength
ADJECTIVES = {
    "good": 1.0, "fun": 1.0, "clever": 1.0, "lovely": 1.0, "great": 2.0, "brilliant": 2.0,
    "bad": -1.0, "dull": -1.0, "silly": -1.0, "boring": -1.0, "awful": -2.0, "terrible": -2.0,
}  # fmt: skip
INTENSIFIERS = {"very": 2.0, "really": 2.0, "so": 2.0}
DOWNTONERS = {"fairly": 0.5, "somewhat": 0.5}
MODIFIERS = {**INTENSIFIERS, **DOWNTONERS}
PREPOSITIONS = ("of", "in")
PRONOUNS = {"it": "sg", "they": "pl"}
BE = {("present", "sg"): "is", ("present", "pl"): "are", ("past", "sg"): "was", ("past", "pl"): "were"}
BE_FORMS = {form: key for key, form in BE.items()}  # "was" -> ("past", "sg")
CONJUNCTIONS = ("and", "but")
MIN_SENTENCES, MAX_SENTENCES = 3, 6

POSITIVE = tuple(a for a, v in ADJECTIVES.items() if v > 0)
NEGATIVE = tuple(a for a, v in ADJECTIVES.items() if v < 0)
VOCABULARY = sorted(
    {*SINGULAR_NOUNS, *PLURAL_NOUNS, *ADJECTIVES, *MODIFIERS, *PREPOSITIONS, *PRONOUNS, *BE_FORMS}
    | {"the", "not", ".", *CONJUNCTIONS}
)


def number_of(noun: str) -> str:
    return "sg" if noun in SINGULAR_NOUNS else "pl"


@dataclass(frozen=True)
class Review:
    """One generated review: its opening (the prompt) and the continuation."""

    prompt: str
    response: str

    @property
    def text(self) -> str:
        return f"{self.prompt} {self.response}"


class ReviewGenerator:
    """Draws reviews from the tiny world's grammar; the same seed gives the same reviews."""

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)

    def sample(self, n: int) -> list[Review]:
        return [self.review() for _ in range(n)]

    def review(self) -> Review:
        rng = self.rng
        tense = rng.choice(("present", "past"))
        p_positive = rng.uniform(0.05, 0.95)  # the review's mood
        referent = None  # head noun the pronouns point to
        sentences = []
        for i in range(rng.randint(MIN_SENTENCES, MAX_SENTENCES)):
            if i > 0 and rng.random() < 0.35:
                pronoun = "it" if number_of(referent) == "sg" else "they"
                subject, number = [pronoun], PRONOUNS[pronoun]
            else:
                referent = rng.choice(SINGULAR_NOUNS + PLURAL_NOUNS)
                number = number_of(referent)
                subject = ["the", referent]
                if rng.random() < 0.35:  # an attractor, mostly of the other number
                    other = PLURAL_NOUNS if number == "sg" else SINGULAR_NOUNS
                    pool = other if rng.random() < 0.7 else SINGULAR_NOUNS + PLURAL_NOUNS
                    subject += [rng.choice(PREPOSITIONS), "the", rng.choice(pool)]
            sign = 1 if rng.random() < p_positive else -1
            words = [*subject, BE[tense, number], *self._predicate(sign), "."]
            sentences.append(" ".join(words))
        return Review(prompt=sentences[0], response=" ".join(sentences[1:]))

    def _predicate(self, sign: int) -> list[str]:
        rng = self.rng

        def adjective(s: int) -> str:
            return rng.choice(POSITIVE if s > 0 else NEGATIVE)

        if rng.random() < 0.2:
            if rng.random() < 0.5:
                return [adjective(sign), "and", adjective(sign)]
            return [adjective(-sign), "but", adjective(sign)]
        words = []
        negated = rng.random() < 0.25
        if negated:
            words.append("not")
        u = rng.random()
        if u < 0.25:
            words.append(rng.choice(tuple(INTENSIFIERS)))
        elif u < 0.35 and not negated:  # "not fairly good" is not English
            words.append(rng.choice(tuple(DOWNTONERS)))
        words.append(adjective(-sign if negated else sign))
        return words


# Disjoint streams of the world: the base models' pretraining corpus, the prompts that
# data sets are built from, and held-out prompts and reviews for evaluation.
SPLIT_SEEDS = {"pretrain": 0, "train": 1, "test": 2}


def world_corpus(split: str, n: int) -> list[Review]:
    """The first `n` reviews of one of the world's splits (same split and n, same reviews)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown tiny-world split {split!r}: choose one of {sorted(SPLIT_SEEDS)}")
    return ReviewGenerator(seed=SPLIT_SEEDS[split]).sample(n)


def world_prompts(split: str, n: int) -> list[str]:
    """Review openings of a split, used as prompts."""
    return [r.prompt for r in world_corpus(split, n)]
