"""What ranks candidate responses: guide pairs (incremental log-likelihood ratios) or a reward model."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.pair import GuidePair, PairScorer


class GuideScorer:
    """The weighted sum of several guide pairs' log-likelihood ratios, kept row by row."""

    def __init__(self, pairs: list[GuidePair], prompts: list[str], row_prompts: list[int]):
        if not pairs:
            raise ValueError("a guided decoder needs at least one guide pair (set tuned/untuned or adapter)")
        self.scorers = [PairScorer(p, prompts, row_prompts) for p in pairs]

    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        per_pair = [s.update(texts, finished) for s in self.scorers]
        return [sum(values) for values in zip(*per_pair, strict=True)]

    def select(self, index: list[int]) -> None:
        for s in self.scorers:
            s.select(index)

    def tokens_run(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for i, s in enumerate(self.scorers):
            for role, n in s.tokens_run.items():
                key = role if len(self.scorers) == 1 else f"{role}_{i}"
                out[key] = out.get(key, 0) + n
        return out


class RewardModelScorer:
    """A sequence-classification reward model scoring whole responses (for best-of-N)."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompts: list[str], row_prompts):
        self.model, self.tokenizer, self.prompts = model, tokenizer, prompts
        self.row_prompts = list(row_prompts)
        self.values = [0.0] * len(self.row_prompts)
        self.run = 0

    @torch.no_grad()
    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        for row, text in enumerate(texts):
            if text is None:
                continue
            messages = [
                {"role": "user", "content": self.prompts[self.row_prompts[row]]},
                {"role": "assistant", "content": text},
            ]
            if self.tokenizer.chat_template:
                rendered = self.tokenizer.apply_chat_template(messages, tokenize=False)
            else:
                rendered = f"{messages[0]['content']}\n{text}"
            ids = self.tokenizer(rendered, return_tensors="pt", add_special_tokens=False).to(self.model.device)
            self.values[row] = self.model(**ids).logits[0, 0].item()
            self.run += ids.input_ids.shape[1]
        return list(self.values)

    def select(self, index: list[int]) -> None:
        self.row_prompts = [self.row_prompts[i] for i in index]
        self.values = [self.values[i] for i in index]

    def tokens_run(self) -> dict[str, int]:
        return {"reward_model": self.run}
