"""The shared engine: batched incremental decoding state for one model, sampling and stopping rules.

Every decoder (sampling, best-of-N, chunk-level beam search, draft-switch
decoding, logit arithmetic) drives one `LMState` per model. An `LMState` holds
a batch of growing token sequences ("rows") with their KV cache. Rows may grow
by different numbers of tokens in one forward (blocks are left-padded, holes
masked) and may *roll back* their last tokens (masked out, never recomputed),
which is how the small models re-score re-tokenised text exactly: only the
tokens after the longest unchanged prefix go through the model again.

**Cost per item.** Every row belongs to an item (the index of its prompt in the batch), and every real
token fed is charged to the item of the row it was fed for (`LMState.item_tokens`, summing exactly to
`tokens_run`). A prompt's prefill is charged once: rows copied from it (`select`) share that prefix and
cost nothing until they grow. Rows a search drops keep what they cost, re-fed tokens (after a rollback)
count again, padding never counts. An item's cost is then a function of the item alone, not of the batch
it was decoded in or its size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide import kv
from w2s.guide.commands import GuideError
from w2s.guide.models import chat_prompt, input_device

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
        self.items: list[int] = list(range(rows))  # per prompt: the identity of its random stream (Engine.start)
        self.row_item: list[int] = list(range(rows))  # per row: its item (the index of its prompt in the batch)
        self.last_logits: torch.Tensor | None = None  # (rows, vocab): predicts each row's next token
        self.tokens_run = 0  # real (non-padding) tokens that went through the model
        self.item_tokens = [0] * rows  # per item: the real tokens fed for its rows (they sum to tokens_run)
        self.peak_cache_bytes = 0  # largest the KV cache has been
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


@dataclass
class SamplingParams:
    """Every knob of next-token sampling (temperature 0 is greedy)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise GuideError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GuideError(f"top_p must be in (0, 1], got {self.top_p}")


MASK64 = (1 << 64) - 1
# what an item's samples are a function of; a resumed run refuses outputs drawn another way
STREAMS = "gumbel-max keyed by seed, item, slot, position (1)"


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer to a well-mixed one."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


Prompt = str | list[dict]  # a prompt's text (one user message), or chat messages


def prompt_identity(prompt: Prompt) -> str:
    """What a prompt's random stream is keyed by: its text; chat messages by their JSON, except one user
    message, which is the same prompt as its text (both render alike, `chat_prompt`)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0]["content"]
    return "messages:" + json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def item_keys(prompts: list[Prompt]) -> list[int]:
    """Each item's identity for its random stream: a 64-bit hash of its prompt's content (`prompt_identity`)
    and of how many times the same content came before it in `prompts` (so that repeated prompts draw
    different samples)."""
    seen: dict[str, int] = {}
    out = []
    for text in map(prompt_identity, prompts):
        seen[text] = seen.get(text, -1) + 1
        digest = hashlib.blake2b(f"{seen[text]}:{text}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little"))
    return out


def stream_key(seed: int, item: int, slot: int, position: int) -> int:
    """The 64-bit key of the draw that row `slot` of `item` makes at `position`."""
    x = _mix(seed & MASK64)
    for part in (item, slot, position):
        x = _mix(x ^ (part & MASK64))
    return x


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding 64-bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) standard Gumbel noise, entry (i, v) a pure function of `keys[i]` and v: splitmix64 of
    the pair in int64 arithmetic (wrapping), its top 53 bits a uniform number u in (0, 1), -log(-log u)."""
    ids = torch.arange(vocab, dtype=torch.int64, device=keys.device)
    x = keys[:, None] ^ (ids[None, :] * _signed(0x9E3779B97F4A7C15))
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shift(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift(x, 27)) * _signed(0x94D049BB133111EB)
    x = x ^ _shift(x, 31)
    u = (_shift(x, 11).double() + 0.5) * 2.0**-53
    return -torch.log(-torch.log(u))


class Sampler:
    """Draws next tokens by the Gumbel-max trick with noise keyed per row.

    A row's noise is a pure function of the seed, its item (a hash of its prompt), its slot among its item's
    rows and its position (`stream_key`): an item's output does not depend on the batch it was decoded in,
    the batch size, the other items, or the point a killed run resumed from. Gumbel-max (the argmax of
    log-probability + noise) draws exactly from the warped distribution, and float noise of a batch's
    numerics moves a draw only when the two best entries are within it (inverse-CDF sampling would move
    it whenever the uniform number fell near a boundary between two of the thousands of unlikely tokens).
    """

    def __init__(self, params: SamplingParams):
        self.params = params

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k and top-p applied to (rows, vocab) logits, as log-probabilities."""
        p = self.params
        logits = logits.float() / max(p.temperature, 1e-6)
        if p.top_k > 0 and p.top_k < logits.shape[-1]:
            kth = logits.topk(p.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= p.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return torch.log_softmax(logits, dim=-1)

    def __call__(self, logits: torch.Tensor, keys: list[tuple[int, int, int]]) -> torch.Tensor:
        """One token id per row; `keys[i]` is row i's (item, slot, position)."""
        if self.params.temperature == 0:
            return logits.argmax(-1)
        logp = self.warp(logits)
        rows = [_signed(stream_key(self.params.seed, *k)) for k in keys]
        noise = gumbel_noise(torch.tensor(rows, dtype=torch.int64, device=logp.device), logp.shape[-1])
        return (logp.double() + noise).argmax(-1)


@dataclass
class StopRule:
    """When a response ends: an end-of-turn token, a stop string, or the token limit."""

    eos_ids: set[int]
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, stop=()
    ) -> StopRule:
        """The model family's end tokens: the tokenizer's EOS and every EOS its generation config names."""
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        config_eos = getattr(model.generation_config, "eos_token_id", None)
        eos |= set(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
        return cls(eos_ids=eos, max_new_tokens=max_new_tokens, stop_strings=tuple(stop))

    def cut(self, text: str) -> tuple[str, bool]:
        """Text up to the first stop string, and whether one was found."""
        hits = [text.find(s) for s in self.stop_strings if s in text]
        return (text[: min(hits)], True) if hits else (text, False)


@dataclass
class Row:
    """One candidate response being written by the strong model."""

    prompt: int  # index of its prompt
    ids: list[int] = field(default_factory=list)  # the strong model's response tokens
    text: str = ""
    finished: bool = False  # ended by EOS or a stop string (not by the token limit)
    done: bool = False  # will not grow any more (finished or out of tokens)
    score: float = 0.0
    stop: str = ""  # why it ended: eos, stop_string, max_new_tokens, or context (a model's context was full)

    def copy(self) -> Row:
        return Row(self.prompt, list(self.ids), self.text, self.finished, self.done, self.score, self.stop)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], max_length: int | None
) -> list[list[int]]:
    """Token ids of each prompt (a string or chat messages) in the tokenizer's chat template; a clear error if
    one is empty or too long."""

    out = []
    for i, prompt in enumerate(prompts):
        text = prompt if isinstance(prompt, str) else "".join(str(m.get("content") or "") for m in prompt)
        if not text or not text.strip():
            raise GuideError(f"prompt {i} is empty")
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
        if max_length is not None and len(ids) >= max_length:
            raise GuideError(
                f"prompt {i} is {len(ids)} tokens in {tokenizer.name_or_path!r}'s template, but the model's context "
                f"is {max_length} tokens: shorten it or use a model with a longer context"
            )
        out.append(ids)
    return out


def context_length(model: PreTrainedModel) -> int | None:
    """The longest sequence the model's positions allow, if it says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model.config, name, None)
        if value:
            return int(value)
    return None


@dataclass
class Generation:
    """One response and what it cost.

    `tokens` is exact and the item's own: per model, the real tokens fed for this item's rows (its prompt's
    prefill once, every row it searched over including those dropped, tokens re-fed after rollbacks; never
    padding), so it does not depend on the batch; over a batch they sum to the models' totals. Wall time
    cannot be split so: `seconds` is the batch's time over its items, `batch_seconds` the whole batch's.
    """

    text: str
    score: float | None = None  # the guide's (or reward model's) score of the chosen response
    switch_at: int | None = None  # draft-switch decoding: the base's tokens of the draft that were kept
    tokens: dict[str, int] = field(default_factory=dict)  # tokens run through each model for this item
    seconds: float = 0.0  # this item's share of the batch's wall time
    stop: str = ""  # why the response ended: eos, stop_string, max_new_tokens, or context (cut: a context was full)
    batch_seconds: float = 0.0  # wall time of the whole batch this item was decoded in


class Engine:
    """The strong model's side: prompts in, rows advanced token by token, finished rows dropped."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        sampling: SamplingParams,
        stop: StopRule,
        name: str = "strong",
        share_prefixes: bool = True,
    ):
        self.model, self.tokenizer, self.sampling, self.stop, self.name = model, tokenizer, sampling, stop, name
        self.sampler = Sampler(sampling)
        self.share_prefixes = share_prefixes  # rows copied from one row keep their common prefix once

    def reseed(self, seed: int) -> None:
        """Samples from now on with `seed` (every item's stream depends on it)."""
        self.sampling = dataclasses.replace(self.sampling, seed=seed)
        self.sampler = Sampler(self.sampling)

    def start(self, prompts: list[Prompt], row_prompts: list[int], items: list[int] | None = None) -> LMState:
        """Prefills each prompt (a string or chat messages) once and copies its cache to its rows; `items` are
        the prompts' random streams (default: `item_keys(prompts)`)."""
        pad = self.tokenizer.pad_token_id or 0
        state = LMState(self.model, len(prompts), pad_id=pad, shared=self.share_prefixes)
        state.append(encode_prompts(self.tokenizer, prompts, context_length(self.model)))
        state.select(row_prompts)
        state.items = list(items) if items is not None else item_keys(prompts)  # each prompt's random stream
        return state

    def advance(
        self,
        state: LMState,
        rows: list[Row],
        steps: int,
        *,
        followers: tuple[LMState, ...] = (),
        combine: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
    ) -> list[Row]:
        """Samples up to `steps` tokens for every row; returns the rows still growing (the states keep only them).

        `followers` are other models' states over the same rows, fed the same tokens; `combine` maps the
        next-token logits of `state` and each follower, in that order, to the logits sampled from
        (logit arithmetic). Without them, the strong model samples alone.
        """
        states = (state, *followers)
        limits = [context_length(s.model) for s in states]
        for _ in range(steps):
            if not rows:
                break
            logits = state.last_logits if combine is None else combine([s.last_logits for s in states])
            slots: dict[int, int] = {}
            keys = []
            for row in rows:  # a row's slot: its place among its item's rows, decided by that item's search alone
                slot = slots[row.prompt] = slots.get(row.prompt, -1) + 1
                keys.append((state.items[row.prompt], slot, len(row.ids)))
            tokens = self.sampler(logits, keys).tolist()
            for row, token in zip(rows, tokens, strict=True):
                if token in self.stop.eos_ids:
                    row.finished = row.done = True
                    row.stop = "eos"
                    continue
                row.ids.append(token)
                if self.stop.stop_strings:
                    text, hit = self.stop.cut(self.tokenizer.decode(row.ids, skip_special_tokens=True))
                    if hit:
                        row.text, row.finished, row.done, row.stop = text, True, True, "stop_string"
                        continue
                if len(row.ids) >= self.stop.max_new_tokens:
                    row.done, row.stop = True, "max_new_tokens"
            for i, row in enumerate(rows):  # a row whose context is full in any model ends here, the others go on
                if not row.done and any(
                    limit is not None and int(s.length[i]) + 1 >= limit for s, limit in zip(states, limits, strict=True)
                ):
                    row.done, row.stop = True, "context"
            growing = [i for i, row in enumerate(rows) if not row.done]
            if len(growing) < len(rows):
                for s in states:
                    s.select(growing)  # finished rows stop costing compute
                rows = [rows[i] for i in growing]
            if not rows:
                break
            block = [[row.ids[-1]] for row in rows]
            for s in states:
                s.append(block)
        return rows

    def text(self, row: Row) -> str:
        if row.finished and self.stop.stop_strings and row.text:
            return row.text
        return self.tokenizer.decode(row.ids, skip_special_tokens=True)
