"""The engine's KV cache: full-attention layers in preallocated buffers, rows re-ordered in place.

transformers' `DynamicLayer` concatenates at every step, copying the whole cache each time, and
re-orders rows into freshly allocated tensors; both costs grow with rows x length, and on a CPU they
dominated long batched decoding (128 rows at 500 tokens: 3.6x slower per token). Here a step writes
its keys in place and attention reads a view of the filled part; a buffer is re-allocated only when
it fills up (`GROW_BY` tokens of head-room at a time), and selecting rows (beam copies, dropped rows)
copies just the rows that change, in place, in an order that never overwrites a row still to be read.
"""

from __future__ import annotations

from collections import Counter

import torch
from transformers import DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

GROW_BY = 256  # tokens of head-room a buffer gains when it fills up
SPARE = -1  # in a copy plan: the one-row spare buffer that breaks cycles


def copy_plan(index: list[int]) -> list[tuple[int, int]]:
    """(destination, source) row copies that make row i hold old row `index[i]`, in place.

    A row is overwritten only once no pending copy reads it; a cycle (rows swapping places) is broken by
    saving one row to the spare first, written as (SPARE, row), and reading it back as (row, SPARE).
    Rows that keep their place cost nothing.
    """
    source = {i: j for i, j in enumerate(index) if i != j}
    readers = Counter(source.values())  # pending copies reading each old row
    ready = [i for i in source if readers[i] == 0]
    plan: list[tuple[int, int]] = []
    while source:
        while ready:
            i = ready.pop()
            j = source.pop(i)
            plan.append((i, j))
            if j != SPARE:
                readers[j] -= 1
                if readers[j] == 0 and j in source:
                    ready.append(j)
        if source:  # only cycles are left: save one row, let its readers read the spare
            c = min(source)
            plan.append((SPARE, c))
            for i, j in source.items():
                if j == c:
                    source[i] = SPARE
            readers[c] = 0
            ready.append(c)
    return plan


class GrowingLayer(DynamicLayer):
    """A full-attention layer whose keys and values live in buffers with head-room (see the module doc)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.filled = 0
        self.key_buffer = key_states.new_empty(*key_states.shape[:2], 0, key_states.shape[-1])
        self.value_buffer = value_states.new_empty(*value_states.shape[:2], 0, value_states.shape[-1])
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.filled]
        self.values = self.value_buffer[:, :, : self.filled]

    def _reallocate(self, capacity: int, index: torch.Tensor | None = None) -> None:
        """New buffers of `capacity` tokens holding the filled part (of rows `index`, if given)."""
        for name in ("key_buffer", "value_buffer"):
            old = getattr(self, name)
            kept = old[:, :, : self.filled] if index is None else old.index_select(0, index)[:, :, : self.filled]
            new = old.new_empty(kept.shape[0], old.shape[1], capacity, old.shape[-1])
            new[:, :, : self.filled] = kept
            setattr(self, name, new)
        self._expose()

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        if end > self.key_buffer.shape[-2]:
            self._reallocate(end + GROW_BY)
        self.key_buffer[:, :, self.filled : end] = key_states
        self.value_buffer[:, :, self.filled : end] = value_states
        self.filled = end
        self._expose()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.filled if self.is_initialized else 0

    def select_rows(self, index: torch.Tensor, plan: list[tuple[int, int]]) -> None:
        """Row i becomes old row `index[i]`: copies in place by `plan` while the rows fit the buffers."""
        if not self.is_initialized:
            return
        if len(index) > self.key_buffer.shape[0]:  # more rows than ever held: one gather into new buffers
            self._reallocate(self.key_buffer.shape[-2], index.to(self.key_buffer.device))
            return
        f = self.filled
        for buffer in (self.key_buffer, self.value_buffer):
            spare = None
            for destination, source in plan:
                if destination == SPARE:
                    spare = buffer[source, :, :f].clone()
                else:
                    buffer[destination, :, :f].copy_(spare if source == SPARE else buffer[source, :, :f])
        self.key_buffer, self.value_buffer = self.key_buffer[: len(index)], self.value_buffer[: len(index)]
        self._expose()

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        self.select_rows(beam_idx, copy_plan(beam_idx.tolist()))

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("w2s rolls rows back by masking; its cache is never cropped")

    def batch_repeat_interleave(self, repeats: int) -> None:
        self.reorder_cache(torch.arange(self.key_buffer.shape[0]).repeat_interleave(repeats))

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.reorder_cache(torch.as_tensor(indices))

    def buffer_bytes(self) -> int:
        """Bytes the buffers hold, head-room and rows dropped in place included."""
        if not self.is_initialized:
            return 0
        return sum(t.untyped_storage().nbytes() for t in (self.key_buffer, self.value_buffer))


class GrowingCache(DynamicCache):
    """The model's dynamic cache with its full-attention layers as `GrowingLayer`s (others, e.g. sliding, kept)."""

    def __init__(self, model: PreTrainedModel):
        super().__init__(config=model.config)
        if not self.layers:
            self.layer_class_to_replicate = GrowingLayer
        self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        plan = copy_plan(beam_idx.tolist())  # one plan for every layer
        for layer in self.layers:
            if isinstance(layer, GrowingLayer):
                layer.select_rows(beam_idx, plan)
            else:
                layer.reorder_cache(beam_idx)

    def nbytes(self) -> int:
        """Bytes the cache holds now."""
        total = 0
        for layer in self.layers:
            if isinstance(layer, GrowingLayer):
                total += layer.buffer_bytes()
            else:
                total += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values) if t is not None)
        return total
