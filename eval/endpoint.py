"""Systems served elsewhere: an eval system `{name, endpoint: <base URL>, model: <name>}` generates its outputs
through an OpenAI-compatible `/chat/completions` (`w2s serve`, vLLM, an API), into the same resumable, sharded
log as a local system (guide/outputs.py `decode_into`).

Each instruction is one request (its text as one user message) carrying the system's `seed`: `w2s serve` keys
an answer's random stream by (seed, prompt), so each item has its own stream and a rerun, a resumed run or
another number of processes gets the same answers (the ones `w2s generate` writes for that seed). A reply from
`w2s serve` carries each choice's whole `Generation` (`w2s`: stop reason, score, tokens per model, seconds);
another server's gives its text, finish reason, token usage and wall time. The key comes from the environment
variable `api_key_env` names, and is never logged or written.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields

from w2s.guide.commands import UserError
from w2s.guide.served import Server, ServerError
from w2s.guide.streams import Prompt
from w2s.guide.types import Generation

GENERATION_FIELDS = {f.name for f in fields(Generation)} - {"text"}
FINISH = {"stop": "eos", "length": "max_new_tokens"}  # another server's finish reason as a stop reason


class EndpointError(UserError, RuntimeError):
    """An endpoint system that cannot be reached, or whose answers cannot be read."""


@dataclass
class Endpoint:
    """The keys of an endpoint system (see the module docstring); the unset sampling keys are the server's."""

    endpoint: str
    model: str
    api_key_env: str | None = None
    seed: int = 0
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: list | None = None
    concurrency: int = 8  # requests in flight at once (the server batches them)
    timeout: float = 600.0

    @classmethod
    def of(cls, name: str, values: dict) -> Endpoint:
        """An endpoint system's keys, checked; an error names the system and the key."""
        types = {"endpoint": str, "model": str, "api_key_env": str, "seed": int, "max_tokens": int,
                 "temperature": float, "top_p": float, "stop": list, "concurrency": int, "timeout": float}  # fmt: skip
        for key, value in values.items():
            expected = types[key]
            ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
            if value is not None and (not ok or isinstance(value, bool)):
                raise EndpointError(f"system {name!r}: key {key!r} expects {expected.__name__}, got {value!r}")
        endpoint = cls(**values)
        if endpoint.concurrency < 1:
            raise EndpointError(f"system {name!r}: key 'concurrency' must be at least 1")
        return endpoint

    def recipe(self) -> dict:
        """What the outputs depend on (a resumed run must share it): not the URL, the key or the concurrency."""
        return {"endpoint_model": self.model, "seed": self.seed, "max_tokens": self.max_tokens,
                "temperature": self.temperature, "top_p": self.top_p, "stop": self.stop}  # fmt: skip

    def server(self) -> Server:
        key = None
        if self.api_key_env:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EndpointError(f"endpoint {self.endpoint}: set {self.api_key_env} to its API key")
        return Server(self.endpoint, self.model, key, self.concurrency, timeout=self.timeout, retries=3)

    def check(self, name: str) -> None:
        """The endpoint answers and serves `model` (before anything is generated)."""
        try:
            listed = self.server().request("/models").get("data") or []
        except ServerError as e:
            raise EndpointError(f"system {name!r}: cannot reach {self.endpoint} ({e.detail})") from None
        served = [str(m.get("id")) for m in listed if isinstance(m, dict)]
        if self.model not in served:
            raise EndpointError(
                f"system {name!r}: {self.endpoint} does not serve {self.model!r} (it serves: "
                f"{', '.join(served) or 'nothing'})"
            )

    def body(self, prompt: Prompt) -> dict:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        optional = {"max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
                    "stop": self.stop}  # fmt: skip
        return {"model": self.model, "messages": messages, "seed": self.seed} | {
            k: v for k, v in optional.items() if v is not None
        }

    def decode(self, prompts: list[Prompt], items: list[int] | None = None) -> list[Generation]:
        """One batch of prompts, every request in flight at once (up to `concurrency`); `items` are unused: the
        server keys each answer's stream by its prompt and seed."""
        server = self.server()
        start = time.perf_counter()

        def ask(prompt: Prompt) -> tuple[dict, float]:
            began = time.perf_counter()
            reply = server.request("/chat/completions", self.body(prompt))
            return reply, time.perf_counter() - began

        try:
            with ThreadPoolExecutor(max_workers=min(self.concurrency, len(prompts))) as pool:
                replies = list(pool.map(ask, prompts))
        except ServerError as e:
            raise EndpointError(str(e)) from None
        wall = time.perf_counter() - start
        return [self.generation(reply, seconds, wall) for reply, seconds in replies]

    def generation(self, reply: dict, seconds: float, wall: float) -> Generation:
        try:
            choice = reply["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError) as e:
            raise EndpointError(f"endpoint {self.endpoint}: the reply is not a chat completion ({e!r})") from None
        extra = choice.get("w2s")
        if isinstance(extra, dict):  # w2s serve: the whole Generation
            return Generation(text, **{k: v for k, v in extra.items() if k in GENERATION_FIELDS})
        usage = reply.get("usage") or {}
        tokens = int(usage.get("prompt_tokens") or 0) + int(usage.get("completion_tokens") or 0)
        stop = FINISH.get(choice.get("finish_reason"), str(choice.get("finish_reason") or ""))
        return Generation(text, tokens={"endpoint": tokens}, seconds=seconds, stop=stop, batch_seconds=wall)
