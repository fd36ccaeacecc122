"""Judges: score every response of a prompt; interchangeable, and combinable as a normalised ensemble.

* `rule`: a deterministic function of prompt and response (the tiny world's gold reward);
* `reward_model`: a sequence-classification model's score of the conversation;
* `pairwise`: an LLM asked which of two responses is better, in both orders; a
  response's score is its mean preference over the others, and the share of
  comparisons where both orders agree is recorded;
* `implicit`: `log pi_tuned(y|x) - log pi_untuned(y|x)`, each model reading the
  prompt in its own chat template (the pair may have different vocabularies).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Protocol

import torch

from data.generators import default_device
from data.prompts import Messages, prompt_text
from data.recipe import JudgeConfig

logger = logging.getLogger(__name__)


class JudgeError(RuntimeError):
    """A judge that cannot be built: the message names the judge and what is wrong."""


class Judge(Protocol):
    """Scores each prompt's responses; `score` returns scores per prompt and per-prompt extra records."""

    name: str

    def score(self, prompts: list[Messages], responses: list[list[str]]) -> tuple[list[list[float]], list[dict]]: ...


def _tiny_gold(prompts: list[str], responses: list[str]) -> list[float]:
    from data.world import gold_reward

    return gold_reward(prompts, responses)


# rule name -> fn(prompt texts, responses) -> scores
RULES: dict[str, Callable[[list[str], list[str]], list[float]]] = {"tiny_gold": _tiny_gold}


class RuleJudge:
    def __init__(self, config: JudgeConfig):
        if config.rule not in RULES:
            raise JudgeError(f"judge {config.name!r}: unknown rule {config.rule!r}: choose one of {sorted(RULES)}")
        self.name, self.fn = config.name, RULES[config.rule]

    def score(self, prompts, responses):
        flat_prompts = [prompt_text(p) for p, rs in zip(prompts, responses, strict=True) for _ in rs]
        flat = self.fn(flat_prompts, [r for rs in responses for r in rs])
        return _regroup(flat, responses), [{} for _ in prompts]


def _regroup(flat: list, groups: list[list]) -> list[list]:
    out, i = [], 0
    for g in groups:
        out.append(list(flat[i : i + len(g)]))
        i += len(g)
    return out


def _load(config: JudgeConfig, name_or_path: str, loader: Callable):
    try:
        return loader(name_or_path)
    except Exception as e:  # any failure to load is the recipe's problem: say which judge and model
        raise JudgeError(f"judge {config.name!r} ({config.kind}): cannot load {name_or_path!r}: {e}") from e


def _with_response(messages: Messages, response: str) -> Messages:
    return [*messages, {"role": "assistant", "content": response}]


@torch.no_grad()
def response_logprobs(
    model, tokenizer, prompts: list[Messages], responses: list[str], *, batch_size: int = 32
) -> list[float]:
    """Sum of log p(response tokens | prompt in the model's chat template), one value per response."""
    from guide.models import chat_prompt

    rows = []
    for p, r in zip(prompts, responses, strict=True):
        prompt_ids = tokenizer(chat_prompt(tokenizer, p), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(r, add_special_tokens=False)["input_ids"]
        rows.append((prompt_ids, response_ids))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        width = max(len(p) + len(r) for p, r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        target = torch.zeros_like(ids, dtype=torch.bool)  # positions holding response tokens
        for i, (p, r) in enumerate(chunk):  # right padding keeps positions 0..n-1 for every row
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            mask[i, : len(p) + len(r)] = 1
            target[i, len(p) : len(p) + len(r)] = True
        ids, mask, target = ids.to(model.device), mask.to(model.device), target.to(model.device)
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, ids[:, 1:, None])[..., 0]  # (B, T-1)
        out += (logp * target[:, 1:]).sum(1).tolist()
    return out


class ImplicitJudge:
    """The implicit reward of a tuned/untuned pair: their log-likelihood ratio of the response."""

    def __init__(self, config: JudgeConfig):
        from guide.models import load_model_and_tokenizer

        self.name, self.config = config.name, config
        kwargs = {
            "dtype": config.dtype,
            "device": default_device(config.device),
            "trust_remote_code": config.trust_remote_code,
        }
        self.tuned = _load(config, config.tuned, lambda m: load_model_and_tokenizer(m, **kwargs))
        self.untuned = _load(config, config.untuned, lambda m: load_model_and_tokenizer(m, **kwargs))

    def score(self, prompts, responses):
        flat_p = [p for p, rs in zip(prompts, responses, strict=True) for _ in rs]
        flat_r = [r for rs in responses for r in rs]
        bs = self.config.batch_size
        tuned = response_logprobs(*self.tuned, flat_p, flat_r, batch_size=bs)
        untuned = response_logprobs(*self.untuned, flat_p, flat_r, batch_size=bs)
        return _regroup([a - b for a, b in zip(tuned, untuned, strict=True)], responses), [{} for _ in prompts]


class RewardModelJudge:
    """A sequence-classification reward model scoring the conversation (prompt + response)."""

    def __init__(self, config: JudgeConfig):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from guide.models import DTYPES, resolve_model_path

        self.name, self.config = config.name, config
        path = resolve_model_path(config.model)

        def load(m):
            model = AutoModelForSequenceClassification.from_pretrained(
                m, dtype=DTYPES[config.dtype], trust_remote_code=config.trust_remote_code, use_safetensors=True
            )
            tok = AutoTokenizer.from_pretrained(m, trust_remote_code=config.trust_remote_code)
            return model, tok

        self.model, self.tokenizer = _load(config, path, load)
        device = default_device(config.device)
        if device is not None:
            self.model.to(device)
        self.model.eval()
        tok = self.tokenizer
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = tok.pad_token_id
        tok.padding_side, tok.truncation_side = "right", "left"

    def _text(self, prompt: Messages, response: str) -> str:
        if self.tokenizer.chat_template is None:
            return f"{prompt_text(prompt)}\n{response}"
        return self.tokenizer.apply_chat_template(_with_response(prompt, response), tokenize=False)

    @torch.no_grad()
    def score(self, prompts, responses):
        texts = [self._text(p, r) for p, rs in zip(prompts, responses, strict=True) for r in rs]
        flat: list[float] = []
        for start in range(0, len(texts), self.config.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.config.batch_size],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.config.max_length,
                add_special_tokens=False,
            ).to(self.model.device)
            logits = self.model(**batch).logits.float()
            # one label: the reward; two: log-odds of the second ("good") label
            flat += (logits[:, 0] if logits.shape[1] == 1 else logits[:, -1] - logits[:, 0]).tolist()
        return _regroup(flat, responses), [{} for _ in prompts]


DEFAULT_PAIRWISE_TEMPLATE = (
    "Which response to the prompt is better? Answer {label_first} or {label_second}.\n\n"
    "Prompt: {prompt}\n\n{label_first}: {first}\n\n{label_second}: {second}"
)


class PairwiseJudge:
    """An LLM comparing two responses in both orders; scores are mean preferences, agreement is recorded."""

    def __init__(self, config: JudgeConfig):
        from guide.models import load_model_and_tokenizer

        self.name, self.config = config.name, config
        kwargs = {
            "dtype": config.dtype,
            "device": default_device(config.device),
            "trust_remote_code": config.trust_remote_code,
        }
        self.model, self.tokenizer = _load(config, config.model, lambda m: load_model_and_tokenizer(m, **kwargs))
        self.tokenizer.truncation_side = "left"  # an over-long comparison loses its start, never the question's end
        self.label_ids = []
        for label in config.labels:
            ids = self.tokenizer(label, add_special_tokens=False)["input_ids"]
            lost = self.tokenizer.decode(ids).strip() != label.strip()  # e.g. mapped to an unknown piece
            if len(ids) != 1 or ids[0] == self.tokenizer.unk_token_id or lost:
                raise JudgeError(
                    f"judge {config.name!r}: label {label!r} is not one token of {config.model!r}'s vocabulary "
                    f"(it encodes to {ids}): choose labels that are"
                )
            self.label_ids.append(ids[0])
        if self.label_ids[0] == self.label_ids[1]:
            raise JudgeError(f"judge {config.name!r}: labels {config.labels} encode to the same token")
        self.template = config.template or DEFAULT_PAIRWISE_TEMPLATE

    @torch.no_grad()
    def prefer_first(self, prompts: list[Messages], firsts: list[str], seconds: list[str]) -> list[float]:
        """P(first is better) from the judge's next-token odds of the two labels."""
        from guide.models import chat_prompt

        first_label, second_label = self.config.labels
        texts = [
            chat_prompt(
                self.tokenizer,
                self.template.format(
                    prompt=prompt_text(p), first=a, second=b, label_first=first_label, label_second=second_label
                ),
            )
            for p, a, b in zip(prompts, firsts, seconds, strict=True)
        ]
        out: list[float] = []
        tok, bs = self.tokenizer, self.config.batch_size
        for start in range(0, len(texts), bs):  # left padding: the last position is the next token
            batch = tok(
                texts[start : start + bs],
                return_tensors="pt",
                padding=True,
                add_special_tokens=False,
                truncation=True,
                max_length=self.config.max_length,
            ).to(self.model.device)
            logits = self.model(**batch).logits[:, -1, self.label_ids].float()
            out += torch.softmax(logits, -1)[:, 0].tolist()
        return out

    def score(self, prompts, responses):
        jobs = [(k, i, j) for k, rs in enumerate(responses) for i, j in itertools.combinations(range(len(rs)), 2)]
        ask = [(prompts[k], responses[k][i], responses[k][j]) for k, i, j in jobs]
        forward = self.prefer_first(*map(list, zip(*ask, strict=True))) if jobs else []
        backward = self.prefer_first(*map(list, zip(*[(p, b, a) for p, a, b in ask], strict=True))) if jobs else []
        scores = [[0.0] * len(rs) for rs in responses]
        extras = [{"compared": 0, "agreed": 0} for _ in prompts]
        for (k, i, j), p_ij, p_ji in zip(jobs, forward, backward, strict=True):
            prefer_i = (p_ij + (1 - p_ji)) / 2  # i's preference, averaged over both orders
            scores[k][i] += prefer_i
            scores[k][j] += 1 - prefer_i
            extras[k]["compared"] += 1
            extras[k]["agreed"] += int((p_ij > 0.5) == (p_ji < 0.5))
        for k, rs in enumerate(responses):
            if len(rs) > 1:
                scores[k] = [s / (len(rs) - 1) for s in scores[k]]
        return scores, extras


JUDGES = {"rule": RuleJudge, "reward_model": RewardModelJudge, "pairwise": PairwiseJudge, "implicit": ImplicitJudge}


def make_judge(config: JudgeConfig) -> Judge:
    """The judge a recipe entry describes (loads its models); a judge that cannot load raises JudgeError."""
    return JUDGES[config.kind](config)


def agreement_rate(extras: list[dict]) -> float | None:
    """Share of pairwise comparisons where the judge's verdict did not change with the order."""
    compared = sum(e.get("compared", 0) for e in extras)
    return sum(e.get("agreed", 0) for e in extras) / compared if compared else None
