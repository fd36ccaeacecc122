"""log pi(y | x): the one definition of a response's log-probability under a model, exact and incremental.

Every score in w2s is built from this: the decoders' guide scores (a pair's log-likelihood ratio), WSD's
check of the draft, the `implicit` judge, training's reward accuracy and the benchmark's baseline.

**Which tokens.** A response y is scored in the context the model reads it in: the tokens of
render(x) + y, where render is the model's prompt format (`guide/models.py`), after their longest common
prefix with the tokens of render(x). Where the prompt's last characters and the response's first ones
merge into other tokens (a SentencePiece/Metaspace tokenizer after a template's assistant header, a
response that starts without a space), the merged tokens are the response's. This is the convention of
the weak-to-strong search paper's reference scorer. Tokenising y on its own instead would give a
Metaspace tokenizer a leading `▁` the model never saw after its template: its first token's log-prob is
then noise (−10.7 against −0.4 nats in the tiny world's family B).

**The end token.** A finished response (it ended with the model's end token or a stop string) is scored
with the tokenizer's EOS appended: its probability includes the choice to stop there. A response cut off
at the token limit is scored without it, as the prefix it is: the model did not choose to stop, and
charging it log p(EOS) would rank a cut-off response by how likely the model was to stop at an
arbitrary point.

**Context.** A sequence longer than the model's context is an error naming the model, the row and both
lengths (`check_context`), found before any forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError
from w2s.guide.models import input_device, render_prompts
from w2s.guide.state import LMState, common_prefix, context_length, sync_tokens


@dataclass(frozen=True)
class Scored:
    """A response in its model's tokens: `ids` is render(x) + y (+ EOS), the scored tokens are `ids[start:]`."""

    ids: list[int]
    start: int


def response_ids(
    tokenizer: PreTrainedTokenizerBase, context: str, context_ids: list[int], response: str, finished: bool
) -> Scored:
    """The tokens of `context` + `response` (EOS appended if `finished`), and where the response's begin:
    their longest common prefix with `context_ids`, the tokens of `context`."""
    ids = tokenizer(context + response, add_special_tokens=False).input_ids
    start = common_prefix(ids, context_ids)
    if start == 0 and (ids or finished):
        raise GuideError(
            f"{tokenizer.name_or_path!r}: the rendered prompt is empty, so nothing predicts the response's first "
            "token: give a non-empty prompt (or a prompt format with text before the prompt)"
        )
    if finished:
        if tokenizer.eos_token_id is None:
            raise GuideError(f"{tokenizer.name_or_path!r} has no EOS token to end a finished response with")
        ids = [*ids, tokenizer.eos_token_id]
    return Scored(ids, start)


def check_context(model: PreTrainedModel, rows: list[Scored | None], what: str = "model") -> None:
    """A clear error if a row is longer than the model's context."""
    limit = context_length(model)
    if limit is None:
        return
    for i, row in enumerate(rows):
        if row is not None and len(row.ids) > limit:
            raise GuideError(
                f"{what} {getattr(model.config, '_name_or_path', '')!r}: row {i} (prompt + response) is "
                f"{len(row.ids)} tokens, past its context of {limit}: shorten the prompt or max_new_tokens, or use "
                "a model with a longer context"
            )


def pad_rows(rows: list[Scored], device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input ids, attention mask, position ids) of rows padded on the right: with the positions given,
    a model with absolute positions (GPT-2) sees each row exactly as it would alone."""
    width = max(len(r.ids) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r.ids)] = torch.tensor(r.ids, dtype=torch.long)
        mask[i, : len(r.ids)] = 1
    return ids.to(device), mask.to(device), (mask.cumsum(1) - 1).clamp(min=0).to(device)


@torch.no_grad()
def token_logprobs(
    model: PreTrainedModel, rows: list[Scored], *, batch_size: int = 16, adapter: bool | None = None
) -> list[list[float]]:
    """log p of every scored token of every row, recomputed from scratch: one forward per batch of rows.

    Rows are right-padded with explicit position ids, so a model with absolute positions (GPT-2) sees each
    row exactly as it would alone. `adapter=False` runs a PEFT model with its adapter off.
    """
    check_context(model, rows)
    out: list[list[float]] = []
    for first in range(0, len(rows), batch_size):
        batch = rows[first : first + batch_size]
        ids, mask, positions = pad_rows(batch, input_device(model))
        if adapter is False:
            with model.disable_adapter():
                logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        else:
            logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        lp = torch.log_softmax(logits[:, :-1].float(), -1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
        out += [lp[i, r.start - 1 : len(r.ids) - 1].tolist() for i, r in enumerate(batch)]
    return out


def response_logprobs(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list,
    responses: list[str],
    finished: bool | list[bool] = True,
    *,
    batch_size: int = 16,
    adapter: bool | None = None,
) -> list[float]:
    """log pi(response | prompt) of each pair under `model` (see the module docstring for the convention)."""
    if isinstance(finished, bool):
        finished = [finished] * len(responses)
    texts, context_ids = render_prompts(tokenizer, prompts)
    rows = [
        response_ids(tokenizer, t, c, r, f) for t, c, r, f in zip(texts, context_ids, responses, finished, strict=True)
    ]
    return [sum(lp) for lp in token_logprobs(model, rows, batch_size=batch_size, adapter=adapter)]


class IncrementalScores:
    """The scored tokens' log-probs of a growing response per row of an `LMState`, kept exact as each
    response is re-tokenised: only tokens after the longest unchanged prefix go through the model again.

    The state's rows must hold their prompt's rendered tokens (`contexts[row_contexts[row]]`) when this
    is made. For each row it keeps the log-probs of its tokens from position `first[row]` on.
    """

    def __init__(
        self,
        state: LMState,
        tokenizer: PreTrainedTokenizerBase,
        contexts: list[str],
        context_ids: list[list[int]],
        row_contexts: list[int],
        what: str = "model",
    ):
        self.state, self.tokenizer, self.what = state, tokenizer, what
        self.contexts, self.context_ids = contexts, context_ids
        self.row_contexts = list(row_contexts)
        self.first = [len(context_ids[c]) for c in self.row_contexts]  # position of lp[row][0]
        self.lp: list[list[float]] = [[] for _ in self.row_contexts]
        self.rows: list[Scored | None] = [None] * len(self.row_contexts)

    def tokens(self, texts: list[str | None], finished: list[bool]) -> list[Scored | None]:
        """Each row's response in this model's tokens (None where the text is None)."""
        out = []
        for row, (text, done) in enumerate(zip(texts, finished, strict=True)):
            c = self.row_contexts[row]
            out.append(
                None
                if text is None
                else response_ids(self.tokenizer, self.contexts[c], self.context_ids[c], text, done)
            )
        return out

    def update(self, rows: list[Scored | None]) -> list[list[float]]:
        """Brings every row to its new tokens (None: leave it) and returns each row's scored log-probs."""
        check_context(self.state.model, rows, self.what)
        blocks, skips = [], []
        for row, target in enumerate(rows):
            if target is None:
                blocks.append([])
                skips.append(0)
                continue
            block, refed = sync_tokens(self.state, row, target.ids)
            valid = len(target.ids) - len(block) + refed  # positions of target whose log-probs still hold
            del self.lp[row][max(valid - self.first[row], 0) :]
            self.first[row] = min(self.first[row], valid)
            blocks.append(block)
            skips.append(refed)  # a re-fed token's log-prob came from stale logits
            self.rows[row] = target
        new = self.state.append(blocks, logprobs=True)
        for row, skip in enumerate(skips):
            self.lp[row].extend(new[row][skip:])
        return [self.scored(row) for row in range(len(rows))]

    def scored(self, row: int) -> list[float]:
        target = self.rows[row]
        if target is None:
            return []
        assert target.start >= self.first[row], (target.start, self.first[row])
        return self.lp[row][target.start - self.first[row] :]

    def select(self, index: list[int]) -> None:
        """Keeps rows `index` (the state's own `select` is the caller's)."""
        self.row_contexts = [self.row_contexts[i] for i in index]
        self.first = [self.first[i] for i in index]
        self.lp = [list(self.lp[i]) for i in index]
        self.rows = [self.rows[i] for i in index]
