"""Judges, one class per kind, serving both the data builder and the evaluation.

Two families. A **reward judge** scores each response alone: `rewards(prompts,
responses)`, one float per (prompt, response).

* `RuleJudge`: a deterministic function of prompt and response (`tiny_gold`,
  the tiny world's gold reward; `tiny_sentiment` and `tiny_topic`, each of its
  two attributes alone, for training one expert per attribute);
* `RewardModelJudge`: a sequence-classification model's score of the
  conversation. A one-logit head's logit is the reward; a two-logit head
  (bad, good) is scored `logit[1] - logit[0]`, the log-odds of "good"; any
  other head is refused;
* `ImplicitJudge`: `log pi_tuned(y|x) - log pi_untuned(y|x)`, each model
  reading the prompt in its own chat template (the pair may have different
  vocabularies).

A **pairwise judge** reads two responses: `prefer(prompts, firsts, seconds)`
is P(second wins), from the judge's log-probabilities of the two labels as its
first answer token, asked with one prompt template (`DEFAULT_PAIRWISE_TEMPLATE`).
Labels are two different, non-empty words (case-insensitively, as the HTTP
judge matches them); a local judge also needs each to be one token of its
vocabulary.

* `LocalLLMJudge`: a causal LM run here;
* `HTTPJudge`: an OpenAI-compatible `/chat/completions` server.

Both uses derive from these: the data builder's grouped `score(prompts,
responses)` (a reward judge's rewards regrouped; a pairwise judge's mean
preference of each response over the others, asked in both orders, with the
share of comparisons whose winner did not change with the order), and the
evaluation's verdicts against a reference (`w2s.eval.judges`). A prompt is chat
messages (the data builder's) or one instruction string (the evaluation's).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import os
import string
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch

from w2s.data.filters import words
from w2s.data.prompts import Messages, prompt_text
from w2s.data.recipe import JudgeConfig
from w2s.data.world.reward import SCORES
from w2s.guide.commands import UserError
from w2s.guide.models import chat_prompt, default_device, input_device, load_model_and_tokenizer, resolve_model_path
from w2s.guide.reward import RewardModel
from w2s.guide.scoring import response_logprobs
from w2s.guide.state import context_length

logger = logging.getLogger(__name__)

Prompt = Messages | str  # chat messages, or one user instruction

# The pairwise question (w2s's own AlpacaEval-style wording). PROMPT_VERSION names its text in the evaluation's
# judgement cache: change the wording, change the version.
DEFAULT_PAIRWISE_TEMPLATE = """You compare two answers to the same instruction and pick the one a careful human would \
prefer: the more helpful, correct and well-written one. Ignore their order and their length.

## Instruction
{prompt}

## Output ({label_first})
{first}

## Output ({label_second})
{second}

Which output is better? Answer with a single word: {label_first} or {label_second}."""
PROMPT_VERSION = "2"
TEMPLATE_FIELDS = {"prompt", "first", "second", "label_first", "label_second"}
LABELS = ("a", "b")


class JudgeError(UserError, RuntimeError):
    """A judge that cannot be built or run: the message names the judge and what is wrong."""


def _as_text(prompt: Prompt) -> str:
    return prompt if isinstance(prompt, str) else prompt_text(prompt)


def _as_messages(prompt: Prompt) -> Messages:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _regroup(flat: list, groups: list[list]) -> list[list]:
    out, i = [], 0
    for g in groups:
        out.append(list(flat[i : i + len(g)]))
        i += len(g)
    return out


def _loading(
    name: str, dtype: str, device: str | None, trust_remote_code: bool, prompt_format: str, device_map=None
) -> dict:
    """How a judge's model loads (the keywords of `load_model_and_tokenizer` and `RewardModel.load`); a
    `device_map` (e.g. auto) spreads it over the devices instead of putting it on `device`."""
    return {
        "dtype": dtype,
        "device": device,
        "device_map": device_map,
        "trust_remote_code": trust_remote_code,
        "prompt_format": prompt_format,
        "format_key": f"judges ({name}).prompt_format",
    }


def _load(name: str, kind: str, model: str, loader: Callable):
    try:
        return loader(resolve_model_path(model))
    except Exception as e:  # any failure to load is the recipe's problem: say which judge and model
        raise JudgeError(f"judge {name!r} ({kind}): cannot load {model!r}: {e}") from e


class Judge:
    """What every judge has: a name (the recipe's, or AlpacaEval's `annotator`) and a key for its verdicts."""

    name: str = "judge"

    def cache_id(self) -> str:
        """What identifies this judge's verdicts in a cache (the same verdicts for the same texts)."""
        return self.name

    def score(self, prompts: list[Prompt], responses: list[list[str]]) -> tuple[list[list[float]], list[dict]]:
        """Scores of each prompt's responses, and one record of extras per prompt."""
        raise NotImplementedError


# ---------------------------------------------------------------- reward judges


class RewardJudge(Judge):
    """Scores each response alone; a group's scores are its responses' rewards."""

    bradley_terry = False  # whether sigmoid(r_2 - r_1) is read as P(2 beats 1); else only the order counts

    def rewards(self, prompts: list[Prompt], responses: list[str]) -> list[float]:
        """One reward per (prompt, response)."""
        raise NotImplementedError

    def score(self, prompts, responses):
        flat_prompts = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
        flat = self.rewards(flat_prompts, [r for rs in responses for r in rs])
        return _regroup(flat, responses), [{} for _ in prompts]


def _words(prompts: list[str], responses: list[str]) -> list[float]:
    """A response's length in words (a control for matched pairing: `{judge: length, tolerance: 0.1, relative:
    true}` pairs responses within 10% of each other's length)."""
    return [float(len(words(r))) for r in responses]


# rule name -> fn(prompt texts, responses) -> rewards
RULES: dict[str, Callable[[list[str], list[str]], list[float]]] = {
    f"tiny_{name}": reward for name, reward in SCORES.items()
} | {"words": _words}  # tiny_gold, tiny_sentiment, tiny_topic, tiny_malformed; words


class RuleJudge(RewardJudge):
    """A deterministic rule of the prompt's last user message and the response (a name in RULES)."""

    def __init__(self, rule: str = "tiny_gold", *, name: str | None = None):
        self.name = name or f"rule:{rule}"
        if rule not in RULES:
            raise JudgeError(f"judge {self.name!r}: unknown rule {rule!r}: choose one of {sorted(RULES)}")
        self.fn = RULES[rule]

    def rewards(self, prompts, responses):
        return self.fn([_as_text(p) for p in prompts], responses)


class RewardModelJudge(RewardJudge):
    """A sequence-classification reward model scoring the conversation (prompt + response): guide/reward.py.

    A conversation longer than `max_length` keeps its last `max_length` tokens (where the response ends);
    how many of each prompt's responses were cut is the `truncated` field of its judged record.
    """

    bradley_terry = True

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        batch_size: int = 8,
        max_length: int = 1024,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | dict | None = None,
        trust_remote_code: bool = False,
        prompt_format: str = "chat",
    ):
        self.name = name or f"reward_model:{model}"
        self.model_id = model

        def load(path):
            return RewardModel.load(
                path,
                **_loading(self.name, dtype, device, trust_remote_code, prompt_format, device_map),
                batch_size=batch_size,
                max_length=max_length,
                overflow="truncate",
            )

        try:
            self.reward_model = _load(self.name, "reward_model", model, load)
        except ValueError as e:
            raise JudgeError(f"judge {self.name!r}: {e}") from None
        self.tokenizer = self.reward_model.tokenizer

    def text(self, prompt: Prompt, response: str) -> str:
        """The conversation the reward model scores, in its prompt format."""
        return self.reward_model.text(_as_messages(prompt), response)

    def rewards(self, prompts, responses):
        return self.rewards_and_cuts(prompts, responses)[0]

    def rewards_and_cuts(self, prompts, responses) -> tuple[list[float], list[bool]]:
        try:
            return self.reward_model.rewards([_as_messages(p) for p in prompts], responses)
        except ValueError as e:
            raise JudgeError(f"judge {self.name!r}: {e}") from None

    def score(self, prompts, responses):
        flat_prompts = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
        flat, cuts = self.rewards_and_cuts(flat_prompts, [r for rs in responses for r in rs])
        return _regroup(flat, responses), [{"truncated": sum(c)} for c in _regroup(cuts, responses)]


class ImplicitJudge(RewardJudge):
    """The implicit reward of a tuned/untuned pair: their log-likelihood ratio of the response."""

    def __init__(
        self,
        tuned: str,
        untuned: str,
        *,
        name: str | None = None,
        batch_size: int = 32,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | dict | None = None,
        trust_remote_code: bool = False,
        prompt_format: str = "chat",
    ):
        self.name = name or f"implicit:{tuned}-{untuned}"
        self.batch_size = batch_size
        kwargs = _loading(self.name, dtype, device, trust_remote_code, prompt_format, device_map)
        self.tuned = _load(self.name, "implicit", tuned, lambda m: load_model_and_tokenizer(m, **kwargs))
        self.untuned = _load(self.name, "implicit", untuned, lambda m: load_model_and_tokenizer(m, **kwargs))

    def rewards(self, prompts, responses):
        # log pi(y|x) as guide/scoring.py defines it; a judged response is a whole one, so its EOS counts
        messages = [_as_messages(p) for p in prompts]
        try:
            tuned = response_logprobs(*self.tuned, messages, responses, True, batch_size=self.batch_size)
            untuned = response_logprobs(*self.untuned, messages, responses, True, batch_size=self.batch_size)
        except ValueError as e:  # past a model's context, or no chat template: name the judge
            raise JudgeError(f"judge {self.name!r}: {e}") from None
        return [a - b for a, b in zip(tuned, untuned, strict=True)]


# ---------------------------------------------------------------- pairwise judges


def parse_labels(labels: str | Sequence[str], where: str = "labels") -> tuple[str, str]:
    """Two labels ('a,b' or a pair), stripped; they must differ ignoring case (the HTTP judge matches so)."""
    pair = tuple(str(x).strip() for x in (labels.split(",") if isinstance(labels, str) else labels))
    if len(pair) != 2 or not all(pair) or pair[0].lower() == pair[1].lower():
        raise JudgeError(f"{where} {labels!r}: give two different non-empty labels, e.g. 'a,b'")
    return pair


def check_template(template: str, where: str = "template") -> None:
    """A pairwise template must fill {prompt}, {first} and {second}, and may name the labels; nothing else."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise JudgeError(f"{where}: not a format string ({e})") from e
    missing, unknown = {"prompt", "first", "second"} - fields, fields - TEMPLATE_FIELDS
    if missing or unknown:
        raise JudgeError(
            f"{where}: needs {{prompt}}, {{first}} and {{second}} and may use {{label_first}}, {{label_second}}; "
            f"missing {sorted(missing)}, unknown {sorted(unknown)}"
        )


def pairwise_prompt(
    prompt: str, first: str, second: str, labels: Sequence[str] = LABELS, template: str = DEFAULT_PAIRWISE_TEMPLATE
) -> str:
    """The judge's question for one ordered pair, the responses named by `labels`."""
    return template.format(prompt=prompt, first=first, second=second, label_first=labels[0], label_second=labels[1])


def prob_b(logprob_a: float, logprob_b: float) -> float:
    """P(the second label) among the two, from their log-probabilities (a tie when neither is possible)."""
    if logprob_a == -math.inf and logprob_b == -math.inf:
        return 0.5
    m = max(logprob_a, logprob_b)
    ea, eb = math.exp(logprob_a - m), math.exp(logprob_b - m)
    return eb / (ea + eb)


def both_orders(p_second: float, p_second_swapped: float) -> float:
    """P(second wins), order-balanced: the mean of its chance asked as (first, second), `p_second`, and as
    (second, first), `1 - p_second_swapped` (there the second label names the first response)."""
    return 0.5 * (p_second + 1.0 - p_second_swapped)


class PairwiseJudge(Judge):
    """Reads two responses and names the better by a label; subclasses give the labels' log-probabilities."""

    labels: tuple[str, str] = LABELS
    template: str = DEFAULT_PAIRWISE_TEMPLATE

    def cache_id(self) -> str:
        if self.template == DEFAULT_PAIRWISE_TEMPLATE:
            prompt = f"prompt{PROMPT_VERSION}"
        else:
            prompt = f"template-{hashlib.sha256(self.template.encode()).hexdigest()[:8]}"
        return f"{self.name}:{prompt}:{','.join(self.labels)}"

    def label_logprobs(self, questions: list[str]) -> list[tuple[float, float]]:
        """(log P(first label), log P(second label)) of the judge's first answer token, per question."""
        raise NotImplementedError

    def prefer(self, prompts: list[Prompt], firsts: list[str], seconds: list[str]) -> list[float]:
        """P(second wins) for each ordered pair, from the judge's odds of the two labels."""
        questions = [
            pairwise_prompt(_as_text(p), a, b, self.labels, self.template)
            for p, a, b in zip(prompts, firsts, seconds, strict=True)
        ]
        return [prob_b(*lp) for lp in self.label_logprobs(questions)]

    def prefer_both_orders(
        self, prompts: list[Prompt], firsts: list[str], seconds: list[str]
    ) -> list[tuple[float, float]]:
        """Per pair (P(second wins) asked as given, P(first wins) asked swapped), all asked in one batch."""
        n = len(prompts)
        p = self.prefer([*prompts, *prompts], [*firsts, *seconds], [*seconds, *firsts])
        return list(zip(p[:n], p[n:], strict=True))

    def score(self, prompts, responses):
        jobs = [(k, i, j) for k, rs in enumerate(responses) for i, j in itertools.combinations(range(len(rs)), 2)]
        asked = self.prefer_both_orders(
            [prompts[k] for k, _, _ in jobs],
            [responses[k][i] for k, i, _ in jobs],
            [responses[k][j] for k, _, j in jobs],
        )
        cut = getattr(self, "cut", None) or [False] * (2 * len(jobs))  # questions cut to the judge's max_length
        scores = [[0.0] * len(rs) for rs in responses]
        extras = [{"compared": 0, "agreed": 0, "truncated": 0} for _ in prompts]
        for n, (k, _, _) in enumerate(jobs):
            extras[k]["truncated"] += int(cut[n]) + int(cut[len(jobs) + n])
        for (k, i, j), (forward, backward) in zip(jobs, asked, strict=True):
            prefer_j = both_orders(forward, backward)
            scores[k][i] += 1 - prefer_j
            scores[k][j] += prefer_j
            extras[k]["compared"] += 1
            extras[k]["agreed"] += int((forward > 0.5) == (backward < 0.5))  # j wins in both orders, or i does
        for k, rs in enumerate(responses):
            if len(rs) > 1:
                scores[k] = [s / (len(rs) - 1) for s in scores[k]]
        return scores, extras


class LocalLLMJudge(PairwiseJudge):
    """A local causal LM asked the pairwise question in its chat template; each label must be one of its tokens."""

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        labels: str | Sequence[str] = LABELS,
        template: str = "",
        batch_size: int = 8,
        max_length: int = 1024,
        dtype: str = "auto",
        device: str | None = None,
        device_map: str | dict | None = None,
        trust_remote_code: bool = False,
        prompt_format: str = "chat",
    ):
        self.name = name or f"llm:{model}"
        self.labels = parse_labels(labels, f"judge {self.name!r}: labels")
        self.template = template or DEFAULT_PAIRWISE_TEMPLATE
        check_template(self.template, f"judge {self.name!r}: template")
        self.batch_size, self.max_length = batch_size, max_length
        kwargs = _loading(self.name, dtype, device, trust_remote_code, prompt_format, device_map)
        self.model, self.tokenizer = _load(
            self.name, "pairwise", model, lambda m: load_model_and_tokenizer(m, **kwargs)
        )
        tok = self.tokenizer
        tok.padding_side = "left"  # the last position of every row is the next token
        tok.truncation_side = "left"  # an over-long question loses its start, never its end
        self.label_ids = []
        for label in self.labels:
            ids = tok(label, add_special_tokens=False)["input_ids"]
            lost = tok.decode(ids).strip() != label  # e.g. mapped to an unknown piece
            if len(ids) != 1 or ids[0] == tok.unk_token_id or lost:
                raise JudgeError(
                    f"judge {self.name!r}: label {label!r} is not one token of {model!r}'s vocabulary "
                    f"(it encodes to {ids}): choose labels that are"
                )
            self.label_ids.append(ids[0])
        if self.label_ids[0] == self.label_ids[1]:
            raise JudgeError(f"judge {self.name!r}: labels {self.labels} encode to the same token")

    @torch.no_grad()
    def label_logprobs(self, questions):
        """A question longer than `max_length` (at most the model's context) keeps its end, where the labels
        are asked for; which ones were cut is `self.cut` (counted in the judged records as `truncated`)."""
        texts = [chat_prompt(self.tokenizer, q) for q in questions]
        limit = min(x for x in (self.max_length, context_length(self.model)) if x)
        self.cut = [len(self.tokenizer(t, add_special_tokens=False).input_ids) > limit for t in texts]
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=limit,
                add_special_tokens=False,
            ).to(input_device(self.model))
            position_ids = (batch["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # each row counts from its start
            logits = self.model(**batch, position_ids=position_ids).logits[:, -1].float()  # (batch, vocab)
            out += [tuple(row) for row in torch.log_softmax(logits, -1)[:, self.label_ids].tolist()]
        return out


def http_base_url(base_url_env: str) -> str:
    """The HTTP judge's base URL, from the environment variable named (OPENAI_BASE_URL as a fall-back)."""
    base = os.environ.get(base_url_env) or os.environ.get("OPENAI_BASE_URL")
    if not base:
        raise JudgeError(
            f"http judge: set {base_url_env} (or OPENAI_BASE_URL) to the server's base URL, e.g. http://host:8000/v1"
        )
    return base


class HTTPJudge(PairwiseJudge):
    """An OpenAI-compatible `/chat/completions` server asked for one token with log-probabilities.

    Base URL and key come from environment variables (names set in the recipe); the key is sent
    as a bearer token and never logged. A label missing from the top 20 answers counts as likely as the
    last one listed; with neither listed, the answer's text decides, and failing that the pair ties.
    """

    def __init__(
        self,
        model: str,
        *,
        name: str | None = None,
        labels: str | Sequence[str] = LABELS,
        template: str = "",
        base_url_env: str = "W2S_JUDGE_BASE_URL",
        api_key_env: str = "W2S_JUDGE_API_KEY",
        concurrency: int = 8,
        timeout: float = 60.0,
        retries: int = 3,
    ):
        self.url = http_base_url(base_url_env).rstrip("/") + "/chat/completions"
        self._key = os.environ.get(api_key_env) or os.environ.get("OPENAI_API_KEY")
        self.model_id = model
        self.name = name or f"http:{model}"
        self.labels = parse_labels(labels, f"judge {self.name!r}: labels")
        self.template = template or DEFAULT_PAIRWISE_TEMPLATE
        check_template(self.template, f"judge {self.name!r}: template")
        self.concurrency, self.timeout, self.retries = concurrency, timeout, retries

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

    def ask(self, question: str) -> tuple[float, float]:
        """(log P(first label), log P(second label)) of the served model's first answer token."""
        body = {
            "model": self.model_id,
            "messages": [{"role": "user", "content": question}],
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

    def label_logprobs(self, questions):
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self.ask, questions))


# ---------------------------------------------------------------- the data recipe's judges


def make_judge(config: JudgeConfig) -> Judge:
    """The judge a data recipe entry describes (loads its models); a judge that cannot load raises JudgeError."""
    local = {
        "name": config.name,
        "batch_size": config.batch_size,
        "dtype": config.dtype,
        "device": default_device(config.device),
        "device_map": config.device_map,
        "trust_remote_code": config.trust_remote_code,
    }
    if config.kind == "rule":
        return RuleJudge(config.rule, name=config.name)
    local["prompt_format"] = config.prompt_format
    if config.kind == "reward_model":
        return RewardModelJudge(config.model, max_length=config.max_length, **local)
    if config.kind == "pairwise":
        return LocalLLMJudge(
            config.model, labels=config.labels, template=config.template, max_length=config.max_length, **local
        )
    if config.kind == "implicit":
        return ImplicitJudge(config.tuned, config.untuned, **local)
    raise JudgeError(
        f"judge {config.name!r}: unknown kind {config.kind!r}: choose rule, reward_model, pairwise or implicit"
    )


def agreement_rate(extras: list[dict]) -> float | None:
    """Share of pairwise comparisons where the judge's verdict did not change with the order."""
    compared = sum(e.get("compared", 0) for e in extras)
    return sum(e.get("agreed", 0) for e in extras) / compared if compared else None
