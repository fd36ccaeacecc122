"""The evaluation's judges: which judge an EvalConfig names, and AlpacaEval preferences from its verdicts.

The judges themselves live in `w2s.data.judges`, one class per kind. A **reward
judge** scores each output alone; a pair's preference follows from the two
rewards (the tiny world's gold reward: the higher reward wins, equal rewards
tie; a reward model: the Bradley–Terry probability `sigmoid(r_2 - r_1)`). A
**pairwise judge** reads both outputs, AlpacaEval-style, in both orders, and
its label log-probabilities give the probability that the system wins.

Preferences follow AlpacaEval's encoding: 1 the reference (output_1) wins,
2 the system (output_2) wins, 1.5 a tie, values between are soft preferences.
"""

from __future__ import annotations

import math
from pathlib import Path

from w2s.data.judges import (
    HTTPJudge,
    Judge,
    JudgeError,
    LocalLLMJudge,
    PairwiseJudge,
    RewardModelJudge,
    RuleJudge,
    both_orders,
    http_base_url,
    parse_labels,
)

GOLD_NAME = "tiny_gold_reward"  # the gold judge's annotator name, which keys its cached verdicts


def preference_from_orders(p_b_ref_first: float, p_b_sys_first: float) -> float:
    """AlpacaEval preference in [1, 2] from the two orders' P(b): (reference, system) then (system, reference)."""
    return 1.0 + both_orders(p_b_ref_first, p_b_sys_first)


def preference_from_rewards(r_1: float, r_2: float, *, soft: bool) -> float:
    """1 + P(output_2 wins): Bradley–Terry `sigmoid(r_2 - r_1)` if `soft`, else 2 / 1 / 1.5 for win / loss / tie."""
    if soft:
        d = r_2 - r_1
        return 1.0 + (1.0 / (1.0 + math.exp(-d)) if d >= 0 else math.exp(d) / (1.0 + math.exp(d)))
    return 2.0 if r_2 > r_1 else 1.0 if r_2 < r_1 else 1.5


def compare(judge: PairwiseJudge, instructions: list[str], outputs_1: list[str], outputs_2: list[str]) -> list[dict]:
    """Per pair: {"preference": 1..2, "p_b_ref_first", "p_b_sys_first"}; output_1 is the reference."""
    out = []
    for p1, p2 in judge.prefer_both_orders(instructions, outputs_1, outputs_2):  # reference first, then system
        out.append({"preference": preference_from_orders(p1, p2), "p_b_ref_first": p1, "p_b_sys_first": p2})
    return out


def check_judge(config) -> None:
    """Cheap checks of the judge a config names, run before any generation (a missing URL fails early)."""
    if config.judge == "http":
        http_base_url(config.judge_base_url_env)
    if config.judge in ("llm", "http"):
        parse_labels(config.judge_labels, "judge_labels")
    if config.judge in ("reward_model", "llm"):
        spec = str(config.judge_model)
        looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1
        if looks_local and not Path(spec).expanduser().is_dir():
            raise JudgeError(f"judge_model {spec!r}: no such local folder")


def make_judge(config) -> Judge:
    """The judge an EvalConfig names (named as earlier versions named it, so cached verdicts stay valid)."""
    kind = config.judge
    if kind == "gold":
        return RuleJudge("tiny_gold", name=GOLD_NAME)
    local = {
        "batch_size": config.judge_batch_size,
        "max_length": config.judge_max_length,
        "dtype": config.judge_dtype,
        "device": config.judge_device,
        "device_map": config.judge_device_map,
        "trust_remote_code": config.trust_remote_code,
    }
    if kind == "reward_model":
        return RewardModelJudge(config.judge_model, **local)
    if kind == "llm":
        return LocalLLMJudge(config.judge_model, labels=config.judge_labels, **local)
    if kind == "http":
        return HTTPJudge(
            config.judge_model,
            labels=config.judge_labels,
            base_url_env=config.judge_base_url_env,
            api_key_env=config.judge_api_key_env,
            concurrency=config.judge_batch_size,
        )
    raise JudgeError(f"unknown judge {kind!r}: choose gold, reward_model, llm or http")
