"""The engine boundary: the operations every decoder uses on a model that writes text (the strong model,
a WSD pilot), and w2s's in-process implementation of them over transformers.

A decoder never touches a model's state (guide/state.py): it opens `Rows` and drives them.

* `Engine.start(prompts, items, copies)`: prefill each prompt once (in the model's own prompt format) and
  give it `copies` rows; an item's rows draw from its own random stream (guide/streams.py).
* `Rows.sample(steps, sampling=None)`: grow every row that is still growing by up to `steps` sampled
  tokens; rows stop at an end token, a stop string, the token limit or a full context (`StopReason`).
* `Rows.select(index)`: keep rows `index` in that order; a repeated row is forked (the copy gets a new id),
  a dropped one is gone; applied to the model's state and to every scorer attached to the rows together.
* `Rows.halt(index)`: stop rows growing (a WSD draft handed over).
* `Rows.read(texts)`: extend each row to a given response text (re-tokenised with the prompt, guide/scoring.py)
  and return the model's log-probabilities of its tokens: how a base checks a pilot's draft.
* `Rows.hand_over(keep)`: keep the first `keep[i]` read tokens of row i, roll back the rest and let the model
  continue from there (`sample`); the other rows stop.
* `Rows.text(row)`: a row's response text (a growing row's without a character it has not finished).
* `Engine.lockstep(prompts, items, followers)` and `Rows.sample(steps, combine=...)`: step several models
  over the same rows and sample from a combination of their next-token logits. This is the only
  operation that needs the full next-token distribution at every step (logit arithmetic: EFT, fusion);
  everything else needs only sampled tokens and the log-probabilities of given tokens, which a served
  engine (an OpenAI-compatible `/v1/completions` with token-id prompts, `n`, `seed` and `prompt_logprobs`)
  also provides.

Rows keep their order: `Rows.rows` holds every row, finished ones included, and the model's state holds
the growing ones in that same order. Each row is charged the tokens fed for it (guide/state.py), which the
decode context reads (`item_tokens`) to fill each item's cost.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError
from w2s.guide.models import render_prompts
from w2s.guide.scoring import IncrementalScores
from w2s.guide.state import LMState, context_length
from w2s.guide.stopping import StopReason, StopRule
from w2s.guide.streams import Prompt, Sampler, SamplingParams, item_keys
from w2s.guide.types import Row

REPLACEMENT = "\ufffd"  # what a tokenizer decodes an incomplete UTF-8 sequence to

__all__ = ["Engine", "Follower", "Reading", "RowSet", "Rows", "encode_prompts", "row_text", "stable_tokens"]


def row_text(tokenizer: PreTrainedTokenizerBase, stop: StopRule, row: Row) -> str:
    """A row's response text: its tokens decoded (cut at a stop string; without prompt characters a
    re-tokenised first token carried).

    A row still growing may end in the first bytes of a character whose last bytes its next tokens bring
    (byte-level BPE splits an emoji or a CJK character into several tokens): they decode to U+FFFD, so its
    text holds back trailing U+FFFD until the row grows past them (as vLLM's detokenizer does). Guides score
    a growing row's text and WSD's base reads a growing draft: neither sees half a character. A row that
    stopped is decoded whole, a character cut by the token limit included."""
    if row.finished and stop.stop_strings and row.text:
        text = row.text
    else:
        text = tokenizer.decode(row.ids, skip_special_tokens=True)
    text = text.removeprefix(row.cut) if row.cut else text
    return text if row.done else text.rstrip(REPLACEMENT)


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[Prompt], max_length: int | None
) -> list[list[int]]:
    """Token ids of each prompt (a string or chat messages) in the model's prompt format (`render_prompts`);
    a clear error if one is empty or too long."""
    for i, prompt in enumerate(prompts):
        text = prompt if isinstance(prompt, str) else "".join(str(m.get("content") or "") for m in prompt)
        if not text or not text.strip():
            raise GuideError(f"prompt {i} is empty")
    _, out = render_prompts(tokenizer, prompts)
    for i, ids in enumerate(out):
        if max_length is not None and len(ids) >= max_length:
            raise GuideError(
                f"prompt {i} is {len(ids)} tokens in {tokenizer.name_or_path!r}'s template, but the model's context "
                f"is {max_length} tokens: shorten it or use a model with a longer context"
            )
    return out


@dataclass(frozen=True)
class Follower:
    """A model stepped in lockstep with an engine's own (logit arithmetic), named for its cost."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    adapter: bool | None = None  # a PEFT model: True runs with the adapter, False without it


@dataclass(frozen=True)
class Reading:
    """A row's response text read by the model: the log-probs of its tokens (from `start` in the row's
    prompt + response tokens), and how many of them can no longer change as the text grows (`stable`)."""

    logprobs: list[float]
    start: int
    stable: int


class Engine:
    """A model that writes: w2s's in-process implementation of the boundary (transformers, guide/kv.py)."""

    full_logits = True  # next-token logits of every step are at hand: `lockstep` works

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

    def with_settings(self, sampling: SamplingParams, stop: StopRule) -> Engine:
        """The same model sampling with other settings (a served request's seed, temperature, token limit)."""
        engine = copy.copy(self)
        engine.sampling, engine.sampler, engine.stop = sampling, Sampler(sampling), stop
        return engine

    def start(self, prompts: list[Prompt], items: list[int] | None = None, copies: int = 1) -> Rows:
        """Prefills each prompt (a string or chat messages) once and gives it `copies` rows; `items` are the
        prompts' random streams (default: `item_keys(prompts)`)."""
        pad = self.tokenizer.pad_token_id or 0
        state = LMState(self.model, len(prompts), pad_id=pad, shared=self.share_prefixes)
        state.append(encode_prompts(self.tokenizer, prompts, context_length(self.model)))
        row_prompts = [p for p in range(len(prompts)) for _ in range(copies)]
        state.select(row_prompts)
        return Rows(self, prompts, state, items, [Row(p) for p in row_prompts])

    def lockstep(self, prompts: list[Prompt], items: list[int] | None, followers: list[Follower]) -> Rows:
        """One row per prompt, in this model and in each follower (each reading the prompt in its own format),
        fed the same tokens: `Rows.sample(steps, combine=...)` samples from their combined logits."""
        pad = self.tokenizer.pad_token_id or 0
        states = [LMState(self.model, len(prompts), pad_id=pad, shared=self.share_prefixes)]
        states += [
            LMState(f.model, len(prompts), pad_id=pad, adapter=f.adapter, shared=self.share_prefixes) for f in followers
        ]
        for state, tokenizer in zip(states, [self.tokenizer, *(f.tokenizer for f in followers)], strict=True):
            state.append(encode_prompts(tokenizer, prompts, None))
        rows = [Row(p) for p in range(len(prompts))]
        named = {f.name: state for f, state in zip(followers, states[1:], strict=True)}
        return Rows(self, prompts, states[0], items, rows, followers=named)

    def text(self, row: Row) -> str:
        return row_text(self.tokenizer, self.stop, row)


class RowSet:
    """What every implementation of the boundary's rows shares: the batch's prompts and random streams, its rows
    with stable ids (finished ones included, in order), and the scorers kept aligned with them."""

    def __init__(self, engine, prompts: list[Prompt], items: list[int] | None, rows: list[Row]):
        self.engine, self.prompts = engine, prompts
        self.items = list(items) if items is not None else item_keys(prompts)  # each prompt's random stream
        self._ids = itertools.count()
        for row in rows:
            row.id = next(self._ids)
        self.rows = rows
        self._scorers: list = []  # scorers kept row-aligned by `select`

    def growing(self) -> list[Row]:
        """The rows that may still grow, in order."""
        return [r for r in self.rows if not r.done]

    def attach(self, scorer) -> None:
        """Keeps `scorer` (a `select(index)` over these rows) aligned with the rows from now on."""
        self._scorers.append(scorer)

    def text(self, row: Row) -> str:
        return self.engine.text(row)

    def _forked(self, index: list[int]) -> list[Row]:
        """Rows `index` in that order, a repeat copied under a new id (`_fork(copy, parent)` is told of each),
        and every attached scorer selected alike."""
        new, seen = [], set()
        for i in index:
            row = self.rows[i]
            if i in seen:
                row, parent = row.copy(next(self._ids)), row
                self._fork(row, parent)
            new.append(row)
            seen.add(i)
        for scorer in self._scorers:
            scorer.select(index)
        return new

    def _fork(self, copy: Row, parent: Row) -> None:
        """What an implementation keeps per row besides the row itself, given to a copy."""


class Rows(RowSet):
    """The rows an engine writes for one batch of prompts (see the module docstring for the operations)."""

    def __init__(
        self,
        engine: Engine,
        prompts: list[Prompt],
        state: LMState,
        items: list[int] | None,
        rows: list[Row],
        followers: dict[str, LMState] | None = None,
    ):
        super().__init__(engine, prompts, items, rows)  # the state holds the growing rows in this order
        self._state = state
        self._followers = followers or {}
        self._scores: IncrementalScores | None = None  # `read`'s, made on first use
        self._begin: dict[int, int] = {}  # row id -> where its read response's tokens begin in its tokens

    # -- accounting (read by the decode context)
    def item_tokens(self) -> dict[str, list[int]]:
        """Per model, the tokens fed for each item's rows (guide/state.py says how they are charged)."""
        return {self.engine.name: list(self._state.item_tokens)} | {
            name: list(s.item_tokens) for name, s in self._followers.items()
        }

    def tokens_run(self) -> dict[str, int]:
        return {self.engine.name: self._state.tokens_run} | {n: s.tokens_run for n, s in self._followers.items()}

    # -- rows
    def _states(self) -> list[LMState]:
        return [self._state, *self._followers.values()]

    def _keep_growing(self, rows: list[Row]) -> None:
        """Drops the state's rows that stopped (`rows` are the state's rows before they did)."""
        growing = [i for i, row in enumerate(rows) if not row.done]
        if len(growing) < len(rows):
            for s in self._states():
                s.select(growing)  # stopped rows stop costing compute

    def select(self, index: list[int]) -> None:
        """Keeps rows `index` in that order: a repeat is a fork (a copy with its own id), a row left out is gone."""
        position = {r.id: k for k, r in enumerate(self.growing())}
        state_rows = [position[self.rows[i].id] for i in index if not self.rows[i].done]
        new = self._forked(index)
        for s in self._states():
            s.select(state_rows)
        self.rows = new

    def halt(self, index: list[int]) -> None:
        """Stops rows `index` growing (they keep what they wrote)."""
        before = self.growing()
        for i in index:
            if not self.rows[i].done:
                self.rows[i].stop = StopReason.HALTED
        self._keep_growing(before)

    def sample(
        self,
        steps: int,
        *,
        sampling: SamplingParams | None = None,
        combine: Callable[[list[torch.Tensor]], torch.Tensor] | None = None,
    ) -> list[Row]:
        """Samples up to `steps` tokens for every growing row; returns the rows still growing.

        `sampling` replaces the engine's settings for these steps. `combine` (rows from `Engine.lockstep`)
        maps the next-token logits of the model and each follower, in that order and cut to the model's
        vocabulary, to the logits sampled from.
        """
        engine = self.engine
        sampler = engine.sampler if sampling is None else Sampler(sampling)
        stop = engine.stop
        states = self._states()
        limits = [context_length(s.model) for s in states]
        vocab = len(engine.tokenizer)
        rows = self.growing()
        for _ in range(steps):
            if not rows:
                break
            # with followers, the logits each model predicts, cut where lm heads are padded past the vocabulary
            logits = self._state.last_logits if combine is None else combine([s.last_logits[:, :vocab] for s in states])
            slots: dict[int, int] = {}
            keys = []
            for row in rows:  # a row's slot: its place among its item's rows, decided by that item's search alone
                slot = slots[row.prompt] = slots.get(row.prompt, -1) + 1
                keys.append((self.items[row.prompt], slot, len(row.ids)))
            tokens = sampler(logits, keys).tolist()
            for row, token in zip(rows, tokens, strict=True):
                if token in stop.eos_ids:
                    row.stop = StopReason.EOS
                    continue
                row.ids.append(token)
                if stop.stop_strings:
                    text, hit = stop.cut(engine.tokenizer.decode(row.ids, skip_special_tokens=True))
                    if hit:
                        row.text, row.stop = text, StopReason.STOP_STRING
                        continue
                if len(row.ids) >= stop.max_new_tokens:
                    row.stop = StopReason.MAX_NEW_TOKENS
            for i, row in enumerate(rows):  # a row whose context is full in any model ends here, the others go on
                if not row.done and any(
                    limit is not None and int(s.length[i]) + 1 >= limit for s, limit in zip(states, limits, strict=True)
                ):
                    row.stop = StopReason.CONTEXT
            self._keep_growing(rows)
            rows = [row for row in rows if not row.done]
            if not rows:
                break
            block = [[row.ids[-1]] for row in rows]
            for s in states:
                s.append(block)
        return rows

    # -- reading given text, and handing over (draft-switch decoding)
    def read(self, texts: list[str | None], final: list[bool]) -> list[Reading | None]:
        """Brings each growing row (all of them must be) to the response text `texts[i]` (None: leave it) and
        returns the log-probs of its tokens; where `final[i]` is false the text may still grow, and `stable`
        counts the tokens that end before its last space (re-tokenising a longer text cannot change them)."""
        tokenizer = self.engine.tokenizer
        if len(self.growing()) != len(self.rows):
            raise GuideError("Rows.read: every row must still be growing")
        if self._scores is None:
            contexts, context_ids = render_prompts(tokenizer, self.prompts)
            self._contexts, self._context_ids = contexts, context_ids
            row_prompts = [r.prompt for r in self.rows]
            what = f"{self.engine.name} model"
            self._scores = IncrementalScores(self._state, tokenizer, contexts, context_ids, row_prompts, what)
        targets = self._scores.tokens(texts, [False] * len(texts))
        new = self._scores.update(targets)
        out: list[Reading | None] = []
        for i, (text, target) in enumerate(zip(texts, targets, strict=True)):
            if text is None:
                out.append(None)
                continue
            self._begin[self.rows[i].id] = target.start
            prompt = self.rows[i].prompt
            stable = len(new[i]) if final[i] else stable_tokens(tokenizer, self._contexts[prompt], text, target.start)
            out.append(Reading(new[i], target.start, stable))
        return out

    def hand_over(self, keep: dict[int, int]) -> None:
        """Rows i of `keep` keep the first `keep[i]` tokens `read` gave them and continue from there (`sample`);
        every other row stops. A kept row at the token limit stops there."""
        state, tokenizer = self._state, self.engine.tokenizer
        if len(self.growing()) != len(self.rows):
            raise GuideError("Rows.hand_over: every row must still be growing")
        switched = sorted(keep)
        refeed: list[list[int]] = [[] for _ in self.rows]
        for i in switched:  # roll back past the switch and re-feed its last token: its logits are fresh
            end = self._begin[self.rows[i].id] + keep[i]
            refeed[i] = [state.ids[i][end - 1]]
            state.rollback(i, len(state.ids[i]) - end + 1)
        state.append(refeed)
        state.select(switched)
        for k, i in enumerate(switched):
            row, begin = self.rows[i], self._begin[self.rows[i].id]
            # the response's tokens; where re-tokenising merged the prompt's tail into the draft's first token, from
            # that token on, and the prompt characters it carries are cut from the text
            row.ids = state.ids[k][begin:]
            prompt_ids = self._context_ids[row.prompt]
            if begin < len(prompt_ids):
                row.cut = tokenizer.decode(prompt_ids[begin:], skip_special_tokens=True)
        kept = [self.rows[i] for i in switched]
        for i, row in enumerate(self.rows):
            if i not in keep:
                row.stop = StopReason.HALTED
        for row in kept:
            if len(row.ids) >= self.engine.stop.max_new_tokens:
                row.stop = StopReason.MAX_NEW_TOKENS
        self._keep_growing(kept)


def stable_tokens(tokenizer: PreTrainedTokenizerBase, context: str, text: str, start: int) -> int:
    """The model's tokens of a growing response that can no longer change: those ending before its last space."""
    cut = text.rfind(" ")
    if cut <= 0:
        return 0
    offsets = tokenizer(context + text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
    return sum(1 for _, end in offsets[start:] if end <= len(context) + cut)
