"""The strong model on a server: the engine boundary (guide/engine.py) over an OpenAI-compatible
`/v1/completions` server, vLLM first (`strong_backend: openai`).

The prompt is rendered here, in the strong model's own format by its own tokenizer (`strong_tokenizer`),
and travels as token ids; so does every row's response: a row continues with exactly the tokens it
sampled, never re-tokenised text. What each operation asks the server:

* `Rows.sample(steps)`: one request per group of identical rows (a prompt's copies, a beam's successors)
  with `n` = the group's size and `max_tokens` = the chunk; every group's request is in flight at once
  (`strong_concurrency`) so the server batches them, and prefix caching keeps what rows share.
  A request's `seed` is a function of the item's stream, the first row's slot among its item's rows and
  its position (guide/streams.py `stream_key`), so reruns, resumed and sharded runs get the same samples
  from one server build. The server samples (not w2s's Gumbel-max sampler): served and in-process draws
  differ; the stop rules (end tokens, stop strings, token limit, the server's context) are w2s's.
* `Rows.read(texts)`: the row's prompt + response tokens as a prompt with `prompt_logprobs` (WSD's check
  of a draft).
* `Rows.hand_over(keep)`: the kept tokens stay here and become the prompt of the row's continuation.
* `Engine.lockstep` (logit arithmetic) needs every step's full next-token logits, which a server does not
  give: `full_logits = False`, and EFT and fusion stop before any work (`check_backend`).

Each row's item is charged the tokens of the server's `usage` for its requests (prompt + completion; the
prompt counts in full at every request, cached or not), so an item's cost is its own.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from transformers import GenerationConfig, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError
from w2s.guide.engine import Reading, RowSet, encode_prompts, row_text, stable_tokens
from w2s.guide.models import load_tokenizer, render_prompts, resolve_model_path
from w2s.guide.scoring import response_ids
from w2s.guide.stopping import StopReason, StopRule
from w2s.guide.streams import Prompt, SamplingParams, stream_key
from w2s.guide.types import Row

logger = logging.getLogger(__name__)

__all__ = ["ServedEngine", "ServedRows", "Server", "ServerError", "check_backend", "connect", "probe", "served_engine"]

SEED_BITS = 62  # a request's seed, below vLLM's int64 bound with room for its `seed + i` of n > 1


class ServerError(GuideError):
    """A request the strong model's server did not answer (`detail` says why, in one line)."""

    def __init__(self, url: str, detail: str):
        super().__init__(f"strong model server {url}: {detail}")
        self.detail = detail


@dataclass(frozen=True)
class Server:
    """An OpenAI-compatible server serving `model` at `base_url` (…/v1); `key` is sent as a bearer token and
    never shown; `context` is the server's context length for the model (None: it did not say)."""

    base_url: str
    model: str
    key: str | None = field(default=None, repr=False)
    concurrency: int = 32
    context: int | None = None
    timeout: float = 300.0
    retries: int = 2

    def request(self, path: str, body: dict | None = None) -> dict:
        """GET (no body) or POST `body` as JSON to `path`; a failure is one GuideError line, after `retries`
        retries of connection errors and 5xx/429 answers."""
        url = self.base_url.rstrip("/") + path
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {self.key}"} if self.key else {})
        data = None if body is None else json.dumps(body).encode()
        delay = 1.0
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method="GET" if body is None else "POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                retry = e.code == 429 or e.code >= 500
                detail = f"HTTP {e.code}: {_server_message(e)}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                retry, detail = True, f"{e.__class__.__name__}: {getattr(e, 'reason', e)}"
            if not retry or attempt == self.retries:
                raise ServerError(url, detail)
            logger.warning("strong model server %s: %s; retrying in %.0f s", url, detail, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def complete(self, bodies: list[dict]) -> list[dict]:
        """Every `/completions` request at once (at most `concurrency` in flight), answers in order."""
        if not bodies:
            return []
        with ThreadPoolExecutor(max_workers=min(self.concurrency, len(bodies))) as pool:
            return list(pool.map(lambda body: self.request("/completions", {"model": self.model, **body}), bodies))


def _server_message(error: urllib.error.HTTPError) -> str:
    """The message of a server's error answer (OpenAI's `{"error": {"message"}}`, vLLM's too), on one line."""
    try:
        body = json.loads(error.read() or b"{}")
        message = body.get("error", body).get("message") if isinstance(body.get("error", body), dict) else body
    except (ValueError, AttributeError):
        message = None
    return " ".join(str(message or error.reason).split())[:500]


def connect(base_url_env: str, api_key_env: str, model: str, concurrency: int = 32) -> Server:
    """The server the environment names (its base URL in `base_url_env`, else OPENAI_BASE_URL; its key in
    `api_key_env`, else OPENAI_API_KEY), probed once (`probe`). Each failure is one line."""
    base = os.environ.get(base_url_env) or os.environ.get("OPENAI_BASE_URL")
    if not base:
        raise GuideError(
            f"strong_backend openai: set {base_url_env} (or OPENAI_BASE_URL) to the server's base URL, "
            "e.g. http://127.0.0.1:8000/v1"
        )
    key = os.environ.get(api_key_env) or os.environ.get("OPENAI_API_KEY")
    return probe(Server(base, model, key, concurrency), f"start it, or set {base_url_env}")


def probe(server: Server, unreachable: str = "start it") -> Server:
    """`server` probed once: it must serve its model, take token-id prompts and return token ids and
    `prompt_logprobs` (vLLM's `/v1/completions` does); returned with the model's context length. Each failure
    is one line (`unreachable` says what to do when nothing answers)."""
    base, model = server.base_url, server.model
    try:
        listed = dataclasses.replace(server, retries=0, timeout=30.0).request("/models").get("data") or []
    except ServerError as e:
        raise GuideError(
            f"strong_backend openai: cannot reach the server at {base} ({e.detail}): {unreachable}"
        ) from None
    served = {str(m.get("id")): m for m in listed if isinstance(m, dict)}
    if model not in served:
        raise GuideError(
            f"strong_model {model!r} is not served at {base} (it serves: {', '.join(served) or 'nothing'}): "
            "set strong_model to the served model's name"
        )
    context = served[model].get("max_model_len")
    server = dataclasses.replace(server, context=int(context) if context else None)
    reply = server.request(
        "/completions",
        {"model": model, "prompt": [0, 0], "max_tokens": 1, "temperature": 0.0}
        | {"prompt_logprobs": 0, "return_token_ids": True},
    )
    choice = (reply.get("choices") or [{}])[0]
    if not isinstance(choice.get("token_ids"), list) or not isinstance(choice.get("prompt_logprobs"), list):
        raise GuideError(
            f"the server at {base} does not return token ids and prompt_logprobs from /completions "
            "(vLLM's OpenAI server does): serve the strong model with vLLM, or use strong_backend: hf"
        )
    return server


def check_backend(config, decoder=None) -> None:
    """A served strong model cannot do logit arithmetic: a decoder that needs one vocabulary with it (EFT,
    fusion: the full next-token logits at every step) is one line, before any work."""
    decoder = decoder or config.make_decoder()
    if config.strong_backend == "openai" and decoder.shared_vocabulary:
        raise GuideError(
            f"decoder {decoder.name} needs the strong model's full next-token logits at every step, which a "
            "served model does not give: use strong_backend: hf (or decoder cbs, bon or wsd)"
        )


def served_stop(tokenizer: PreTrainedTokenizerBase, name: str, max_new_tokens: int, stop=()) -> StopRule:
    """The strong family's end tokens, as `StopRule.for_model` finds them, from the tokenizer's folder."""
    eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    try:
        config_eos = GenerationConfig.from_pretrained(resolve_model_path(name)).eos_token_id
    except (OSError, ValueError):
        config_eos = None
    eos |= set(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
    return StopRule(eos_ids=eos, max_new_tokens=max_new_tokens, stop_strings=tuple(stop))


def served_engine(config, decoder=None) -> ServedEngine:
    """The strong model a guide recipe (`GuideConfig` with strong_backend openai) serves, probed."""
    c = config
    check_backend(c, decoder)
    source = c.strong_tokenizer or c.strong_model
    tokenizer = load_tokenizer(
        source,
        trust_remote_code=c.trust_remote_code,
        prompt_format=c.strong_prompt_format,
        format_key="strong_prompt_format",
    )
    server = connect(c.strong_base_url_env, c.strong_api_key_env, c.strong_model, c.strong_concurrency)
    sampling = SamplingParams(c.temperature, c.top_k, c.top_p, c.seed)
    return ServedEngine(server, tokenizer, sampling, served_stop(tokenizer, source, c.max_new_tokens, c.stop))


class ServedEngine:
    """A served model that writes: the engine boundary over `/v1/completions` (see the module docstring)."""

    full_logits = False  # the server gives sampled tokens and given tokens' log-probs, not every step's logits

    def __init__(
        self,
        server: Server,
        tokenizer: PreTrainedTokenizerBase,
        sampling: SamplingParams,
        stop: StopRule,
        name="strong",
    ):
        self.server, self.tokenizer, self.sampling, self.stop, self.name = server, tokenizer, sampling, stop, name
        self.share_prefixes = True  # what a local pilot's engine takes from the strong one (DecodeContext.engine)

    def reseed(self, seed: int) -> None:
        self.sampling = dataclasses.replace(self.sampling, seed=seed)

    def with_settings(self, sampling: SamplingParams, stop: StopRule) -> ServedEngine:
        """The same served model sampling with other settings."""
        engine = copy.copy(self)
        engine.sampling, engine.stop = sampling, stop
        return engine

    def start(self, prompts: list[Prompt], items: list[int] | None = None, copies: int = 1) -> ServedRows:
        """`copies` rows per prompt; each prompt within the server's context, or an error naming it."""
        ids = encode_prompts(self.tokenizer, prompts, self.server.context)
        rows = [Row(p) for p in range(len(prompts)) for _ in range(copies)]
        return ServedRows(self, prompts, ids, items, rows)

    def text(self, row: Row) -> str:
        return row_text(self.tokenizer, self.stop, row)


class ServedRows(RowSet):
    """The rows a served engine writes for one batch of prompts (the operations of guide/engine.py's `Rows`)."""

    def __init__(
        self,
        engine: ServedEngine,
        prompts: list[Prompt],
        prompt_ids: list[list[int]],
        items: list[int] | None,
        rows: list[Row],
    ):
        super().__init__(engine, prompts, items, rows)
        self.prompt_ids = prompt_ids
        self._prefix: dict[int, list[int]] = {}  # row id -> the tokens before its response (after a hand-over)
        self._read: dict[int, tuple[list[int], int]] = {}  # row id -> its read tokens and where the response begins
        self._charged = [0] * len(prompts)  # per item: the tokens of the server's usage for its rows
        self._run = 0  # every request's usage

    # -- accounting (read by the decode context)
    def item_tokens(self) -> dict[str, list[int]]:
        return {self.engine.name: list(self._charged)}

    def tokens_run(self) -> dict[str, int]:
        return {self.engine.name: self._run}

    def _charge(self, prompt: int, reply: dict) -> None:
        usage = reply.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        self._charged[prompt] += tokens
        self._run += tokens

    # -- rows
    def prefix(self, row: Row) -> list[int]:
        """The tokens the server reads before the row's response: its prompt's, or the ones a hand-over kept."""
        return self._prefix.get(row.id, self.prompt_ids[row.prompt])

    def select(self, index: list[int]) -> None:
        self.rows = self._forked(index)

    def _fork(self, copy: Row, parent: Row) -> None:
        if parent.id in self._prefix:  # a copy continues from what its parent's hand-over kept
            self._prefix[copy.id] = self._prefix[parent.id]

    def halt(self, index: list[int]) -> None:
        for i in index:
            if not self.rows[i].done:
                self.rows[i].stop = StopReason.HALTED

    def sample(self, steps: int, *, sampling: SamplingParams | None = None, combine=None) -> list[Row]:
        """Up to `steps` tokens for every growing row, one request per group of identical rows; returns the
        rows still growing."""
        if combine is not None:
            raise GuideError("a served strong model cannot combine logits: use strong_backend: hf")
        engine, stop, context = self.engine, self.engine.stop, self.engine.server.context
        params = sampling or engine.sampling
        groups: dict[tuple, list[Row]] = {}
        slots: dict[int, int] = {}
        first_slot: dict[tuple, int] = {}
        for row in self.growing():  # a row's slot: its place among its item's rows, as the local engine keys draws
            slot = slots[row.prompt] = slots.get(row.prompt, -1) + 1
            key = (row.prompt, tuple(self.prefix(row)), tuple(row.ids))
            groups.setdefault(key, []).append(row)
            first_slot.setdefault(key, slot)
        bodies, members = [], []
        for key, rows in groups.items():
            row = rows[0]
            prefix = self.prefix(row)
            room = stop.max_new_tokens - len(row.ids)
            if context is not None:
                room = min(room, context - len(prefix) - len(row.ids))
            if room <= 0:  # cannot happen once rows stop at their limits; kept so a request never overflows
                for r in rows:
                    r.stop = StopReason.CONTEXT
                continue
            seed = stream_key(params.seed, self.items[row.prompt], first_slot[key], len(row.ids))
            body = {
                "prompt": prefix + row.ids,
                "max_tokens": min(steps, room),
                "n": len(rows),
                "seed": seed >> (64 - SEED_BITS),
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k if params.top_k > 0 else -1,
                "stop_token_ids": sorted(stop.eos_ids),
                "return_token_ids": True,
            }
            if not stop.eos_ids:  # a rule without end tokens (benchmarks' fixed lengths): nor the server's own
                body["ignore_eos"] = True
            bodies.append(body)
            members.append(rows)
        for rows, reply in zip(members, engine.server.complete(bodies), strict=True):
            self._charge(rows[0].prompt, reply)
            choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
            if len(choices) != len(rows):
                raise GuideError(f"strong model server: {len(choices)} choices for a request of n={len(rows)}")
            for row, choice in zip(rows, choices, strict=True):
                self._grow(row, choice, context)
        return self.growing()

    def _grow(self, row: Row, choice: dict, context: int | None) -> None:
        """Appends a choice's tokens to `row` under w2s's stop rules (end token, stop string, token limit,
        context), in the order the local engine applies them."""
        stop, tokenizer = self.engine.stop, self.engine.tokenizer
        prefix = len(self.prefix(row))
        for token in choice.get("token_ids") or []:
            if token in stop.eos_ids:
                row.stop = StopReason.EOS
                return
            row.ids.append(int(token))
            if stop.stop_strings:
                text, hit = stop.cut(tokenizer.decode(row.ids, skip_special_tokens=True))
                if hit:
                    row.text, row.stop = text, StopReason.STOP_STRING
                    return
            if len(row.ids) >= stop.max_new_tokens:
                row.stop = StopReason.MAX_NEW_TOKENS
                return
            if context is not None and prefix + len(row.ids) >= context:
                row.stop = StopReason.CONTEXT
                return
        if choice.get("finish_reason") == "stop":  # an end token of the server's own
            row.stop = StopReason.EOS

    # -- reading given text, and handing over (draft-switch decoding)
    def read(self, texts: list[str | None], final: list[bool]) -> list[Reading | None]:
        """Each row's prompt + response text `texts[i]` (None: leave it) as the server's prompt, with the
        log-probs of the response's tokens (`prompt_logprobs`); `stable` as in guide/engine.py."""
        if len(self.growing()) != len(self.rows):
            raise GuideError("Rows.read: every row must still be growing")
        tokenizer, context = self.engine.tokenizer, self.engine.server.context
        contexts, context_ids = render_prompts(tokenizer, self.prompts)
        self._context_texts = contexts
        targets, bodies = {}, []
        for i, text in enumerate(texts):
            if text is None:
                continue
            p = self.rows[i].prompt
            target = response_ids(tokenizer, contexts[p], context_ids[p], text, False)
            if context is not None and len(target.ids) >= context:
                raise GuideError(
                    f"{self.engine.name} model: row {i} is {len(target.ids)} tokens with its prompt, past the "
                    f"server's context of {context}"
                )
            targets[i] = target
            bodies.append({"prompt": target.ids, "max_tokens": 1, "temperature": 0.0, "prompt_logprobs": 0})
        replies = dict(zip(targets, self.engine.server.complete(bodies), strict=True))
        out: list[Reading | None] = []
        for i, text in enumerate(texts):
            if text is None:
                out.append(None)
                continue
            row, target, reply = self.rows[i], targets[i], replies[i]
            self._charge(row.prompt, reply)
            given = (reply.get("choices") or [{}])[0].get("prompt_logprobs") or []
            logprobs = [_logprob(given, j, token) for j, token in enumerate(target.ids) if j >= target.start]
            self._read[row.id] = (target.ids, target.start)
            stable = len(logprobs) if final[i] else stable_tokens(tokenizer, contexts[row.prompt], text, target.start)
            out.append(Reading(logprobs, target.start, stable))
        return out

    def hand_over(self, keep: dict[int, int]) -> None:
        """Rows i of `keep` keep the first `keep[i]` read tokens and continue from there; the others stop."""
        if len(self.growing()) != len(self.rows):
            raise GuideError("Rows.hand_over: every row must still be growing")
        tokenizer = self.engine.tokenizer
        for i, row in enumerate(self.rows):
            if i not in keep:
                row.stop = StopReason.HALTED
                continue
            ids, begin = self._read[row.id]
            self._prefix[row.id] = ids[:begin]
            row.ids = ids[begin : begin + keep[i]]
            prompt_ids = self.prompt_ids[row.prompt]
            if begin < len(prompt_ids):  # re-tokenising merged the prompt's tail into the draft's first token
                row.cut = tokenizer.decode(prompt_ids[begin:], skip_special_tokens=True)
            if len(row.ids) >= self.engine.stop.max_new_tokens:
                row.stop = StopReason.MAX_NEW_TOKENS


def _logprob(given: list, position: int, token: int) -> float:
    """The log-prob of `token` at `position` in vLLM's `prompt_logprobs` (one {token id: {logprob}} per position)."""
    entry = given[position] if position < len(given) else None
    found = (entry or {}).get(str(token))
    if found is None:
        raise GuideError(f"strong model server: no prompt_logprobs for token {token} at position {position}")
    return float(found["logprob"] if isinstance(found, dict) else found)
