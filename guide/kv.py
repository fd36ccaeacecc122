"""The engine's KV cache: preallocated buffers, rows re-ordered in place, beam prefixes stored once.

transformers' `DynamicLayer` concatenates at every step, copying the whole cache each time, and
re-orders rows into freshly allocated tensors; both costs grow with rows x length, and on a CPU they
dominated long batched decoding (128 rows at 500 tokens: 3.6x slower per token). Here a step writes
its keys in place and attention reads a view of the filled part; a buffer is re-allocated only when
it fills up (a quarter more room each time), and selecting rows copies just the rows that
change, in place, in an order that never overwrites a row still to be read.

Shared prefixes. Rows copied from one row (a prompt's samples, a beam's successors) share everything
before the copy. With `shared=True` a layer keeps those keys once per *group* (`prefix`, one row per
group) and only each row's own continuation per row (`suffix`); attention reads a group's prefix once
for all its rows (its queries are batched together) and merges both parts in one softmax. Decoding
at long lengths is bound by reading the cache, so this divides the strong model's main cost in
chunk-level beam search by about the number of successors. The 2-D attention mask keeps one column
per physical position, prefix columns first, so roll-backs and padding work as before.

transformers' internals. This is the one module of w2s that relies on transformers beyond its public
API: `GrowingLayer` subclasses `cache_utils.DynamicLayer` (its `keys`/`values`/`is_initialized`),
`GrowingCache` rebuilds `DynamicCache.layers`, `update()` returns a `Split` instead of tensors to
attention registered under its own name, whose mask comes from `masking_utils.sdpa_mask(
allow_is_causal_skip=False)` and which calls `sdpa_attention_forward` for plain tensors; `forward`
writes `config._attn_implementation` around a forward with shared prefixes. The engine (`engine.py`)
uses only `make_cache`, `shares_prefixes`, `forward` and `cache_nbytes`. A release may change any of
that, so the first cache made runs `self_check`: a tiny random Llama decoded with this cache must give
the log-probs of a full forward. If it does not (or `W2S_FORCE_STOCK_CACHE=1`), the engine uses
transformers' stock `DynamicCache` without shared prefixes (slower, same outputs), after one warning.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections import Counter
from dataclasses import dataclass

import torch
import transformers
from transformers import AttentionInterface, DynamicCache, PreTrainedModel

try:  # private modules a release may move: then the self-check fails and the stock cache is used
    from transformers.cache_utils import DynamicLayer
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
except ImportError as e:
    _IMPORT_ERROR: ImportError | None = e
    DynamicLayer = object
else:
    _IMPORT_ERROR = None

logger = logging.getLogger(__name__)

FORCE_STOCK_CACHE = "W2S_FORCE_STOCK_CACHE"  # set to 1: skip the self-check and use the stock cache
CHECK_TOLERANCE = 1e-4  # the self-check's largest allowed log-prob difference from a full forward
GROW_MIN = 16  # a full buffer is re-allocated with a quarter more room, and at least this many positions
SPARE = -1  # in a copy plan: the one-row spare buffer that breaks cycles
ATTENTION = "w2s_shared_prefix"  # the attention implementation of states with shared prefixes


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


def reorder(buffer: torch.Tensor, index: list[int], plan: list[tuple[int, int]], filled: int) -> torch.Tensor:
    """`buffer`'s rows re-ordered by `index` (first `filled` positions): in place by `copy_plan(index)` while
    they fit, else one gather into a new buffer."""
    if len(index) > buffer.shape[0]:  # more rows than ever held: one gather into a new buffer
        new = buffer.new_empty(len(index), *buffer.shape[1:])
        new[:, :, :filled] = buffer.index_select(0, torch.tensor(index, device=buffer.device))[:, :, :filled]
        return new
    spare = None
    for destination, source in plan:
        if destination == SPARE:
            spare = buffer[source, :, :filled].clone()
        else:
            buffer[destination, :, :filled].copy_(spare if source == SPARE else buffer[source, :, :filled])
    return buffer[: len(index)]


def room_for(needed: int) -> int:
    """Positions to allocate for `needed`: a quarter more, so a growing row is copied O(log length) times."""
    return needed + max(needed // 4, GROW_MIN)


def with_room(buffer: torch.Tensor, filled: int, needed: int) -> torch.Tensor:
    """`buffer`, or a copy of its first `filled` positions in a buffer of `room_for(needed)` positions."""
    if needed <= buffer.shape[2]:
        return buffer
    new = buffer.new_empty(buffer.shape[0], buffer.shape[1], room_for(needed), buffer.shape[3])
    new[:, :, :filled] = buffer[:, :, :filled]
    return new


@dataclass
class Groups:
    """Which group (shared prefix) each row reads, and each row's slot when a group's rows are batched."""

    slot: torch.Tensor  # (rows,): group * width + the row's rank in its group
    width: int  # the most rows in one group
    count: int  # groups

    @classmethod
    def of(cls, group: list[int], device) -> Groups:
        seen: Counter = Counter()
        slot = []
        width = max(Counter(group).values(), default=1)
        for g in group:
            slot.append(g * width + seen[g])
            seen[g] += 1
        count = max(group, default=-1) + 1
        return cls(torch.tensor(slot, device=device), width, count)


@dataclass
class Split:
    """One layer's keys (or values): a prefix per group, then a suffix per row."""

    prefix: torch.Tensor  # (groups, kv heads, P, head dim)
    suffix: torch.Tensor  # (rows, kv heads, S, head dim)
    groups: Groups


class GrowingLayer(DynamicLayer):
    """A full-attention layer whose keys and values live in buffers with head-room (see the module doc)."""

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        b, h, _, d = key_states.shape
        self.filled = 0  # suffix positions
        self.prefix_len = 0
        self.key_buffer, self.value_buffer = key_states.new_empty(b, h, 0, d), value_states.new_empty(b, h, 0, d)
        self.key_prefix, self.value_prefix = key_states.new_empty(0, h, 0, d), value_states.new_empty(0, h, 0, d)
        self.groups: Groups | None = None
        self._expose()
        self.is_initialized = True

    def _expose(self) -> None:
        self.keys = self.key_buffer[:, :, : self.filled]
        self.values = self.value_buffer[:, :, : self.filled]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        end = self.filled + key_states.shape[-2]
        self.key_buffer = with_room(self.key_buffer, self.filled, end)
        self.value_buffer = with_room(self.value_buffer, self.filled, end)
        self.key_buffer[:, :, self.filled : end] = key_states
        self.value_buffer[:, :, self.filled : end] = value_states
        self.filled = end
        self._expose()
        if not self.prefix_len:
            return self.keys, self.values
        p = self.prefix_len
        return Split(self.key_prefix[:, :, :p], self.keys, self.groups), Split(
            self.value_prefix[:, :, :p], self.values, self.groups
        )

    def get_seq_length(self) -> int:
        return self.prefix_len + self.filled if self.is_initialized else 0

    def select_rows(self, index: list[int], plan: list[tuple[int, int]]) -> None:
        """Row i becomes old row `index[i]` (`plan` = `copy_plan(index)`); groups are left to `keep_groups`."""
        if not self.is_initialized:
            return
        if not self.filled:  # nothing to move: keep the buffers' rows for the next block
            self.key_buffer, self.value_buffer = self._rows(len(index))
            self._expose()
            return
        self.key_buffer = reorder(self.key_buffer, index, plan, self.filled)
        self.value_buffer = reorder(self.value_buffer, index, plan, self.filled)
        self._expose()

    def regroup(self, sources: list[int], old_groups: list[int], plan: list[tuple[int, int]], groups: Groups) -> None:
        """New group k = old row `sources[k]`: its group (`old_groups[k]`, moved by `plan`) prefix, then its
        suffix; every suffix is emptied."""
        if not self.is_initialized:
            return
        p, s = self.prefix_len, self.filled
        for name, rows in (("key_prefix", "key_buffer"), ("value_prefix", "value_buffer")):
            suffix = getattr(self, rows)
            if p == 0:  # the first groups: their prefixes are their sources' suffixes
                prefix = suffix.new_empty(len(sources), suffix.shape[1], room_for(s), suffix.shape[3])
            else:
                prefix = reorder(with_room(getattr(self, name), p, p + s), old_groups, plan, p)
            prefix[:, :, p : p + s] = suffix.index_select(0, torch.tensor(sources, device=suffix.device))[:, :, :s]
            setattr(self, name, prefix)
        self.key_buffer, self.value_buffer = self._rows(len(groups.slot))
        self.prefix_len, self.filled, self.groups = p + s, 0, groups
        self._expose()

    def _rows(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Suffix buffers for `n` rows, their content no longer needed."""
        if n > self.key_buffer.shape[0]:
            return self.key_buffer.new_empty(n, *self.key_buffer.shape[1:]), self.value_buffer.new_empty(
                n, *self.value_buffer.shape[1:]
            )
        return self.key_buffer[:n], self.value_buffer[:n]

    def keep_groups(self, old_groups: list[int], plan: list[tuple[int, int]], groups: Groups) -> None:
        """Group k becomes old group `old_groups[k]` (`plan` = `copy_plan(old_groups)`)."""
        if self.is_initialized and self.prefix_len:
            self.key_prefix = reorder(self.key_prefix, old_groups, plan, self.prefix_len)
            self.value_prefix = reorder(self.value_prefix, old_groups, plan, self.prefix_len)
        self.groups = groups

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        if self.prefix_len:
            raise NotImplementedError("re-order a cache with shared prefixes through GrowingCache.reorder_cache")
        index = beam_idx.tolist()
        self.select_rows(index, copy_plan(index))

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
        buffers = (self.key_buffer, self.value_buffer, self.key_prefix, self.value_prefix)
        return sum(t.untyped_storage().nbytes() for t in buffers)


class GrowingCache(DynamicCache):
    """The model's dynamic cache with its full-attention layers as `GrowingLayer`s (others, e.g. sliding, kept).

    With `shared`, a selection that copies rows turns the copied rows into groups sharing their prefix.
    """

    def __init__(self, model: PreTrainedModel, shared: bool = False):
        super().__init__(config=model.config)
        if not self.layers:
            self.layer_class_to_replicate = GrowingLayer
        self.layers = [GrowingLayer() if type(layer) is DynamicLayer else layer for layer in self.layers]
        self.shared = shared and all(isinstance(layer, GrowingLayer) for layer in self.layers)
        self.group: list[int] | None = None  # each row's group, once prefixes are shared

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Row i becomes old row `beam_idx[i]`; each copy plan is made once for every layer."""
        index = beam_idx.tolist()
        growing = [layer for layer in self.layers if isinstance(layer, GrowingLayer)]
        for layer in self.layers:
            if not isinstance(layer, GrowingLayer):
                layer.reorder_cache(beam_idx)
        if self.shared and len(set(index)) < len(index):  # rows copied: each source starts a group
            sources = list(dict.fromkeys(index))
            number = {row: k for k, row in enumerate(sources)}
            old = [self.group[row] for row in sources] if self.group is not None else [0] * len(sources)
            self.group = [number[row] for row in index]
            groups = Groups.of(self.group, beam_idx.device)
            plan = copy_plan(old)
            for layer in growing:
                layer.regroup(sources, old, plan, groups)
            return
        plan = copy_plan(index)
        for layer in growing:
            layer.select_rows(index, plan)
        if self.group is not None:  # rows kept or dropped: groups renumbered, unread ones dropped
            kept = list(dict.fromkeys(self.group[row] for row in index))
            number = {g: k for k, g in enumerate(kept)}
            self.group = [number[self.group[row]] for row in index]
            groups = Groups.of(self.group, beam_idx.device)
            plan = copy_plan(kept)
            for layer in growing:
                layer.keep_groups(kept, plan, groups)

    def nbytes(self) -> int:
        """Bytes the cache holds now."""
        total = 0
        for layer in self.layers:
            if isinstance(layer, GrowingLayer):
                total += layer.buffer_bytes()
            else:
                total += sum(t.numel() * t.element_size() for t in (layer.keys, layer.values) if t is not None)
        return total


def shared_prefix_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention over [group prefix, row suffix] keys, each group's prefix read once for all its rows.

    Plain tensors (no prefix shared yet) go to transformers' SDPA attention.
    """
    if not isinstance(key, Split):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout, scaling, **kwargs)
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None:
        raise NotImplementedError("shared-prefix attention has no logit soft-capping or attention sinks")
    groups = key.groups
    rows, heads, q, dim = query.shape
    kv_heads, p = key.prefix.shape[1], key.prefix.shape[2]
    rep = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    qr = query.reshape(rows, kv_heads, rep * q, dim)  # query head h reads kv head h // rep

    def to_groups(x: torch.Tensor) -> torch.Tensor:  # (rows, kv_heads, n, last) -> (groups, kv_heads, width * n, last)
        slots = x.new_zeros(groups.count * groups.width, *x.shape[1:])
        slots[groups.slot.to(x.device)] = x  # a device map's layers may sit on other devices
        g = slots.view(groups.count, groups.width, *x.shape[1:]).transpose(1, 2)
        return g.reshape(groups.count, kv_heads, groups.width * x.shape[2], x.shape[3])

    def to_rows(x: torch.Tensor) -> torch.Tensor:  # the inverse
        g = x.view(groups.count, kv_heads, groups.width, -1, x.shape[-1]).transpose(1, 2)
        return g.reshape(groups.count * groups.width, kv_heads, -1, x.shape[-1])[groups.slot.to(x.device)]

    scores = (
        torch.cat(
            [to_rows(to_groups(qr) @ key.prefix.transpose(-1, -2)), qr @ key.suffix.transpose(-1, -2)], dim=-1
        ).float()
        * scale
    )  # (rows, kv_heads, rep * q, P + S)
    if attention_mask is not None:
        scores = scores.view(rows, kv_heads, rep, q, -1)
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask[:, :, None], torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[:, :, None].float()
        scores = scores.view(rows, kv_heads, rep * q, -1)
    weights = scores.softmax(-1).to(query.dtype)
    out = to_rows(to_groups(weights[..., :p]) @ value.prefix) + weights[..., p:] @ value.suffix
    return out.view(rows, heads, q, dim).transpose(1, 2).contiguous(), None


def _always_a_mask(*args, **kwargs):
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


@functools.cache
def _register_attention() -> None:
    if _IMPORT_ERROR is not None:
        raise _IMPORT_ERROR
    AttentionInterface.register(ATTENTION, shared_prefix_attention)
    AttentionMaskInterface.register(ATTENTION, _always_a_mask)


# What the engine uses


def make_cache(model: PreTrainedModel, shared: bool = False):
    """A cache for `model`: a `GrowingCache` (prefixes shared if asked and the model runs SDPA attention), or
    transformers' stock `DynamicCache` where this transformers failed the self-check."""
    if not growing_cache_works():
        return DynamicCache(config=model.config)
    return GrowingCache(model, shared=shared and model.config._attn_implementation == "sdpa")


def shares_prefixes(cache) -> bool:
    """Whether rows copied from one row read their common prefix once in `cache`."""
    return isinstance(cache, GrowingCache) and cache.shared


def forward(model, cache, **inputs) -> torch.Tensor:
    """`model`'s logits for `inputs` over `cache`; a cache with shared prefixes runs their attention."""
    inputs[_cache_keyword(type(model.get_base_model() if hasattr(model, "get_base_model") else model))] = cache
    if not shares_prefixes(cache):
        return model(use_cache=True, **inputs).logits
    config = model.config
    attention = config._attn_implementation
    config._attn_implementation = ATTENTION
    try:
        return model(use_cache=True, **inputs).logits
    finally:
        config._attn_implementation = attention


@functools.cache
def _cache_keyword(model_class: type) -> str:
    """The name `model_class.forward` takes the cache by: `cache` (transformers >= 5.2x; `past_key_values`
    is deprecated there, to go in 5.40) or `past_key_values` (earlier, and models that kept it)."""
    return "cache" if "cache" in inspect.signature(model_class.forward).parameters else "past_key_values"


def cache_nbytes(cache) -> int:
    """Bytes `cache` holds now (head-room included)."""
    if isinstance(cache, GrowingCache):
        return cache.nbytes()
    tensors = [getattr(layer, name, None) for layer in cache.layers for name in ("keys", "values")]
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


@functools.cache
def growing_cache_works() -> bool:
    """Whether this process decodes with `GrowingCache`: `self_check` passed (run once per process)."""
    if os.environ.get(FORCE_STOCK_CACHE, "") not in ("", "0"):
        reason = f"{FORCE_STOCK_CACHE}={os.environ[FORCE_STOCK_CACHE]}"
    else:
        try:
            self_check()
            return True
        except Exception as e:  # any failure of transformers' internals means: do not trust them
            reason = f"its self-check failed: {type(e).__name__}: {e}"
    logger.warning(
        "w2s's KV cache is off with transformers %s (%s): decoding uses transformers' DynamicCache without "
        "shared prefixes (same outputs, slower). Report it if transformers is within w2s's supported range.",
        transformers.__version__, reason,
    )  # fmt: skip
    return False


@torch.no_grad()
def self_check() -> None:
    """Decodes a tiny random Llama (2 layers x 32, vocab 64, built in memory) with `GrowingCache`, rows apart
    and with shared prefixes, through uneven blocks, beam copies, a roll-back and dropped rows; raises unless
    every row's next-token log-probs equal a full forward's within `CHECK_TOLERANCE`."""
    from transformers import LlamaConfig, LlamaForCausalLM

    _register_attention()
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random stream alone
        torch.manual_seed(0)
        config = LlamaConfig(
            vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            intermediate_size=64, max_position_embeddings=256, attn_implementation="sdpa",
        )  # fmt: skip
        model = LlamaForCausalLM(config).eval()
    for shared in (False, True):
        _check_decoding(model, shared)


def _check_decoding(model: PreTrainedModel, shared: bool) -> None:
    g = torch.Generator().manual_seed(0)
    cache = GrowingCache(model, shared=shared)
    if cache.shared != shared:
        raise RuntimeError("GrowingCache declined to share the prefixes of a Llama's full-attention layers")
    ids: list[list[int]] = [[], []]
    mask = torch.zeros(2, 0, dtype=torch.long)

    def feed(blocks: list[list[int]]) -> None:  # as LMState.append: blocks left-padded, holes masked
        nonlocal mask
        n = max(map(len, blocks))
        input_ids = torch.zeros(len(blocks), n, dtype=torch.long)
        new = torch.zeros(len(blocks), n, dtype=torch.long)
        for i, block in enumerate(blocks):
            if block:
                input_ids[i, n - len(block) :], new[i, n - len(block) :] = torch.tensor(block), 1
        mask = torch.cat([mask, new], dim=1)
        positions = (mask.cumsum(1) - 1).clamp(min=0)[:, -n:]
        logits = forward(model, cache, input_ids=input_ids, attention_mask=mask, position_ids=positions)
        for i, block in enumerate(blocks):
            ids[i] += block
            if block:
                expected = model(torch.tensor([ids[i]])).logits[0, -1].log_softmax(-1)
                error = (logits[i, -1].log_softmax(-1) - expected).abs().max().item()
                if not error <= CHECK_TOLERANCE:
                    raise RuntimeError(f"log-probs differ from a full forward by {error:.2g} (shared={shared})")

    def tokens(n: int) -> list[int]:
        return torch.randint(1, 64, (n,), generator=g).tolist()

    def select(index: list[int]) -> None:
        nonlocal mask, ids
        cache.reorder_cache(torch.tensor(index))
        mask, ids = mask[index], [list(ids[i]) for i in index]

    feed([tokens(5), tokens(3)])
    select([0, 0, 1, 1])  # beam copies: groups of shared prefixes
    feed([tokens(2), tokens(1), [], tokens(3)])
    select([1, 0, 3, 3])  # copies of copies, re-ordered
    feed([tokens(1), tokens(4), tokens(1), tokens(2)])
    valid = mask[2].nonzero()[:, 0]  # row 2 rolls back into its shared prefix (masked, as LMState.rollback)
    mask[2, valid[-6:]] = 0
    del ids[2][-6:]
    feed([[], [], tokens(2), tokens(1)])
    select([3, 2, 0])  # a row dropped
    feed([tokens(3), tokens(1), tokens(2)])
