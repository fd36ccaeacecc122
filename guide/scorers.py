"""What ranks candidate responses: guide pairs (incremental log-likelihood ratios) or a reward model."""

from __future__ import annotations

from w2s.guide.commands import GuideError
from w2s.guide.pair import GuidePair, PairScorer
from w2s.guide.reward import RewardModel


class GuideScorer:
    """The weighted sum of several guide pairs' log-likelihood ratios, kept row by row."""

    def __init__(self, pairs: list[GuidePair], prompts: list[str], row_prompts: list[int]):
        if not pairs:
            raise GuideError("a guided decoder needs at least one guide pair (set tuned/untuned or adapter)")
        self.scorers = [PairScorer(p, prompts, row_prompts) for p in pairs]

    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        per_pair = [s.update(texts, finished) for s in self.scorers]
        return [sum(values) for values in zip(*per_pair, strict=True)]

    def select(self, index: list[int]) -> None:
        for s in self.scorers:
            s.select(index)

    def item_tokens(self) -> dict[str, list[int]]:
        """Per model (`tuned`, `untuned`; `tuned_0`, ... with several pairs), the tokens run for each prompt."""
        out: dict[str, list[int]] = {}
        for i, s in enumerate(self.scorers):
            for role, counts in s.item_tokens.items():
                out[role if len(self.scorers) == 1 else f"{role}_{i}"] = counts
        return out

    def tokens_run(self) -> dict[str, int]:
        """Per model, the tokens it ran (what `item_tokens` sums to)."""
        out: dict[str, int] = {}
        for i, s in enumerate(self.scorers):
            for role, total in s.tokens_run.items():
                out[role if len(self.scorers) == 1 else f"{role}_{i}"] = total
        return out


class RewardModelScorer:
    """A sequence-classification reward model (guide/reward.py) scoring whole responses, a batch at a time
    (for best-of-N). A conversation past the reward model's context is an error naming the row.

    Each conversation's real tokens are charged to its row's prompt (padding never counts)."""

    def __init__(self, reward_model: RewardModel, prompts: list[str], row_prompts):
        self.reward_model, self.prompts = reward_model, prompts
        self.row_prompts = list(row_prompts)
        self.values = [0.0] * len(self.row_prompts)
        self.counts = [0] * len(prompts)  # per prompt: the tokens its rows' conversations ran

    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        rows = [row for row, text in enumerate(texts) if text is not None]
        messages = [[{"role": "user", "content": self.prompts[self.row_prompts[row]]}] for row in rows]
        ids, _ = self.reward_model.encode(messages, [texts[row] for row in rows])
        for row, value, seq in zip(rows, self.reward_model.score(ids), ids, strict=True):
            self.values[row] = value
            self.counts[self.row_prompts[row]] += len(seq)
        return list(self.values)

    def select(self, index: list[int]) -> None:
        self.row_prompts = [self.row_prompts[i] for i in index]
        self.values = [self.values[i] for i in index]

    def item_tokens(self) -> dict[str, list[int]]:
        return {"reward_model": list(self.counts)}

    def tokens_run(self) -> dict[str, int]:
        return {"reward_model": sum(self.counts)}
