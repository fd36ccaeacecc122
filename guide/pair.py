"""Guide pairs: a tuned small model and its untuned twin, scoring text by their log-likelihood ratio.

The score of a response y to a prompt x is ``log pi_tuned(y|x) - log pi_untuned(y|x)`` with log pi as
guide/scoring.py defines it (the tokens of render(x) + y after their common prefix with render(x); EOS
once the response is finished). Each pair sees the prompt in its own prompt format and scores the
strong model's response *text*, re-tokenised with its own tokenizer, so it may have another vocabulary
than the strong model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError
from w2s.guide.models import load_model, load_tokenizer, render_prompts, resolve_model_path
from w2s.guide.scoring import IncrementalScores, response_logprobs
from w2s.guide.state import LMState, context_length


@dataclass
class GuidePair:
    """Two small models, tuned and untuned, sharing one tokenizer; or one PEFT model, adapter on and off."""

    tuned: PreTrainedModel
    untuned: PreTrainedModel  # the same object as `tuned` for an adapter pair
    tokenizer: PreTrainedTokenizerBase
    weight: float = 1.0
    is_adapter: bool = False

    @classmethod
    def from_folders(
        cls, tuned: str, untuned: str, weight: float = 1.0, prompt_format: str = "chat", **load_kwargs
    ) -> GuidePair:
        """A pair from two model folders (or hub ids / `tiny:` names); they must share a tokenizer."""
        fmt = {"prompt_format": prompt_format, "format_key": "guide_prompt_format"}
        trust = load_kwargs.get("trust_remote_code", False)
        tok_t, tok_u = (load_tokenizer(m, trust_remote_code=trust, **fmt) for m in (tuned, untuned))
        if tok_t.get_vocab() != tok_u.get_vocab():
            raise GuideError(f"guide pair {tuned!r} / {untuned!r}: the two models must share one tokenizer")
        return cls(load_model(tuned, **load_kwargs), load_model(untuned, **load_kwargs), tok_t, weight)

    @classmethod
    def from_adapter(
        cls, adapter: str, base: str | None = None, weight: float = 1.0, prompt_format: str = "chat", **load_kwargs
    ) -> GuidePair:
        """A pair from one PEFT adapter: tuned = adapter on, untuned = adapter off (one copy of the weights)."""
        from peft import PeftModel

        adapter = resolve_model_path(adapter)
        config_file = Path(adapter) / "adapter_config.json"
        if not config_file.is_file():
            raise GuideError(f"adapter {adapter!r}: no adapter_config.json (is it a PEFT adapter folder?)")
        base = base or json.loads(config_file.read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_model(base, **load_kwargs), adapter).eval()
        tokenizer = load_tokenizer(
            adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base,
            trust_remote_code=load_kwargs.get("trust_remote_code", False),
            prompt_format=prompt_format,
            format_key="guide_prompt_format",
        )
        return cls(model, model, tokenizer, weight, is_adapter=True)

    def _states(self, rows: int) -> tuple[LMState, LMState]:
        # guides take a chunk's tokens in one block: there SDPA's fused kernel beats shared prefixes, whose
        # attention materialises the scores (measured: CBS 10% slower with the guides' prefixes shared)
        pad = self.tokenizer.pad_token_id or 0
        adapter = (True, False) if self.is_adapter else (None, None)  # an adapter pair: one model, adapter on/off
        tuned, untuned = (
            LMState(model, rows, pad_id=pad, adapter=on, shared=False)
            for model, on in zip((self.tuned, self.untuned), adapter, strict=True)
        )
        return tuned, untuned

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], finished: list[bool]) -> list[float]:
        """Log-likelihood ratios recomputed from scratch (guide/scoring.py), a batched forward per model."""
        kw = dict(batch_size=8, adapter=True if self.is_adapter else None)
        tuned = response_logprobs(self.tuned, self.tokenizer, prompts, responses, finished, **kw)
        kw["adapter"] = False if self.is_adapter else None
        untuned = response_logprobs(self.untuned, self.tokenizer, prompts, responses, finished, **kw)
        return [self.weight * (t - u) for t, u in zip(tuned, untuned, strict=True)]


class PairScorer:
    """Scores growing responses incrementally: only tokens after the longest unchanged prefix are run."""

    def __init__(self, pair: GuidePair, prompts: list[str], row_prompts: list[int]):
        self.pair = pair
        texts, context_ids = render_prompts(pair.tokenizer, prompts)
        limit = context_length(pair.tuned)
        for i, ids in enumerate(context_ids):
            if limit is not None and len(ids) >= limit:
                raise GuideError(
                    f"guide {pair.tokenizer.name_or_path!r}: prompt {i} is {len(ids)} tokens, its context is {limit}"
                )
        self.tuned, self.untuned = pair._states(len(prompts))
        self.sides = []
        for state in (self.tuned, self.untuned):
            state.append(context_ids)  # prefill each prompt once, then copy it to its rows
            state.select(row_prompts)
            self.sides.append(IncrementalScores(state, pair.tokenizer, texts, context_ids, row_prompts, "guide"))
        self.values = [0.0] * len(row_prompts)

    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        """New scores for every row; rows whose text is None are left as they are."""
        rows = self.sides[0].tokens(texts, finished)  # one tokenizer: the same tokens for both models
        tuned, untuned = (side.update(rows) for side in self.sides)
        w = self.pair.weight
        for row, target in enumerate(rows):
            if target is not None:
                self.values[row] = w * (sum(tuned[row]) - sum(untuned[row]))
        return list(self.values)

    def select(self, index: list[int]) -> None:
        for state, side in zip((self.tuned, self.untuned), self.sides, strict=True):
            state.select(index)
            side.select(index)
        self.values = [self.values[i] for i in index]

    @property
    def tokens_run(self) -> dict[str, int]:
        return {"tuned": self.tuned.tokens_run, "untuned": self.untuned.tokens_run}

    @property
    def item_tokens(self) -> dict[str, list[int]]:
        """Per model, the tokens run for each prompt's rows (guide/engine.py says how they are charged)."""
        return {"tuned": list(self.tuned.item_tokens), "untuned": list(self.untuned.item_tokens)}
