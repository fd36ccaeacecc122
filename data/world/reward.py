"""The tiny world's gold reward: sentiment of well-formed sentences, a penalty for broken ones.

``gold_reward(prompts, responses)`` scores each response (the continuation of
its prompt, a review opening) as the sum over its sentences of

* the sentence's **sentiment** if it is well formed, where for a predicate
  ``[not] [MOD] ADJ`` the value is ``w(ADJ) * m(MOD)`` (``w``: +1 good, fun,
  clever, lovely; +2 great, brilliant; -1 bad, dull, silly, boring; -2 awful,
  terrible; ``m``: 2 for very/really/so, 0.5 for fairly/somewhat, 1 without),
  and negation (never of a downtoner: "not fairly good" is malformed) flips and halves it: ``not X`` is ``-value(X) / 2`` (so "not bad"
  is +0.5 and "not very good" is -1); ``A and B`` is ``w(A) + w(B)``; ``A but B``
  is ``w(B)``, the clause after "but" decides (the corpus pairs "and" with equal
  and "but" with opposite polarities, but the reward does not demand it);
* **-3** (``MALFORMED_PENALTY``) if it is malformed: it does not parse, its
  verb does not agree with its subject (the first noun, not the attractor
  after of/in), its pronoun does not agree with the latest noun subject (or
  has none), its tense differs from the review's (set by the first verb of
  the review), or it is an unfinished fragment at the end (no full stop).

An empty response scores -3. Sentences are split at "." and words at white
space. The prompt is parsed only to set the tense and the pronouns' referent.
Response length is bounded by the decoder's token limit, not by the reward. Scores are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s.data.world.grammar import (
    ADJECTIVES,
    BE_FORMS,
    DOWNTONERS,
    MODIFIERS,
    PLURAL_NOUNS,
    PREPOSITIONS,
    PRONOUNS,
    SINGULAR_NOUNS,
    number_of,
)

MALFORMED_PENALTY = -3.0
NOUNS = frozenset(SINGULAR_NOUNS + PLURAL_NOUNS)


@dataclass
class Score:
    """The gold reward of one response, with its per-sentence verdicts."""

    reward: float
    sentiments: list[float | None] = field(default_factory=list)  # None: malformed
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


class _Context:
    """What earlier sentences fix for later ones: the tense and the pronouns' referent."""

    def __init__(self):
        self.tense: str | None = None
        self.referent: str | None = None


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


def _sentence(words: list[str], ctx: _Context) -> float | str:
    """Scores one sentence (without its full stop) and updates the context."""
    subject = _parse_subject(words)
    if isinstance(subject, str):
        return subject
    number, head, used = subject
    antecedent = ctx.referent
    if head is not None:
        ctx.referent = head
    if len(words) <= used or words[used] not in BE_FORMS:
        return "no verb"
    tense, verb_number = BE_FORMS[words[used]]
    if ctx.tense is None:
        ctx.tense = tense
    value = _predicate_value(words[used + 1 :])
    if isinstance(value, str):
        return value
    if head is None and antecedent is None:
        return "pronoun without antecedent"
    if head is None and number_of(antecedent) != number:
        return "pronoun disagrees with its antecedent"
    if verb_number != number:
        return "verb disagrees with its subject"
    if tense != ctx.tense:
        return "tense changes"
    return value


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
    ctx = _Context()
    opening, _ = _sentences(prompt)
    for words in opening:
        _sentence(words, ctx)
    finished, tail = _sentences(response)
    score = Score(reward=0.0)
    for words in finished + ([tail] if tail else []):
        verdict = _sentence(words, ctx) if words is not tail else "unfinished sentence"
        if isinstance(verdict, str):
            score.sentiments.append(None)
            score.errors.append(verdict)
            score.reward += MALFORMED_PENALTY
        else:
            score.sentiments.append(verdict)
            score.reward += verdict
    if not score.sentiments:
        score.reward = MALFORMED_PENALTY
        score.errors.append("empty response")
    return score


def gold_reward(prompts: list[str], responses: list[str]) -> list[float]:
    """Batched gold reward: one float per (prompt, response) pair."""
    if len(prompts) != len(responses):
        raise ValueError(f"gold_reward: {len(prompts)} prompts but {len(responses)} responses")
    return [score_review(p, r).reward for p, r in zip(prompts, responses, strict=True)]
