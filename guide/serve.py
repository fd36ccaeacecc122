"""`w2s serve`: guided systems behind an OpenAI-compatible API (FastAPI + uvicorn), batching concurrent requests.

Each served model name is one guide recipe (`ServedSystem`), its models loaded once. Routes: `GET /v1/models`,
`POST /v1/chat/completions`, `POST /v1/completions` (a prompt string, read as `w2s generate` reads an
instruction: in each model's prompt format, `raw` for base models), `GET /health`.

**A served answer is `w2s generate`'s.** A request's choice j of prompt p decodes as the item `w2s generate`
decodes for p when p is the (j+1)-th occurrence of that text among its prompts: its random stream is
`item_keys` of the request's prompts, each repeated `n` times (guide/streams.py: keyed by the prompt's content,
so one user message is the instruction's text), under the recipe with the request's `seed`, `temperature`,
`top_p`, `max_tokens` (capped by the recipe's `max_new_tokens`) and `stop` (added to the recipe's) in place of its
own. Every item samples from its own stream, so the answer does not depend on what else was in its batch.

**Batching** (`Batcher`): one decoding thread takes, oldest request first, up to the system's `batch_size` choices
of the same system and settings, waiting at most `max_wait` seconds after the oldest arrived for the batch to fill;
the queue holds at most `max_queue` choices (past it: 503).

**Streaming** sends the answer when its batch is decided, in one chunk per choice, for every decoder (the
engine has no per-token callback): a role chunk at once, then the text, the finish reason, usage on request
(`stream_options.include_usage`) and `[DONE]`.

**Errors** are OpenAI's bodies (`{"error": {"message", "type", "param", "code"}}`): 400 for a bad field, a field
w2s cannot honour at a value other than its default, or a prompt past a model's context; 401 for a missing or
wrong key; 404 for an unknown model or route; 413 for a body past `max_body`; 503 when the queue is full. A client
that disconnects takes its choices off the queue (a batch already decoding finishes; its answer is dropped).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import json
import logging
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from w2s.guide.commands import GuideError, UserError
from w2s.guide.config import GuideConfig
from w2s.guide.models import chat_prompt, load_tokenizer
from w2s.guide.preflight import check_guide, prompt_fits
from w2s.guide.run import Guide
from w2s.guide.streams import Prompt, item_keys
from w2s.guide.types import Generation

logger = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # bytes of a request body (--max_body)
FINISH = {"eos": "stop", "stop_string": "stop", "max_new_tokens": "length", "context": "length"}
COMMON = {"model", "max_tokens", "temperature", "top_p", "seed", "stop", "stream", "stream_options", "n", "user"}
FIELDS = {"chat": COMMON | {"messages", "max_completion_tokens"}, "completion": COMMON | {"prompt"}}
# fields w2s cannot honour: accepted at the value a client sends when it does not use them, else a 400
UNSUPPORTED = {
    "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs", "logit_bias", "echo", "best_of", "suffix",
    "tools", "tool_choice", "functions", "function_call", "response_format", "parallel_tool_calls", "service_tier",
    "store", "metadata", "modalities", "audio", "prediction", "reasoning_effort",
}  # fmt: skip
DEFAULTS = {"best_of": 1, "tool_choice": "none", "response_format": {"type": "text"}, "parallel_tool_calls": True}


class APIError(Exception):
    """An answer other than 200, as OpenAI's error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None, kind=None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


class ClientGone(Exception):
    """The client of a request went away before its answer."""


class ServedSystem:
    """One served model name: a guide recipe's models, loaded once, and what each request is checked against."""

    def __init__(self, name: str, config: GuideConfig):
        check_guide(config, [])  # models, formats, vocabularies: before any weights load
        self.name, self.config = name, config
        self.guide = Guide(config)
        self.fits = prompt_fits(config)  # its own tokenizers: the decoding thread uses the engine's
        strong = [f for f in self.fits if f.spec.role == "strong_model"]
        self.context = (
            strong[0].limit if strong else getattr(getattr(self.guide.engine, "server", None), "context", None)
        )
        self.counter = (
            strong[0].tokenizer
            if strong
            else load_tokenizer(
                config.strong_tokenizer or config.strong_model, trust_remote_code=config.trust_remote_code,
                prompt_format=config.strong_prompt_format, format_key="strong_prompt_format",
            )
        )  # fmt: skip
        self._variants: OrderedDict[tuple, Guide] = OrderedDict()  # settings -> guide (decoding thread only)

    def card(self, created: int) -> dict:
        c = self.config
        return {
            "id": self.name, "object": "model", "created": created, "owned_by": "w2s", "max_model_len": self.context,
            "w2s": {"decoder": c.decoder, "strong_model": c.strong_model, "batch_size": c.batch_size,
                    "max_new_tokens": c.max_new_tokens},
        }  # fmt: skip

    def tokens(self, prompt: Prompt) -> int:
        """The prompt's tokens in the strong model's prompt format."""
        return len(self.counter(chat_prompt(self.counter, prompt), add_special_tokens=False).input_ids)

    def tokens_of(self, text: str) -> int:
        """A completion's tokens in the strong model's tokenizer."""
        return len(self.counter(text, add_special_tokens=False).input_ids) if text else 0

    def check(self, prompt: Prompt, number: int) -> int:
        """The prompt's strong-model tokens; an APIError if it is empty or past a model's context."""
        if isinstance(prompt, list) and not "".join(m["content"] for m in prompt).strip():
            raise APIError(400, "the messages are empty", param="messages")
        n = None
        for fit in self.fits:
            try:
                count = fit.check(prompt, number)
            except GuideError as e:
                code = "context_length_exceeded" if "context" in str(e) else None
                raise APIError(
                    400, str(e), param="prompt" if isinstance(prompt, str) else "messages", code=code
                ) from None
            n = count if fit.spec.role == "strong_model" else n
        return self.tokens(prompt) if n is None else n

    def decode(self, key: tuple, config: GuideConfig, prompts: list[Prompt], items: list[int]) -> list[Generation]:
        """One batch under the settings `key` (`config`), by the decoding thread."""
        guide = self._variants.get(key)
        if guide is None:
            guide = self.guide if config == self.config else self.guide.with_config(config)
            self._variants[key] = guide
            while len(self._variants) > 32:
                self._variants.popitem(last=False)
        self._variants.move_to_end(key)
        return guide.decode(prompts, items)


@dataclass(eq=False)
class Entry:
    """One choice waiting for its batch."""

    system: ServedSystem
    key: tuple
    config: GuideConfig
    prompt: Prompt
    item: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    arrived: float = field(default_factory=time.monotonic)

    def resolve(self, result) -> None:
        """Hands the generation (or an APIError) to the request's coroutine, unless it is gone."""

        def give():
            if not self.future.done():
                if isinstance(result, BaseException):
                    self.future.set_exception(result)
                else:
                    self.future.set_result(result)

        self.loop.call_soon_threadsafe(give)


class Batcher:
    """The queue of choices and the one thread that decodes them, batch by batch (see the module docstring)."""

    def __init__(self, max_queue: int = 1024, max_wait: float = 0.02):
        self.max_queue, self.max_wait = max_queue, max_wait
        self.queue: list[Entry] = []
        self.decoding = 0
        self.dropped = 0  # choices taken off the queue because their client went away
        self.cond = threading.Condition()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, name="w2s-serve-decoder", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def submit(self, entries: list[Entry]) -> None:
        with self.cond:
            if len(self.queue) + len(entries) > self.max_queue:
                raise APIError(
                    503, f"overloaded: {len(self.queue)} choices are queued (at most {self.max_queue}); retry later",
                    code="overloaded",
                )  # fmt: skip
            self.queue += entries
            self.cond.notify_all()

    def cancel(self, entries: list[Entry]) -> None:
        """Takes the choices of a request whose client went away off the queue."""
        gone = set(map(id, entries))
        with self.cond:
            before = len(self.queue)
            self.queue = [e for e in self.queue if id(e) not in gone]
            self.dropped += before - len(self.queue)

    def status(self) -> dict:
        with self.cond:
            return {"queued": len(self.queue), "decoding": self.decoding, "dropped": self.dropped}

    def _next_batch(self) -> list[Entry] | None:
        with self.cond:
            while not self.stopped:
                if not self.queue:
                    self.cond.wait()
                    continue
                head = self.queue[0]
                same = [e for e in self.queue if e.system is head.system and e.key == head.key]
                wait = head.arrived + self.max_wait - time.monotonic()
                if len(same) >= head.system.config.batch_size or wait <= 0:
                    batch = same[: head.system.config.batch_size]
                    taken = set(map(id, batch))
                    self.queue = [e for e in self.queue if id(e) not in taken]
                    self.decoding = len(batch)
                    return batch
                self.cond.wait(wait)
        return None

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._decode(batch)
            finally:
                with self.cond:
                    self.decoding = 0

    def _decode(self, batch: list[Entry]) -> None:
        head = batch[0]
        try:
            gens = head.system.decode(head.key, head.config, [e.prompt for e in batch], [e.item for e in batch])
        except Exception as e:
            if len(batch) > 1:  # one request's mistake fails that request alone
                for entry in batch:
                    self._decode([entry])
                return
            if isinstance(e, UserError):
                head.resolve(APIError(400, str(e)))
            else:
                logger.exception("w2s serve: decoding failed (%s)", head.system.name)
                head.resolve(APIError(500, "the server failed to decode this request (see its log)"))
            return
        for entry, gen in zip(batch, gens, strict=True):
            entry.resolve(gen)


@dataclass
class Job:
    """A parsed request: its system, its choices' prompts and streams, their settings, how to answer."""

    kind: str  # chat | completion
    system: ServedSystem
    prompts: list[Prompt]  # one per choice
    items: list[int]
    key: tuple
    config: GuideConfig
    prompt_tokens: int
    stream: bool = False
    include_usage: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    def head(self) -> dict:
        prefix, obj = ("chatcmpl", "chat.completion") if self.kind == "chat" else ("cmpl", "text_completion")
        return {"id": f"{prefix}-{self.id}", "object": obj, "created": self.created, "model": self.system.name}

    def usage(self, gens: list[Generation]) -> dict:
        completion = sum(self.system.tokens_of(g.text) for g in gens)
        tokens: dict[str, int] = {}
        for g in gens:
            for model, n in g.tokens.items():
                tokens[model] = tokens.get(model, 0) + n
        return {
            "prompt_tokens": self.prompt_tokens, "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
            "w2s": {"tokens": tokens, "seconds": sum(g.seconds for g in gens),
                    "batch_seconds": max(g.batch_seconds for g in gens)},
        }  # fmt: skip

    def choice(self, index: int, gen: Generation) -> dict:
        extra = {k: v for k, v in dataclasses.asdict(gen).items() if k != "text"}  # eval/endpoint.py reads it
        finish = FINISH.get(gen.stop, "stop")
        if self.kind == "chat":
            message = {"role": "assistant", "content": gen.text}
            return {"index": index, "message": message, "finish_reason": finish, "logprobs": None, "w2s": extra}
        return {"index": index, "text": gen.text, "finish_reason": finish, "logprobs": None, "w2s": extra}

    def answer(self, gens: list[Generation]) -> dict:
        choices = [self.choice(i, g) for i, g in enumerate(gens)]
        return {**self.head(), "choices": choices, "usage": self.usage(gens)}

    def chunks(self, gens: list[Generation] | None):
        """The stream's chunks: the opening ones (`gens` None), or the rest once decided."""
        head = {**self.head(), "object": "chat.completion.chunk" if self.kind == "chat" else "text_completion"}
        n = len(self.prompts)
        if gens is None:
            if self.kind == "chat":
                for i in range(n):
                    delta = {"role": "assistant", "content": ""}
                    yield {**head, "choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}]}
            return
        for i, g in enumerate(gens):
            finish = FINISH.get(g.stop, "stop")
            if self.kind == "chat":
                yield {**head, "choices": [{"index": i, "delta": {"content": g.text}, "logprobs": None,
                                            "finish_reason": None}]}  # fmt: skip
                yield {**head, "choices": [{"index": i, "delta": {}, "logprobs": None, "finish_reason": finish}]}
            else:
                yield {**head, "choices": [{"index": i, "text": g.text, "logprobs": None, "finish_reason": finish}]}
        if self.include_usage:
            yield {**head, "choices": [], "usage": self.usage(gens)}


async def _disconnected(request: Request) -> None:
    """Returns once the client of `request` (its body read) went away."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieved(future: asyncio.Future) -> None:
    with contextlib.suppress(asyncio.CancelledError):
        future.exception()


def _number(body: dict, key: str, *, integer: bool = False):
    value = body.get(key)
    if value is None:
        return None
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise APIError(400, f"{key}: expected {'an integer' if integer else 'a number'}, got {value!r}", param=key)
    return value


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise APIError(400, "messages: expected a non-empty list of {role, content}", param="messages")
    out = []
    for i, m in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(m, dict) or m.get("role") not in ("system", "developer", "user", "assistant"):
            raise APIError(400, f"{where}: expected {{role: system | user | assistant, content}}", param=where)
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            raise APIError(400, f"{where}: w2s serve does not support {', '.join(extra)}", param=f"{where}.{extra[0]}")
        content = m.get("content")
        if isinstance(content, list):  # content parts: text only
            if not all(
                isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
            ):
                raise APIError(400, f"{where}.content: only text parts are supported", param=f"{where}.content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise APIError(400, f"{where}.content: expected a string", param=f"{where}.content")
        out.append({"role": "system" if m["role"] == "developer" else m["role"], "content": content})
    return out


def _completion_prompts(value) -> list[str]:
    prompts = [value] if isinstance(value, str) else value
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise APIError(
            400, "prompt: expected a string or a list of strings (token ids are not supported)", param="prompt"
        )
    return prompts


def _at_default(key: str, value) -> bool:
    return value in (None, False, 0, "", [], {}) or DEFAULTS.get(key, object()) == value


class Service:
    """The systems, the batcher and the routes (`app`)."""

    def __init__(self, systems: dict[str, ServedSystem], *, api_key: str | None = None, max_body: int = MAX_BODY,
                 max_queue: int = 1024, max_wait: float = 0.02):  # fmt: skip
        self.systems, self._key, self.max_body = systems, api_key, max_body
        self.batcher = Batcher(max_queue, max_wait)
        self.created = int(time.time())
        self.app = self._app()

    # -- requests
    def authorize(self, request: Request) -> None:
        if self._key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self._key.encode()):
            raise APIError(
                401, "missing or wrong API key: send it as 'Authorization: Bearer <key>'",
                code="invalid_api_key", kind="authentication_error",
            )  # fmt: skip

    async def body(self, request: Request) -> dict:
        self.authorize(request)
        cap = self.max_body
        too_big = APIError(413, f"the request body is past the server's limit of {cap} bytes", code="body_too_large")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > 16 * cap:
            raise too_big
        data, size = bytearray(), 0
        async for chunk in request.stream():  # read to the end (the client sees the answer), keep at most `cap`
            size += len(chunk)
            if size > 16 * cap:
                raise too_big
            if size <= cap:
                data += chunk
        if size > cap:
            raise too_big
        try:
            body = json.loads(data)
        except ValueError:
            raise APIError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise APIError(400, "the request body must be a JSON object")
        return body

    def parse(self, body: dict, kind: str) -> Job:
        """The request as a `Job`, or the APIError that names what is wrong with it."""
        model = body.get("model")
        if not isinstance(model, str):
            raise APIError(400, "model: required (a served model's name: GET /v1/models)", param="model")
        if model not in self.systems:
            raise APIError(
                404, f"model {model!r} is not served here (it serves: {', '.join(self.systems)})",
                param="model", code="model_not_found",
            )  # fmt: skip
        system = self.systems[model]
        for key in body:
            if key in FIELDS[kind]:
                continue
            if key in UNSUPPORTED:
                if not _at_default(key, body[key]):
                    raise APIError(
                        400, f"{key}: w2s serve cannot honour {key}={body[key]!r} (system {model!r}); leave it unset",
                        param=key, code="unsupported_value",
                    )  # fmt: skip
                continue
            raise APIError(400, f"unknown field {key!r}", param=key, code="unknown_field")
        n = _number(body, "n", integer=True) or 1
        if n < 1 or n > self.batcher.max_queue:
            raise APIError(400, f"n: expected 1..{self.batcher.max_queue}, got {n}", param="n")
        if kind == "chat":
            prompts: list[Prompt] = [_messages(body.get("messages"))]
        else:
            prompts = _completion_prompts(body.get("prompt"))
        prompt_tokens = sum(system.check(p, i) for i, p in enumerate(prompts, 1))
        key, config = self.settings(system, body, kind)
        per_choice = [p for p in prompts for _ in range(n)]
        options = body.get("stream_options") or {}
        if not isinstance(options, dict) or set(options) - {"include_usage"}:
            raise APIError(400, "stream_options: only include_usage is supported", param="stream_options")
        stream = body.get("stream") or False
        if not isinstance(stream, bool):
            raise APIError(400, f"stream: expected true or false, got {stream!r}", param="stream")
        return Job(kind, system, per_choice, item_keys(per_choice), key, config, prompt_tokens, stream,
                   bool(options.get("include_usage")))  # fmt: skip

    def settings(self, system: ServedSystem, body: dict, kind: str) -> tuple[tuple, GuideConfig]:
        """The request's sampling settings over the recipe's (see the module docstring), checked as the recipe's."""
        c = system.config
        limit = _number(body, "max_completion_tokens", integer=True) if kind == "chat" else None
        limit = limit if limit is not None else _number(body, "max_tokens", integer=True)
        if limit is not None and limit < 1:
            raise APIError(400, f"max_tokens: expected at least 1, got {limit}", param="max_tokens")
        stop = body.get("stop")
        stop = [stop] if isinstance(stop, str) else stop or []
        if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
            raise APIError(400, "stop: expected a string or a list of non-empty strings", param="stop")
        given = {
            "seed": _number(body, "seed", integer=True),
            "temperature": _number(body, "temperature"),
            "top_p": _number(body, "top_p"),
            "max_new_tokens": None if limit is None else min(limit, c.max_new_tokens),
            "stop": [*c.stop, *(s for s in stop if s not in c.stop)] if stop else None,
        }
        changes = {k: v for k, v in given.items() if v is not None}
        try:
            config = dataclasses.replace(c, **changes) if changes else c
        except (GuideError, ValueError) as e:
            named = [k for k in changes if k in str(e)] or list(changes)
            param = {"max_new_tokens": "max_tokens"}.get(named[0], named[0])
            raise APIError(400, f"{param}: {e}", param=param) from None
        key = (config.seed, config.temperature, config.top_p, config.max_new_tokens, tuple(config.stop))
        return key, config

    # -- answers
    def entries(self, job: Job) -> list[Entry]:
        loop = asyncio.get_running_loop()
        return [
            Entry(job.system, job.key, job.config, prompt, item, loop, loop.create_future())
            for prompt, item in zip(job.prompts, job.items, strict=True)
        ]

    async def wait(self, entries: list[Entry], request: Request) -> list[Generation]:
        """The choices' generations; a client that goes away first (a stream sends nothing until its answer is
        decided, so this listens for the disconnect) takes its choices off the queue."""
        together = asyncio.gather(*(e.future for e in entries))
        together.add_done_callback(_retrieved)  # a gathering cancelled when its client went away is read by nobody
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({together, gone}, return_when=asyncio.FIRST_COMPLETED)
            if not together.done():
                raise ClientGone
            return together.result()
        except (asyncio.CancelledError, ClientGone):
            self.batcher.cancel(entries)
            together.cancel()
            raise
        finally:
            gone.cancel()

    async def stream(self, job: Job, entries: list[Entry], request: Request):
        """Server-sent events of a streamed answer (its text in one chunk per choice, when decided)."""
        events = lambda chunks: "".join(f"data: {json.dumps(c)}\n\n" for c in chunks)  # noqa: E731 (one write each)
        if opening := events(job.chunks(None)):  # chat: each choice's role at once
            yield opening
        try:
            gens = await self.wait(entries, request)
        except ClientGone:
            return
        except APIError as e:
            yield events([e.body()]) + "data: [DONE]\n\n"
        else:
            yield events(job.chunks(gens)) + "data: [DONE]\n\n"

    async def complete(self, request: Request, kind: str):
        job = self.parse(await self.body(request), kind)
        entries = self.entries(job)
        self.batcher.submit(entries)
        if job.stream:
            return StreamingResponse(self.stream(job, entries, request), media_type="text/event-stream")
        try:
            return JSONResponse(job.answer(await self.wait(entries, request)))
        except ClientGone:
            return Response(status_code=499)  # nobody reads it (nginx's "client closed request")

    def _app(self) -> FastAPI:
        app = FastAPI(title="w2s serve", docs_url=None, redoc_url=None, openapi_url=None)

        @app.exception_handler(APIError)
        async def api_error(request: Request, e: APIError):
            return e.response()

        @app.exception_handler(HTTPException)
        async def http_error(request: Request, e: HTTPException):
            message = f"no route {request.method} {request.url.path}" if e.status_code in (404, 405) else str(e.detail)
            return APIError(e.status_code, message).response()

        @app.exception_handler(Exception)
        async def internal(request: Request, e: Exception):
            logger.exception("w2s serve: %s %s failed", request.method, request.url.path)
            return APIError(500, "the server failed to answer (see its log)").response()

        @app.get("/health")
        async def health():
            return {"status": "ok", "models": list(self.systems), **self.batcher.status()}

        @app.get("/v1/models")
        async def models(request: Request):
            self.authorize(request)
            return {"object": "list", "data": [s.card(self.created) for s in self.systems.values()]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            return await self.complete(request, "chat")

        @app.post("/v1/completions")
        async def completions(request: Request):
            return await self.complete(request, "completion")

        return app


def load_systems(configs: dict[str, GuideConfig]) -> dict[str, ServedSystem]:
    """Each named guide recipe's models, loaded once."""
    systems = {}
    for name, config in configs.items():
        try:
            systems[name] = ServedSystem(name, config)
        except UserError as e:
            raise GuideError(f"system {name!r}: {e}") from None
    return systems


def serve(
    configs: dict[str, GuideConfig],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_body: int = MAX_BODY,
    max_queue: int = 1024,
    max_wait: float = 0.02,
    threads: int | None = None,
) -> None:
    """Loads each system, then serves them on `host`:`port` (0: a free port) until interrupted; prints the base URL
    once it listens. `threads`: torch's CPU threads."""
    if threads:
        torch.set_num_threads(threads)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))  # before the models load: a port in use is said at once
    except OSError as e:
        sock.close()
        raise GuideError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    try:
        service = Service(
            load_systems(configs), api_key=api_key, max_body=max_body, max_queue=max_queue, max_wait=max_wait
        )
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
        service.batcher.start()
        shown = f"[{host}]" if ":" in host else host
        print(f"w2s serve: {', '.join(service.systems)} at http://{shown}:{sock.getsockname()[1]}/v1", flush=True)
        config = uvicorn.Config(service.app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            service.batcher.stop()
    finally:
        sock.close()
