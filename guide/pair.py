"""Guide pairs: a tuned small model and its untuned twin, scoring text by their log-likelihood ratio.

The score of a response y to a prompt x is ``log pi_tuned(y|x) - log pi_untuned(y|x)`` summed over
all response tokens so far (plus the end-of-turn token once the response is finished). Each pair
sees the prompt in its own chat template and scores the strong model's response *text*, re-tokenised
with its own tokenizer, so it may have another vocabulary than the strong model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.engine import LMState, sync_tokens
from w2s.guide.models import chat_prompt, load_model, load_tokenizer, resolve_model_path


@dataclass
class GuidePair:
    """Two small models, tuned and untuned, sharing one tokenizer; or one PEFT model, adapter on and off."""

    tuned: PreTrainedModel
    untuned: PreTrainedModel  # the same object as `tuned` for an adapter pair
    tokenizer: PreTrainedTokenizerBase
    weight: float = 1.0
    is_adapter: bool = False

    @classmethod
    def from_folders(cls, tuned: str, untuned: str, weight: float = 1.0, **load_kwargs) -> GuidePair:
        """A pair from two model folders (or hub ids / `tiny:` names); they must share a tokenizer."""
        tok_t, tok_u = load_tokenizer(tuned), load_tokenizer(untuned)
        if tok_t.get_vocab() != tok_u.get_vocab():
            raise ValueError(f"guide pair {tuned!r} / {untuned!r}: the two models must share one tokenizer")
        return cls(load_model(tuned, **load_kwargs), load_model(untuned, **load_kwargs), tok_t, weight)

    @classmethod
    def from_adapter(cls, adapter: str, base: str | None = None, weight: float = 1.0, **load_kwargs) -> GuidePair:
        """A pair from one PEFT adapter: tuned = adapter on, untuned = adapter off (one copy of the weights)."""
        from peft import PeftModel

        adapter = resolve_model_path(adapter)
        config_file = Path(adapter) / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"adapter {adapter!r}: no adapter_config.json (is it a PEFT adapter folder?)")
        base = base or json.loads(config_file.read_text())["base_model_name_or_path"]
        model = PeftModel.from_pretrained(load_model(base, **load_kwargs), adapter).eval()
        tokenizer = load_tokenizer(adapter if (Path(adapter) / "tokenizer_config.json").is_file() else base)
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

    def response_ids(self, text: str, finished: bool) -> list[int]:
        ids = self.tokenizer(text, add_special_tokens=False).input_ids
        return [*ids, self.tokenizer.eos_token_id] if finished else ids

    @torch.no_grad()
    def score(self, prompts: list[str], responses: list[str], finished: list[bool]) -> list[float]:
        """Log-likelihood ratios recomputed from scratch, one full forward per model and response."""
        out = []
        for prompt, response, done in zip(prompts, responses, finished, strict=True):
            prompt_ids = self.tokenizer(chat_prompt(self.tokenizer, prompt), add_special_tokens=False).input_ids
            ids = torch.tensor([prompt_ids + self.response_ids(response, done)], device=self.tuned.device)
            total = 0.0
            for state_model, sign, adapter in ((self.tuned, 1, True), (self.untuned, -1, False)):
                if self.is_adapter and not adapter:
                    with state_model.disable_adapter():
                        logits = state_model(ids).logits
                else:
                    logits = state_model(ids).logits
                lp = torch.log_softmax(logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
                total += sign * lp[len(prompt_ids) - 1 :].sum().item()
            out.append(total)
        return out


class PairScorer:
    """Scores growing responses incrementally: only tokens after the longest unchanged prefix are run."""

    def __init__(self, pair: GuidePair, prompts: list[str], row_prompts: list[int]):
        self.pair = pair
        tok = pair.tokenizer
        self.prompt_ids = [tok(chat_prompt(tok, p), add_special_tokens=False).input_ids for p in prompts]
        self.tuned, self.untuned = pair._states(len(prompts))
        for state in (self.tuned, self.untuned):
            state.append(self.prompt_ids)  # prefill each prompt once, then copy it to its rows
            state.select(row_prompts)
        self.row_prompts = list(row_prompts)
        self.lp_tuned: list[list[float]] = [[] for _ in row_prompts]  # per response token
        self.lp_untuned: list[list[float]] = [[] for _ in row_prompts]

    def update(self, texts: list[str | None], finished: list[bool]) -> list[float]:
        """New scores for every row; rows whose text is None are left as they are."""
        blocks, skips = [], []
        for row, (text, done) in enumerate(zip(texts, finished, strict=True)):
            if text is None:
                blocks.append([])
                skips.append(0)
                continue
            prompt_len = len(self.prompt_ids[self.row_prompts[row]])
            target = self.prompt_ids[self.row_prompts[row]] + self.pair.response_ids(text, done)
            block, refed = sync_tokens(self.tuned, row, target)
            sync_tokens(self.untuned, row, target)
            keep = len(target) - len(block) + refed  # tokens of target whose log-probs still hold
            del self.lp_tuned[row][max(keep - prompt_len, 0) :]
            del self.lp_untuned[row][max(keep - prompt_len, 0) :]
            blocks.append(block)
            skips.append(refed + max(prompt_len - keep, 0))  # re-fed token and any prompt tokens
        new_t = self.tuned.append(blocks, logprobs=True)
        new_u = self.untuned.append(blocks, logprobs=True)
        for row, skip in enumerate(skips):
            self.lp_tuned[row].extend(new_t[row][skip:])
            self.lp_untuned[row].extend(new_u[row][skip:])
        return self.scores()

    def scores(self) -> list[float]:
        w = self.pair.weight
        return [w * (sum(t) - sum(u)) for t, u in zip(self.lp_tuned, self.lp_untuned, strict=True)]

    def select(self, index: list[int]) -> None:
        for state in (self.tuned, self.untuned):
            state.select(index)
        self.row_prompts = [self.row_prompts[i] for i in index]
        self.lp_tuned = [list(self.lp_tuned[i]) for i in index]
        self.lp_untuned = [list(self.lp_untuned[i]) for i in index]

    @property
    def tokens_run(self) -> dict[str, int]:
        return {"tuned": self.tuned.tokens_run, "untuned": self.untuned.tokens_run}
