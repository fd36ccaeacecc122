"""Judges: who decides whether a system's output beats the reference output.

Two kinds. A **reward judge** scores each output alone (`rewards`); a pair's
preference follows from the two rewards (the tiny world's gold reward: the
higher reward wins, equal rewards tie; a reward model: the Bradley–Terry
probability `sigmoid(r_2 - r_1)`). A **pairwise judge** reads both outputs
(`compare`), AlpacaEval-style, in both orders, and turns its token
log-probabilities for "a" and "b" into the probability that the system wins.

Preferences follow AlpacaEval's encoding: 1 the reference (output_1) wins,
2 the system (output_2) wins, 1.5 a tie, values between are soft preferences.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# AlpacaEval-style pairwise prompt (w2s's own wording); {instruction}, {output_a}, {output_b} are filled in.
PAIRWISE_PROMPT = """You compare two answers to the same instruction and pick the one a careful human would prefer: \
the more helpful, correct and well-written one. Ignore their order and their length.

## Instruction
{instruction}

## Output ({label_a})
{output_a}

## Output ({label_b})
{output_b}

Which output is better? Answer with a single word: {label_a} or {label_b}."""
LABELS = ("a", "b")
PROMPT_VERSION = "2"


class JudgeError(RuntimeError):
    """A judge that cannot run: missing model, unreachable server, unusable answer."""


def pairwise_prompt(instruction: str, output_a: str, output_b: str, labels: tuple[str, str] = LABELS) -> str:
    """The judge's prompt for one ordered pair, the outputs named by `labels`."""
    return PAIRWISE_PROMPT.format(
        instruction=instruction, output_a=output_a, output_b=output_b, label_a=labels[0], label_b=labels[1]
    )


def prob_b(logprob_a: float, logprob_b: float) -> float:
    """P(b) among the two answers, from their log-probabilities."""
    if logprob_a == -math.inf and logprob_b == -math.inf:
        return 0.5
    m = max(logprob_a, logprob_b)
    ea, eb = math.exp(logprob_a - m), math.exp(logprob_b - m)
    return eb / (ea + eb)


def preference_from_orders(p_b_ref_first: float, p_b_sys_first: float) -> float:
    """AlpacaEval preference in [1, 2] from the two orders' P(b): (reference, system) then (system, reference)."""
    p_system = 0.5 * (p_b_ref_first + (1.0 - p_b_sys_first))
    return 1.0 + p_system


def preference_from_rewards(r_1: float, r_2: float, *, soft: bool) -> float:
    """1 + P(output_2 wins): Bradley–Terry `sigmoid(r_2 - r_1)` if `soft`, else 2 / 1 / 1.5 for win / loss / tie."""
    if soft:
        d = r_2 - r_1
        return 1.0 + (1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d)))
    return 2.0 if r_2 > r_1 else 1.0 if r_2 < r_1 else 1.5


class Judge:
    """What every judge has: a name (AlpacaEval's `annotator`) and a key that identifies its verdicts."""

    name: str = "judge"
    pairwise: bool = False
    soft: bool = False

    def cache_id(self) -> str:
        return self.name

    def rewards(self, instructions: list[str], outputs: list[str]) -> list[float]:
        raise NotImplementedError

    def compare(self, instructions: list[str], outputs_1: list[str], outputs_2: list[str]) -> list[dict]:
        """Per pair: {"preference": 1..2, ...details}; output_1 is the reference."""
        raise NotImplementedError


class GoldJudge(Judge):
    """The tiny world's gold reward (exact sentiment and grammar): the higher reward wins."""

    name = "tiny_gold_reward"

    def rewards(self, instructions, outputs):
        from data.world import gold_reward

        return gold_reward(instructions, outputs)


class RewardModelJudge(Judge):
    """A sequence-classification reward model (one logit); preference by a Bradley–Terry sigmoid."""

    soft = True

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        trust_remote_code: bool = False,
        dtype: str = "auto",
        device: str | None = None,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from guide.models import DTYPES, resolve_model_path

        path = resolve_model_path(model)
        self.name = f"reward_model:{model}"
        self.model_id = model
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            self.model = AutoModelForSequenceClassification.from_pretrained(
                path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=DTYPES[dtype]
            ).eval()
            if device is not None:
                self.model.to(device)
        except OSError as e:
            raise JudgeError(f"reward model {model!r}: cannot load it as a local folder or hub id ({e})") from e
        if self.model.config.num_labels != 1:
            raise JudgeError(
                f"reward model {model!r}: has {self.model.config.num_labels} labels, expected 1 (a scalar reward)"
            )
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "left"
        self.batch_size = batch_size
        self.max_length = max_length

    def text(self, instruction: str, output: str) -> str:
        """The conversation the reward model scores, in its own chat template when it has one."""
        if self.tokenizer.chat_template is None:
            return f"{instruction}\n{output}"
        messages = [{"role": "user", "content": instruction}, {"role": "assistant", "content": output}]
        return self.tokenizer.apply_chat_template(messages, tokenize=False)

    @torch.no_grad()
    def rewards(self, instructions, outputs):
        texts = [self.text(i, o) for i, o in zip(instructions, outputs, strict=True)]
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            ).to(self.model.device)
            out += self.model(**batch).logits[:, 0].float().tolist()
        return out


class PairwiseJudge(Judge):
    """A judge that reads both outputs, asked once in each order; subclasses give the two labels' log-probabilities."""

    pairwise = True
    labels: tuple[str, str] = LABELS

    def cache_id(self) -> str:
        return f"{self.name}:prompt{PROMPT_VERSION}:{','.join(self.labels)}"

    def label_logprobs_batch(self, prompts: list[str]) -> list[tuple[float, float]]:
        raise NotImplementedError

    def compare(self, instructions, outputs_1, outputs_2):
        triples = list(zip(instructions, outputs_1, outputs_2, strict=True))
        prompts = [pairwise_prompt(i, o1, o2, self.labels) for i, o1, o2 in triples]  # reference first
        prompts += [pairwise_prompt(i, o2, o1, self.labels) for i, o1, o2 in triples]  # system first
        lps = self.label_logprobs_batch(prompts)
        n = len(triples)
        out = []
        for k in range(n):
            p1, p2 = prob_b(*lps[k]), prob_b(*lps[n + k])
            out.append({"preference": preference_from_orders(p1, p2), "p_b_ref_first": p1, "p_b_sys_first": p2})
        return out


def _labels(labels) -> tuple[str, str]:
    labels = tuple(str(x).strip() for x in (labels.split(",") if isinstance(labels, str) else labels))
    if len(labels) != 2 or not all(labels) or labels[0].lower() == labels[1].lower():
        raise JudgeError(f"judge_labels {labels!r}: give two different non-empty labels, e.g. 'a,b'")
    return labels


class LocalLLMJudge(PairwiseJudge):
    """A local causal LM asked AlpacaEval's question in both orders; P(b) from its next-token log-probabilities."""

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 8,
        max_length: int = 1024,
        trust_remote_code: bool = False,
        labels: tuple[str, str] | str = LABELS,
        dtype: str = "auto",
        device: str | None = None,
    ):
        from guide.models import load_model_and_tokenizer

        self.labels = _labels(labels)
        self.name = f"llm:{model}"
        self.model, self.tokenizer = load_model_and_tokenizer(
            model, trust_remote_code=trust_remote_code, dtype=dtype, device=device
        )
        self.tokenizer.truncation_side = "left"  # the question sits at the end: keep it
        self.label_ids = [self.tokenizer.encode(label, add_special_tokens=False)[0] for label in self.labels]
        if self.label_ids[0] == self.label_ids[1]:
            raise JudgeError(f"LLM judge {model!r}: its tokenizer gives {self.labels} the same first token")
        self.batch_size = batch_size
        self.max_length = max_length

    @torch.no_grad()
    def label_logprobs_batch(self, prompts: list[str]) -> list[tuple[float, float]]:
        """(log P(label a), log P(label b)) of the judge's first answer token for each prompt."""
        from guide.models import chat_prompt

        texts = [chat_prompt(self.tokenizer, p) for p in prompts]
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_length,
                add_special_tokens=False,
            ).to(self.model.device)
            mask = batch["attention_mask"]
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding: positions start at each text's start
            logits = self.model(**batch, position_ids=position_ids).logits[:, -1].float()  # (batch, vocab)
            logp = torch.log_softmax(logits, dim=-1)[:, self.label_ids]
            out += [tuple(row) for row in logp.tolist()]
        return out


class HTTPJudge(PairwiseJudge):
    """An OpenAI-compatible `/chat/completions` server asked for one token with log-probabilities.

    Base URL and key come from environment variables (names set in the recipe); the key is sent
    as a bearer token and never logged.
    """

    def __init__(
        self,
        model: str,
        *,
        labels: tuple[str, str] | str = LABELS,
        base_url_env: str = "W2S_JUDGE_BASE_URL",
        api_key_env: str = "W2S_JUDGE_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
    ):
        base = os.environ.get(base_url_env) or os.environ.get("OPENAI_BASE_URL")
        if not base:
            raise JudgeError(
                f"http judge: set {base_url_env} (or OPENAI_BASE_URL) to the server's base URL, e.g. http://host:8000/v1"
            )
        self.url = base.rstrip("/") + "/chat/completions"
        self._key = os.environ.get(api_key_env) or os.environ.get("OPENAI_API_KEY")
        self.model_id = model
        self.name = f"http:{model}"
        self.labels = _labels(labels)
        self.concurrency = concurrency
        self.timeout = timeout
        self.retries = retries

    def __repr__(self) -> str:  # never show the key
        return f"HTTPJudge(model={self.model_id!r}, url={self.url!r})"

    def _post(self, body: dict) -> dict:
        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        delay = 1.0
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                retry = e.code == 429 or e.code >= 500
                detail = f"HTTP {e.code} {e.reason}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
                retry, detail = True, f"{e.__class__.__name__}: {getattr(e, 'reason', e)}"
            if not retry or attempt == self.retries:
                raise JudgeError(f"http judge {self.url}: {detail}")
            logger.warning("http judge %s: %s; retrying in %.0f s", self.url, detail, delay)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def label_logprobs(self, prompt: str) -> tuple[float, float]:
        """(log P(label a), log P(label b)) of the served model's first answer token."""
        body = {
            "model": self.model_id,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        reply = self._post(body)
        try:
            choice = reply["choices"][0]
            content = choice.get("logprobs") or {}
            top = content["content"][0]["top_logprobs"] if content.get("content") else []
        except (KeyError, IndexError, TypeError) as e:
            raise JudgeError(f"http judge {self.url}: reply is not an OpenAI chat completion ({e!r})") from e
        a, b = (label.lower() for label in self.labels)
        found: dict[str, float] = {}
        for entry in top:
            token = str(entry.get("token", "")).strip().lower().strip("()")
            if token in (a, b) and token not in found:
                found[token] = float(entry["logprob"])
        if not found:  # no log-probabilities for either label: read the answer's text instead
            text = str((choice.get("message") or {}).get("content") or "").strip().lower().strip("()")
            if text.startswith(a) != text.startswith(b):
                return (0.0, -math.inf) if text.startswith(a) else (-math.inf, 0.0)
            logger.warning("http judge: answer %r names neither %s nor %s; counting a tie", text[:20], a, b)
            return (0.0, 0.0)
        floor = min(float(e["logprob"]) for e in top)  # an unlisted label is at most as likely as the last listed
        return (found.get(a, floor), found.get(b, floor))

    def label_logprobs_batch(self, prompts: list[str]) -> list[tuple[float, float]]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.label_logprobs, prompts))


def check_judge(config) -> None:
    """Cheap checks of the judge a config names, run before any generation (a missing URL fails early)."""
    if config.judge == "http" and not (os.environ.get(config.judge_base_url_env) or os.environ.get("OPENAI_BASE_URL")):
        raise JudgeError(f"http judge: set {config.judge_base_url_env} (or OPENAI_BASE_URL) to the server's base URL")
    if config.judge in ("llm", "http"):
        _labels(config.judge_labels)
    if config.judge in ("reward_model", "llm"):
        spec = str(config.judge_model)
        looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1
        if looks_local and not Path(spec).expanduser().is_dir():
            raise JudgeError(f"judge_model {spec!r}: no such local folder")


def make_judge(config) -> Judge:
    """The judge an EvalConfig names."""
    kind = config.judge
    if kind == "gold":
        return GoldJudge()
    kwargs = {
        "batch_size": config.judge_batch_size,
        "max_length": config.judge_max_length,
        "dtype": config.judge_dtype,
        "device": config.judge_device,
    }
    if kind == "reward_model":
        return RewardModelJudge(config.judge_model, trust_remote_code=config.trust_remote_code, **kwargs)
    if kind == "llm":
        return LocalLLMJudge(
            config.judge_model, trust_remote_code=config.trust_remote_code, labels=config.judge_labels, **kwargs
        )
    if kind == "http":
        return HTTPJudge(
            config.judge_model,
            labels=config.judge_labels,
            base_url_env=config.judge_base_url_env,
            api_key_env=config.judge_api_key_env,
            concurrency=config.judge_batch_size,
        )
    raise JudgeError(f"unknown judge {kind!r}")
