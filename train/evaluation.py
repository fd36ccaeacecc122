"""How good a guide is: DPO reward accuracy on held-out pairs, and the gold reward of what it writes.

A guide pair scores a response by `log pi_tuned(y|x) - log pi_untuned(y|x)` (log pi as
guide/scoring.py defines it: the decoders rank by the same number); its reward accuracy
is the share of held-out pairs where the chosen response scores higher than the rejected one.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch
from datasets import Dataset

from w2s.data.world import gold_reward, score_review, world_corpus, world_prompts
from w2s.guide.models import load_model_and_tokenizer, render_prompts
from w2s.guide.sampling import sample
from w2s.guide.scoring import pad_rows, response_ids, response_logprobs


def _text(turns) -> str:
    return turns if isinstance(turns, str) else turns[-1]["content"]


def implicit_margins(tuned: str | Path, untuned: str | Path, pairs: Dataset) -> list[float]:
    """Per pair (prompt/chosen/rejected): the guide's log-ratio of `chosen` minus that of `rejected`.

    DPO at strength beta minimises the mean of `-log sigmoid(beta * margin)` over its pairs.
    """
    prompts = [_text(p) for p in pairs["prompt"]]
    chosen, rejected = [_text(c) for c in pairs["chosen"]], [_text(r) for r in pairs["rejected"]]
    scores = {}
    for name, path in (("tuned", tuned), ("untuned", untuned)):
        model, tokenizer = load_model_and_tokenizer(str(path))
        scores[name] = (
            response_logprobs(model, tokenizer, prompts, chosen, True, batch_size=64),
            response_logprobs(model, tokenizer, prompts, rejected, True, batch_size=64),
        )
    (tc, tr), (uc, ur) = scores["tuned"], scores["untuned"]
    return [(a - b) - (c - d) for a, b, c, d in zip(tc, uc, tr, ur, strict=True)]


def reward_accuracy(tuned: str | Path, untuned: str | Path, pairs: Dataset) -> float:
    """Share of `pairs` (prompt/chosen/rejected) where the guide's log-ratio prefers `chosen`."""
    margins = implicit_margins(tuned, untuned, pairs)
    return sum(m > 0 for m in margins) / len(margins)


def dpo_loss(margins: list[float], beta: float) -> float:
    """Mean DPO loss `-log sigmoid(beta * margin)` of implicit margins; log 2 for a guide that learned nothing."""
    return statistics.fmean(math.log1p(math.exp(-beta * m)) if beta * m > -30 else -beta * m for m in margins)


def binomial_lower_bound(successes: int, trials: int, confidence: float = 0.999) -> float:
    """Exact (Clopper-Pearson) one-sided lower confidence bound on a success probability.

    The p at which seeing `successes` or more in `trials` has probability 1 - `confidence`: a true rate
    below it would give as many successes less often than that.
    """
    if not 0 <= successes <= trials or trials == 0:
        raise ValueError(f"need 0 <= successes <= trials and trials > 0, got {successes} of {trials}")
    if successes == 0:
        return 0.0

    def tail(p: float) -> float:  # P(X >= successes) for X ~ Binomial(trials, p), increasing in p
        return sum(math.comb(trials, i) * p**i * (1 - p) ** (trials - i) for i in range(successes, trials + 1))

    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (mid, high) if tail(mid) < 1 - confidence else (low, mid)
    return low


def paired_z(a: list[float], b: list[float]) -> float:
    """z of the mean paired difference a - b: its mean over its standard error (inf if every difference is equal
    and positive)."""
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    return mean / se if se > 0 else math.copysign(math.inf, mean) if mean else 0.0


def sample_rewards(
    path: str | Path, num_prompts: int = 100, num_samples: int = 1, seed: int = 0, max_new_tokens: int = 64
) -> list[list[float]]:
    """Gold rewards of `num_samples` samples per test prompt at temperature 1: one list per prompt."""

    model, tokenizer = load_model_and_tokenizer(str(path))
    prompts = world_prompts("test", num_prompts)
    responses = sample(model, tokenizer, prompts, num_samples=num_samples, max_new_tokens=max_new_tokens, seed=seed)
    return [gold_reward([p] * len(rs), rs) for p, rs in zip(prompts, responses, strict=True)]


def sample_reward(
    path: str | Path, num_prompts: int = 100, seed: int = 0, max_new_tokens: int = 64
) -> tuple[float, float]:
    """(mean gold reward, share of well-formed samples) of one sample per test prompt at temperature 1."""

    model, tokenizer = load_model_and_tokenizer(str(path))
    prompts = world_prompts("test", num_prompts)
    responses = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    scores = [score_review(p, r) for p, (r,) in zip(prompts, responses, strict=True)]
    return statistics.mean(s.reward for s in scores), sum(s.well_formed for s in scores) / len(scores)


def token_kl(teacher: str | Path, student: str | Path, num_reviews: int = 200, batch_size: int = 50) -> float:
    """Mean KL(teacher || student) per response token over held-out world reviews (test split), in the chat template.

    The two models must share a tokenizer; the teacher's tokenization is used for both.
    """
    per_review = review_kls(teacher, student, num_reviews, batch_size)
    return sum(kl for kl, _ in per_review) / sum(n for _, n in per_review)


@torch.no_grad()
def review_kls(
    teacher: str | Path, student: str | Path, num_reviews: int = 200, batch_size: int = 50
) -> list[tuple[float, int]]:
    """Per held-out world review (test split): (summed KL(teacher || student) over its response tokens, their count).

    The two models must share a tokenizer; the teacher's tokenization is used for both.
    """

    t_model, tokenizer = load_model_and_tokenizer(str(teacher))
    s_model, _ = load_model_and_tokenizer(str(student))
    reviews = world_corpus("test", num_reviews)
    contexts, context_ids = render_prompts(tokenizer, [r.prompt for r in reviews])
    rows = [
        response_ids(tokenizer, c, ids, r.response, True)
        for c, ids, r in zip(contexts, context_ids, reviews, strict=True)
    ]
    out = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start : start + batch_size]
        ids, mask, positions = pad_rows(batch, t_model.device)  # right-padded, explicit positions
        t_logp = torch.log_softmax(
            t_model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float(), -1
        )
        s_logp = torch.log_softmax(
            s_model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, :-1].float(), -1
        )
        kl = (t_logp.exp() * (t_logp - s_logp)).sum(-1)  # (batch, seq-1): KL of the next-token distributions
        for i, row in enumerate(batch):
            out.append((kl[i, row.start - 1 : len(row.ids) - 1].sum().item(), len(row.ids) - row.start))
    return out
