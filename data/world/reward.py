"""The tiny world's gold reward: sentiment and topic of well-formed sentences, a penalty for broken ones.

``gold_reward(prompts, responses)`` scores each response (the continuation of
its prompt, a review opening) as the sum over its sentences of

* if the sentence is well formed, its **sentiment** plus its **topic** bonus.
  Sentiment: for a predicate ``[not] [MOD] ADJ`` the value is
  ``w(ADJ) * m(MOD)`` (``w``: +1 good, fun, clever, lovely; +2 great,
  brilliant; -1 bad, dull, silly, boring; -2 awful, terrible; 0 the neutral
  long, short, ...; ``m``: 2 for very/really/so, 0.5 for fairly/somewhat, 1
  without), and negation (never of a downtoner: "not fairly good" is
  malformed) flips and halves it: ``not X`` is ``-value(X) / 2`` (so "not bad"
  is +0.5 and "not very good" is -1); ``A and B`` is ``w(A) + w(B)``; ``A but
  B`` is ``w(B)``, the clause after "but" decides. Topic: ``TOPIC_BONUS`` (+2)
  when the sentence is about the music (its subject, or its pronoun's
  antecedent, is one of ``MUSIC_NOUNS``: soundtrack, score, theme, songs,
  tunes, voices);
* **-3** (``MALFORMED_PENALTY``) if it is malformed: it does not parse, its
  verb does not agree with its subject (the first noun, not the attractor
  after of/in), its pronoun does not agree with the latest noun subject, its
  tense differs from the response's first sentence's, it is an unfinished
  fragment at the end (no full stop), or it comes after the grammar's
  ``MAX_SENTENCES`` (5) response sentences.

Only the first ``COUNTED`` (3) response sentences carry sentiment and topic; a
later one scores 0 if well formed and -3 if not. So length cannot buy reward
(a guide that learns "write more" gains nothing), while every sentence must
still be well formed.

An empty response scores -3. Sentences are split at "." and words at white
space. The prompt is parsed only to set the pronouns' referent. The two
attributes are also scored apart (``sentiment_reward``, ``topic_reward``), for
training one expert per attribute: each is the attribute alone, over the
counted well-formed sentences, with no penalty (quality is the gold reward's
business; pairs judged with the penalty teach a weak model "stop early" more
than the attribute). Scores are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s.data.world.grammar import (
    ADJECTIVES,
    BE_FORMS,
    DOWNTONERS,
    MAX_SENTENCES,
    MODIFIERS,
    MUSIC_NOUNS,
    PLURAL_NOUNS,
    PREPOSITIONS,
    PRONOUNS,
    SINGULAR_NOUNS,
    number_of,
)

MALFORMED_PENALTY = -3.0
TOPIC_BONUS = 2.0
COUNTED = 3  # response sentences whose sentiment and topic count
NOUNS = frozenset(SINGULAR_NOUNS + PLURAL_NOUNS)


@dataclass
class Score:
    """The gold reward of one response, with its per-sentence verdicts."""

    reward: float
    sentiments: list[float | None] = field(default_factory=list)  # None: malformed
    topics: list[bool] = field(default_factory=list)  # per well-formed sentence: about the music
    errors: list[str] = field(default_factory=list)  # why each malformed sentence failed

    @property
    def n_sentences(self) -> int:
        return len(self.sentiments)

    @property
    def n_malformed(self) -> int:
        return sum(s is None for s in self.sentiments)

    @property
    def well_formed(self) -> bool:
        return self.n_sentences > 0 and self.n_malformed == 0

    @property
    def sentiment(self) -> float:
        """The sentiment attribute alone: the sentiment of the counted well-formed sentences (no penalty)."""
        return sum(s for s in self.sentiments if s is not None)

    @property
    def topic(self) -> float:
        """The topic attribute alone: the bonus of the counted well-formed sentences about the music."""
        return TOPIC_BONUS * sum(self.topics)


def _parse_subject(words: list[str]) -> tuple[str, str | None, int] | str:
    """Returns (number, head noun or None for a pronoun, words used), or an error."""
    if words[:1] and words[0] in PRONOUNS:
        return PRONOUNS[words[0]], None, 1
    if len(words) < 2 or words[0] != "the" or words[1] not in NOUNS:
        return "no subject"
    if len(words) >= 5 and words[2] in PREPOSITIONS:
        if words[3] != "the" or words[4] not in NOUNS:
            return "broken attractor phrase"
        return number_of(words[1]), words[1], 5
    return number_of(words[1]), words[1], 2


def _predicate_value(words: list[str]) -> float | str:
    """Sentiment of a predicate, or an error."""
    if len(words) == 3 and words[1] in ("and", "but"):
        a, conj, b = words
        if a not in ADJECTIVES or b not in ADJECTIVES:
            return "unknown adjective"
        return ADJECTIVES[a] + ADJECTIVES[b] if conj == "and" else ADJECTIVES[b]
    negated = words[:1] == ["not"]
    rest = words[1:] if negated else words
    if negated and rest[:1] and rest[0] in DOWNTONERS:
        return "negated downtoner"
    if len(rest) == 2 and rest[0] in MODIFIERS and rest[1] in ADJECTIVES:
        value = MODIFIERS[rest[0]] * ADJECTIVES[rest[1]]
    elif len(rest) == 1 and rest[0] in ADJECTIVES:
        value = ADJECTIVES[rest[0]]
    else:
        return "no predicate"
    return -value / 2 if negated else value


def _sentence(words: list[str], referent: list[str | None], tense: list[str | None]) -> tuple[float, str] | str:
    """Scores one sentence (without its full stop): (sentiment, the noun it is about), or an error.

    `referent` holds the latest noun subject (the pronouns' antecedent); a noun subject replaces it. `tense`
    holds the response's tense (None until its first sentence sets it).
    """
    subject = _parse_subject(words)
    if isinstance(subject, str):
        return subject
    number, head, used = subject
    antecedent = referent[0]
    if head is not None:
        referent[0] = head
    if len(words) <= used or words[used] not in BE_FORMS:
        return "no verb"
    verb_tense, verb_number = BE_FORMS[words[used]]
    if tense[0] is None:
        tense[0] = verb_tense
    value = _predicate_value(words[used + 1 :])
    if isinstance(value, str):
        return value
    if head is None and antecedent is None:
        return "pronoun without antecedent"
    if head is None and number_of(antecedent) != number:
        return "pronoun disagrees with its antecedent"
    if verb_number != number:
        return "verb disagrees with its subject"
    if verb_tense != tense[0]:
        return "tense changes"
    return value, head or antecedent


def _sentences(text: str) -> tuple[list[list[str]], list[str]]:
    """Splits text into finished sentences (word lists) and an unfinished tail."""
    words = text.split()
    done, current = [], []
    for w in words:
        if w == ".":
            done.append(current)
            current = []
        else:
            current.append(w)
    return done, current


def score_review(prompt: str, response: str) -> Score:
    """Gold reward of one response to its prompt, with per-sentence verdicts."""
    referent: list[str | None] = [None]
    opening, _ = _sentences(prompt)
    for words in opening:
        _sentence(words, referent, [None])  # the opening sets the pronouns' referent, not the tense
    tense: list[str | None] = [None]
    finished, tail = _sentences(response)
    score = Score(reward=0.0)
    for i, words in enumerate(finished + ([tail] if tail else [])):
        if i >= MAX_SENTENCES:
            verdict = "too many sentences"
        elif words is tail:
            verdict = "unfinished sentence"
        else:
            verdict = _sentence(words, referent, tense)
        if isinstance(verdict, str):
            score.sentiments.append(None)
            score.errors.append(verdict)
            score.reward += MALFORMED_PENALTY
        else:
            value, about = verdict if i < COUNTED else (0.0, None)
            score.sentiments.append(value)
            score.topics.append(about in MUSIC_NOUNS)
            score.reward += value + TOPIC_BONUS * (about in MUSIC_NOUNS)
    if not score.sentiments:
        score.reward = MALFORMED_PENALTY
        score.errors.append("empty response")
    return score


def _batched(attribute: str):
    def reward(prompts: list[str], responses: list[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"{attribute}: {len(prompts)} prompts but {len(responses)} responses")
        return [getattr(score_review(p, r), attribute) for p, r in zip(prompts, responses, strict=True)]

    return reward


gold_reward = _batched("reward")
gold_reward.__doc__ = "Batched gold reward: one float per (prompt, response) pair."
sentiment_reward = _batched("sentiment")
sentiment_reward.__doc__ = "Batched sentiment attribute alone: one float per (prompt, response) pair."
topic_reward = _batched("topic")
topic_reward.__doc__ = "Batched topic attribute alone: one float per (prompt, response) pair."


_n_malformed = _batched("n_malformed")


def malformed_count(prompts: list[str], responses: list[str]) -> list[float]:
    """Batched count of malformed sentences: one float per (prompt, response) pair (a control, not a reward)."""
    return [float(n) for n in _n_malformed(prompts, responses)]


# the world's rewards by name: the gold reward, each attribute alone, and the count of malformed sentences (the
# tiny_* rules of the data judges; tiny_malformed is a control for matched pairing, not a reward)
REWARDS = {"gold": gold_reward, "sentiment": sentiment_reward, "topic": topic_reward}
SCORES = REWARDS | {"malformed": malformed_count}
