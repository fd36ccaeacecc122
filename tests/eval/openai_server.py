"""A tiny OpenAI-compatible server for tests: `/v1/chat/completions` answering one token with real log-probabilities.

It serves a local causal LM on 127.0.0.1 only (port chosen by the OS), applies the model's
chat template to the messages, and returns the top log-probabilities of the next token, as
OpenAI's API does with `logprobs: true, top_logprobs: k`. It checks the bearer key.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch

from w2s.guide.models import chat_prompt


class TinyOpenAIServer:
    """Start with `with TinyOpenAIServer(model, tokenizer, key) as server: server.base_url`."""

    def __init__(self, model, tokenizer, api_key: str | None = None):
        self.model, self.tokenizer, self.api_key = model, tokenizer, api_key
        self.requests: list[dict] = []
        self.auth_headers: list[str | None] = []
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @torch.no_grad()
    def next_token_logprobs(self, messages: list[dict]) -> torch.Tensor:
        text = chat_prompt(self.tokenizer, messages)
        ids = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        return torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)

    def complete(self, body: dict) -> dict:
        with self.lock:  # one forward at a time through the shared model
            logp = self.next_token_logprobs(body["messages"])
        k = min(int(body.get("top_logprobs") or 1), 20)
        top = torch.topk(logp, k)
        entries = [
            {"token": self.tokenizer.decode([int(i)]), "logprob": float(v)}
            for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ]
        first = entries[0]
        return {
            "id": "cmpl-tiny",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": first["token"]},
                    "logprobs": {"content": [{**first, "top_logprobs": entries if body.get("logprobs") else []}]},
                    "finish_reason": "length",
                }
            ],
        }

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def do_POST(self):
                server.auth_headers.append(self.headers.get("Authorization"))
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                self._send(200, server.complete(body))

            def _send(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def __enter__(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()
