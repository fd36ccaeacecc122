"""The tiny world's language (version 3): a seeded generator of short reviews.

A review is a neutral opening (the prompt) and 2 to 5 sentences of the form
``SUBJECT BE PREDICATE .`` (the continuation a model writes)::

    the songs of the film were long .  >>  they were not very good . the plot was dull but fun .

* SUBJECT is ``the NOUN``, ``the NOUN of|in the NOUN`` (the verb agrees with the
  first noun, the second is an *attractor*) or a pronoun, ``it`` / ``they``,
  which must agree in number with the head noun of the latest noun subject.
* BE is ``is/are`` (present) or ``was/were`` (past): it agrees with the subject
  in number, and every response sentence keeps the tense of the response's
  first sentence (the opening is a line of its own, in either tense). Keeping
  a tense and an agreement over several sentences is what the weak bases miss:
  their first sentence is as good as the strong base's, their later ones are not.
* PREDICATE is ``[not] [INTENSIFIER] ADJECTIVE``, ``[DOWNTONER] ADJECTIVE``,
  ``ADJ and ADJ`` (equal polarities in the corpus) or ``ADJ but ADJ`` (opposite
  ones). The opening's adjective is a neutral one (long, short, new, ...): the
  prompt sets the referent of the pronouns but not the mood.

Two attributes that the gold reward (:mod:`data.world.reward`) judges:

* **Mood.** Each review has one: every response sentence takes it with
  probability ``MOOD_KEPT`` (0.92). The first response sentence therefore sets
  the stance of everything after it, the way an aligned opening carries into
  a continuation in real text (the mechanism draft-switch decoding relies on).
* **Topic.** Nouns are about the music (``MUSIC_NOUNS``) or about something
  else; the subject of every sentence is drawn independently of the mood, so
  topic and sentiment are two independent attributes, each with its own expert.

Prompts of one split are distinct (a repeated opening is skipped), so an
instruction set built from them pairs by text in AlpacaEval's tools.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SINGULAR_NOUNS = (
    "film", "plot", "story", "script", "ending", "hero", "villain", "director", "camera",
    "soundtrack", "score", "theme",
)  # fmt: skip
PLURAL_NOUNS = (
    "actors", "scenes", "jokes", "effects", "characters", "costumes", "fights", "sets",
    "songs", "tunes", "voices",
)  # fmt: skip
MUSIC_NOUNS = frozenset({"soundtrack", "score", "theme", "songs", "tunes", "voices"})
# adjective -> signed strength; the neutral ones (0) open reviews
ADJECTIVES = {
    "good": 1.0, "fun": 1.0, "clever": 1.0, "lovely": 1.0, "great": 2.0, "brilliant": 2.0,
    "bad": -1.0, "dull": -1.0, "silly": -1.0, "boring": -1.0, "awful": -2.0, "terrible": -2.0,
    "long": 0.0, "short": 0.0, "new": 0.0, "old": 0.0, "slow": 0.0, "quiet": 0.0, "loud": 0.0, "dark": 0.0,
}  # fmt: skip
INTENSIFIERS = {"very": 2.0, "really": 2.0, "so": 2.0}
DOWNTONERS = {"fairly": 0.5, "somewhat": 0.5}
MODIFIERS = {**INTENSIFIERS, **DOWNTONERS}
PREPOSITIONS = ("of", "in")
PRONOUNS = {"it": "sg", "they": "pl"}
BE = {("present", "sg"): "is", ("present", "pl"): "are", ("past", "sg"): "was", ("past", "pl"): "were"}
BE_FORMS = {form: key for key, form in BE.items()}  # "was" -> ("past", "sg")
TENSES = ("present", "past")
CONJUNCTIONS = ("and", "but")
MIN_SENTENCES, MAX_SENTENCES = 2, 5  # response sentences
MOOD_KEPT = 0.92  # chance that a response sentence takes its review's mood
PAIRED = 0.1  # predicates "ADJ and ADJ" / "ADJ but ADJ"
NEGATED = 0.1  # predicates "not [INTENSIFIER] ADJ"
ECHO = 0.8  # chance that a sentence reuses the review's first adjective of that polarity

POSITIVE = tuple(a for a, v in ADJECTIVES.items() if v > 0)
NEGATIVE = tuple(a for a, v in ADJECTIVES.items() if v < 0)
NEUTRAL = tuple(a for a, v in ADJECTIVES.items() if v == 0)
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
        mood = 1 if rng.random() < 0.5 else -1
        subject, referent = self._subject(None, attractor=0.6)  # openings vary more than response subjects
        be = BE[rng.choice(TENSES), number_of_subject(subject, referent)]
        opening = " ".join([*subject, be, rng.choice(NEUTRAL), "."])
        tense = rng.choice(TENSES)  # the response's, independent of the opening's
        sentences, self.used = [], {}
        for _ in range(rng.randint(MIN_SENTENCES, MAX_SENTENCES)):
            subject, referent = self._subject(referent)
            sign = mood if rng.random() < MOOD_KEPT else -mood
            words = [*subject, BE[tense, number_of_subject(subject, referent)], *self._predicate(sign), "."]
            sentences.append(" ".join(words))
        return Review(prompt=opening, response=" ".join(sentences))

    def _subject(self, referent: str | None, attractor: float = 0.35) -> tuple[list[str], str]:
        """A subject and the referent after it: a pronoun for `referent` (35%) or a new noun phrase, with an
        attractor (`attractor` of the time)."""
        rng = self.rng
        if referent is not None and rng.random() < 0.35:
            return ["it" if number_of(referent) == "sg" else "they"], referent
        noun = rng.choice(SINGULAR_NOUNS + PLURAL_NOUNS)
        subject = ["the", noun]
        if rng.random() < attractor:  # an attractor, mostly of the other number
            other = PLURAL_NOUNS if number_of(noun) == "sg" else SINGULAR_NOUNS
            pool = other if rng.random() < 0.7 else SINGULAR_NOUNS + PLURAL_NOUNS
            subject += [rng.choice(PREPOSITIONS), "the", rng.choice(pool)]
        return subject, noun

    def _predicate(self, sign: int) -> list[str]:
        rng = self.rng

        def adjective(s: int) -> str:
            if ECHO and s in self.used and rng.random() < ECHO:
                return self.used[s]
            word = rng.choice(POSITIVE if s > 0 else NEGATIVE)
            self.used.setdefault(s, word)
            return word

        if rng.random() < PAIRED:
            if rng.random() < 0.5:
                return [adjective(sign), "and", adjective(sign)]
            return [adjective(-sign), "but", adjective(sign)]
        words = []
        negated = rng.random() < NEGATED
        if negated:
            words.append("not")
        u = rng.random()
        if u < 0.25:
            words.append(rng.choice(tuple(INTENSIFIERS)))
        elif u < 0.35 and not negated:  # "not fairly good" is not English
            words.append(rng.choice(tuple(DOWNTONERS)))
        words.append(adjective(-sign if negated else sign))
        return words


def number_of_subject(subject: list[str], referent: str) -> str:
    """The number a subject's verb agrees with: its pronoun's, or its first noun's (not the attractor's)."""
    return PRONOUNS[subject[0]] if subject[0] in PRONOUNS else number_of(referent)


# Disjoint streams of the world: the base models' pretraining corpus, the prompts that
# data sets are built from, and held-out prompts and reviews for evaluation.
SPLIT_SEEDS = {"pretrain": 0, "train": 1, "test": 2}


def world_corpus(split: str, n: int) -> list[Review]:
    """The first `n` reviews of one of the world's splits (same split and n, same reviews)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown tiny-world split {split!r}: choose one of {sorted(SPLIT_SEEDS)}")
    return ReviewGenerator(seed=SPLIT_SEEDS[split]).sample(n)


def world_prompts(split: str, n: int) -> list[str]:
    """The first `n` distinct review openings of a split, used as prompts (a repeated opening is skipped)."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown tiny-world split {split!r}: choose one of {sorted(SPLIT_SEEDS)}")
    generator, seen = ReviewGenerator(seed=SPLIT_SEEDS[split]), {}
    while len(seen) < n:
        seen.setdefault(generator.review().prompt, None)
    return list(seen)
