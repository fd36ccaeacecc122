"""Sequence-classification reward models: one class for best-of-N's ranking and the data/eval judges.

One logit: the reward. Two logits: `logit[1] - logit[0]`, the log-odds of the second ("good") label, a
binary classifier's reward. Other heads are refused when the model loads. The conversation (prompt, then
the response as the assistant's turn) is rendered in the model's prompt format (guide/formats.py).

Past the context: a conversation longer than `max_length` (default: the model's context) is either an
error naming the row and both lengths (`overflow="error"`, best-of-N) or keeps its last `max_length`
tokens, where the response ends (`overflow="truncate"`, the data judge), and is counted.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError
from w2s.guide.models import DTYPES, input_device, load_tokenizer, resolve_model_path
from w2s.guide.state import context_length


class RewardModel:
    """A loaded reward model with its tokenizer; `rewards` scores (prompt, response) pairs in batches."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        batch_size: int = 8,
        max_length: int | None = None,
        overflow: str = "error",
    ):
        if overflow not in ("error", "truncate"):
            raise GuideError(f"overflow {overflow!r}: choose error or truncate")
        labels = model.config.num_labels
        if labels not in (1, 2):
            raise GuideError(
                f"reward model {tokenizer.name_or_path!r} has {labels} labels: use a head with one (the reward) "
                "or two (bad, good: scored logit[1] - logit[0])"
            )
        self.model, self.tokenizer, self.batch_size, self.overflow = model.eval(), tokenizer, batch_size, overflow
        limit = context_length(model)
        self.max_length = min(x for x in (max_length, limit) if x) if (max_length or limit) else None
        self.model.config.pad_token_id = tokenizer.pad_token_id  # the model finds each row's last token by it
        self.tokens_run = 0

    @classmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | dict | None = None,
        trust_remote_code: bool = False,
        prompt_format: str = "chat",
        format_key: str = "prompt_format",
        **kwargs,
    ) -> RewardModel:
        path = resolve_model_path(name_or_path)
        tokenizer = load_tokenizer(
            path, trust_remote_code=trust_remote_code, prompt_format=prompt_format, format_key=format_key
        )
        model = AutoModelForSequenceClassification.from_pretrained(
            path, dtype=DTYPES[dtype], trust_remote_code=trust_remote_code, use_safetensors=True, device_map=device_map
        )
        if device is not None and device_map is None:
            model.to(device)
        return cls(model, tokenizer, **kwargs)

    def text(self, messages: list[dict], response: str) -> str:
        """The conversation the reward model scores, in its prompt format."""
        if self.tokenizer.chat_template is None:
            key = getattr(self.tokenizer, "w2s_format_key", "prompt_format")
            raise GuideError(
                f"reward model {self.tokenizer.name_or_path!r} has no chat template: set `{key}: raw` or a "
                "template string holding {prompt}"
            )
        return self.tokenizer.apply_chat_template(
            [*messages, {"role": "assistant", "content": response}], tokenize=False
        )

    def rewards(self, messages: list[list[dict]], responses: list[str]) -> tuple[list[float], list[bool]]:
        """The reward of each (conversation so far, response), and whether its text was truncated."""
        ids, truncated = self.encode(messages, responses)
        return self.score(ids), truncated

    def encode(self, messages: list[list[dict]], responses: list[str]) -> tuple[list[list[int]], list[bool]]:
        """The tokens the model reads of each (conversation so far, response), and whether they were cut to
        `max_length` (or the error naming the row, with `overflow="error"`)."""
        ids = [
            self.tokenizer(self.text(m, r), add_special_tokens=False).input_ids
            for m, r in zip(messages, responses, strict=True)
        ]
        truncated = [self.max_length is not None and len(row) > self.max_length for row in ids]
        if self.overflow == "error" and any(truncated):
            i = truncated.index(True)
            raise GuideError(
                f"reward model {self.tokenizer.name_or_path!r}: row {i} (prompt + response) is {len(ids[i])} tokens, "
                f"past its context of {self.max_length}: lower max_new_tokens or use a model with a longer context"
            )
        return [row[-self.max_length :] if cut else row for row, cut in zip(ids, truncated, strict=True)], truncated

    @torch.no_grad()
    def score(self, ids: list[list[int]]) -> list[float]:
        """The reward of each token sequence (`encode`), `batch_size` at a time; their tokens count to `tokens_run`."""
        pad = self.tokenizer.pad_token_id or 0
        out: list[float] = []
        for start in range(0, len(ids), self.batch_size):
            batch = ids[start : start + self.batch_size]
            width = max(map(len, batch))
            input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros_like(input_ids)
            for i, row in enumerate(batch):  # right padding: the model reads each row's last real token
                input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
                mask[i, : len(row)] = 1
            positions = (mask.cumsum(1) - 1).clamp(min=0)
            device = input_device(self.model)
            logits = self.model(
                input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device)
            ).logits.float()
            out += (logits[:, 0] if logits.shape[1] == 1 else logits[:, 1] - logits[:, 0]).tolist()
            self.tokens_run += int(mask.sum())
        return out
