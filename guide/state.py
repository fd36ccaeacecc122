"""A model's decoding state: a batch of growing token sequences ("rows") with their KV cache.

An `LMState` holds the rows of one causal LM. Rows may grow by different numbers of tokens in one
forward (blocks are left-padded, holes masked) and may *roll back* their last tokens (masked out,
never recomputed), which is how the small models re-score re-tokenised text exactly: only the tokens
after the longest unchanged prefix go through the model again. It is the in-process engine's own
machinery (guide/engine.py): decoders never touch it.

**Cost per item.** Every row belongs to an item (the index of its prompt in the batch), and every real
token fed is charged to the item of the row it was fed for (`LMState.item_tokens`, summing exactly to
`tokens_run`). A prompt's prefill is charged once: rows copied from it (`select`) share that prefix and
cost nothing until they grow. Rows a search drops keep what they cost, re-fed tokens (after a rollback)
count again, padding never counts. An item's cost is then a function of the item alone, not of the batch
it was decoded in or its size.

**Measuring.** `track_states()` (benchmarks) collects the states made inside it and has them record their
KV cache's peak size; outside it no state measures anything.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from transformers import PreTrainedModel

from w2s.guide import kv
from w2s.guide.models import input_device

_trackers: list[list[LMState]] = []  # open `track_states` blocks


class LMState:
    """A batch of rows for one causal LM: KV cache, attention mask, positions, token ids, next-token logits."""

    def __init__(
        self, model: PreTrainedModel, rows: int, *, pad_id: int = 0, adapter: bool | None = None, shared: bool = True
    ):
        self.model = model
        self.pad_id = pad_id
        self.adapter = adapter  # PEFT model: True runs with the adapter, False without it
        # rows copied from one row keep their common prefix once (guide/kv.py); needs SDPA attention
        self.cache = kv.make_cache(model, shared=shared)
        self.shared = kv.shares_prefixes(self.cache)  # the cache may decline (e.g. sliding-window layers)
        device = input_device(model)
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=device)  # (rows, physical length)
        self.length = torch.zeros(rows, dtype=torch.long, device=device)  # valid tokens per row
        self.ids: list[list[int]] = [[] for _ in range(rows)]
        self.row_item: list[int] = list(range(rows))  # per row: its item (the index of its prompt in the batch)
        self.last_logits: torch.Tensor | None = None  # (rows, vocab): predicts each row's next token
        self.tokens_run = 0  # real (non-padding) tokens that went through the model
        self.item_tokens = [0] * rows  # per item: the real tokens fed for its rows (they sum to tokens_run)
        self.peak_cache_bytes = 0  # largest the KV cache has been, measured inside `track_states()` only
        self.measured = bool(_trackers)
        for states in _trackers:
            states.append(self)

    @property
    def rows(self) -> int:
        return len(self.ids)

    @torch.no_grad()
    def append(self, blocks: list[list[int]], *, logprobs: bool = False) -> list[list[float]] | None:
        """Feeds each row its block of new tokens (blocks may differ in length, or be empty).

        With `logprobs`, returns each new token's log-probability given everything before it
        (the first token's comes from the row's previous `last_logits`).
        """
        n = max(map(len, blocks), default=0)
        if n == 0:
            return [[] for _ in blocks] if logprobs else None
        device = self.mask.device
        sizes = torch.tensor([len(b) for b in blocks], device=device)
        input_ids = torch.full((self.rows, n), self.pad_id, dtype=torch.long, device=device)
        new_mask = torch.zeros(self.rows, n, dtype=torch.long, device=device)
        for i, block in enumerate(blocks):
            if block:
                input_ids[i, n - len(block) :] = torch.tensor(block, device=device)
                new_mask[i, n - len(block) :] = 1
        offsets = torch.arange(n, device=device) - (n - sizes)[:, None]  # 0.. for real tokens, <0 for padding
        positions = (self.length[:, None] + offsets).clamp(min=0)
        self.mask = torch.cat([self.mask, new_mask], dim=1)
        logits = self._forward(input_ids, positions).to(device)  # (rows, n, vocab); a device map's last layer

        out = None
        if logprobs:
            # logits predicting each new token: the row's previous ones for its first (blocks are left-padded),
            # this block's for the rest
            prev = torch.cat([torch.zeros_like(logits[:, :1]), logits[:, :-1]], dim=1)
            grown = (sizes > 0).nonzero()[:, 0]
            prev[grown, (n - sizes)[grown]] = self._last_or_zeros(logits)[grown]
            lp = torch.log_softmax(prev.float(), dim=-1).gather(-1, input_ids[..., None])[..., 0]
            out = [lp[i, n - len(b) :].tolist() if b else [] for i, b in enumerate(blocks)]
        grew = sizes > 0
        last = logits[:, -1]
        self.last_logits = last if self.last_logits is None else torch.where(grew[:, None], last, self.last_logits)
        self.length += sizes
        for i, block in enumerate(blocks):
            self.ids[i].extend(block)
            self.item_tokens[self.row_item[i]] += len(block)
        self.tokens_run += int(sizes.sum())
        if self.measured:
            self.peak_cache_bytes = max(self.peak_cache_bytes, self.cache_bytes())
        return out

    def cache_bytes(self) -> int:
        """Bytes the KV cache holds now, head-room included."""
        return kv.cache_nbytes(self.cache)

    def _last_or_zeros(self, logits: torch.Tensor) -> torch.Tensor:
        if self.last_logits is None:
            return torch.zeros_like(logits[:, 0])
        return self.last_logits.to(logits.dtype)

    def _forward(self, input_ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        inputs = dict(input_ids=input_ids, attention_mask=self.mask, position_ids=positions)
        if self.adapter is False:
            with self.model.disable_adapter():
                return kv.forward(self.model, self.cache, **inputs)
        return kv.forward(self.model, self.cache, **inputs)

    def rollback(self, row: int, k: int) -> None:
        """Forgets the last `k` tokens of `row` (masked out of the cache). Re-feed at least one token after."""
        if k <= 0:
            return
        if k > len(self.ids[row]):
            raise ValueError(f"cannot roll back {k} tokens of a row holding {len(self.ids[row])}")
        valid = self.mask[row].nonzero()[:, 0]
        self.mask[row, valid[-k:]] = 0
        self.length[row] -= k
        del self.ids[row][-k:]

    def select(self, index: list[int] | torch.Tensor) -> None:
        """Keeps rows `index` in that order; a row may be repeated (beam copies) or dropped (finished).

        Copies belong to their row's item and cost nothing here; dropped rows leave their item's count as it is.
        """
        index = torch.as_tensor(index, dtype=torch.long, device=self.mask.device)
        self.cache.reorder_cache(index)
        self.mask = self.mask[index]
        self.length = self.length[index]
        self.ids = [list(self.ids[i]) for i in index.tolist()]
        self.row_item = [self.row_item[i] for i in index.tolist()]
        if self.last_logits is not None:
            self.last_logits = self.last_logits[index]


@contextmanager
def track_states() -> Iterator[list[LMState]]:
    """Collects every `LMState` made inside the block (e.g. to sum their `peak_cache_bytes`)."""
    states: list[LMState] = []
    _trackers.append(states)
    try:
        yield states
    finally:
        _trackers[:] = [t for t in _trackers if t is not states]


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the longest common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def sync_tokens(state: LMState, row: int, target: list[int]) -> tuple[list[int], int]:
    """Rolls `row` back to its longest prefix shared with `target`; returns (tokens to feed, how many are re-fed).

    A row that `target` extends just gets the new tokens. A row rolled back has stale next-token logits,
    so the last shared token is fed again; its log-prob, computed from the stale logits, must be dropped
    by the caller. A row already equal to `target` needs nothing.
    """
    ids = state.ids[row]
    if ids == target:
        return [], 0
    keep = min(common_prefix(ids, target), len(target))
    if keep == len(ids) and state.last_logits is not None:
        return target[keep:], 0
    if keep == 0:
        state.rollback(row, len(ids))
        return list(target), 0
    state.rollback(row, len(ids) - keep + 1)
    return target[keep - 1 :], 1


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence the model's positions allow, if it says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model.config, name, None)
        if value:
            return int(value)
    return None
