"""Judging with a cache: every verdict is stored once, by content, so a rerun never judges twice.

The cache is a JSONL log per judge under `<output_dir>/judgements/`, keyed by a
hash of the judge's identity and the texts judged (a reward for one output, or
a preference for one ordered pair), flushed batch by batch.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from w2s.data.judges import Judge, PairwiseJudge, RewardJudge
from w2s.eval.judges import compare, preference_from_rewards
from w2s.guide.logs import ResumableLog
from w2s.guide.shards import Shard


def _key(*parts: str) -> str:
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]


def judgement_log(judge: Judge, output_dir: Path, shard: Shard = (0, 1)) -> ResumableLog:
    """The judge's verdict cache inside an output folder (this process's log of it, reading every shard's)."""
    ident = judge.cache_id()
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", ident)[-60:]
    return ResumableLog(Path(output_dir) / "judgements" / f"{slug}-{_key(ident)[:8]}.jsonl", "key", shard=shard)


@dataclass
class JudgeCounts:
    """The distinct verdicts a run needs, each either judged by this run or found in the cache from an earlier
    one: judged + cached = total (a verdict asked for twice, such as the reference's reward read beside each
    system, counts once)."""

    needed: set[str] = field(default_factory=set)
    new: set[str] = field(default_factory=set)  # judged by this run

    def add(self, keys: list[str], todo: list[str]) -> None:
        """Records the verdicts `keys` of one request, `todo` of them not in the cache (to be judged now)."""
        self.needed.update(keys)
        self.new.update(todo)

    @property
    def judged(self) -> int:
        return len(self.new)

    @property
    def cached(self) -> int:
        return len(self.needed - self.new)

    @property
    def total(self) -> int:
        return len(self.needed)


def cached_rewards(
    judge: RewardJudge,
    log: ResumableLog,
    instructions: list[str],
    outputs: list[str],
    *,
    batch_size: int,
    desc: str,
    counts: JudgeCounts,
) -> list[float]:
    """The judge's reward for each (instruction, output), computing only what the cache lacks."""
    ident = judge.cache_id()
    keys = [_key(ident, "reward", i, o) for i, o in zip(instructions, outputs, strict=True)]
    todo = sorted({k: n for n, k in enumerate(keys) if k not in log}.values())
    counts.add(keys, [keys[n] for n in todo])
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, disable=len(todo) <= batch_size):
        idx = todo[start : start + batch_size]
        values = judge.rewards([instructions[n] for n in idx], [outputs[n] for n in idx])
        log.append({"key": keys[n], "reward": float(v)} for n, v in zip(idx, values, strict=True))
    return [log.get(k)["reward"] for k in keys]


def cached_preferences(
    judge: PairwiseJudge,
    log: ResumableLog,
    instructions: list[str],
    outputs_1: list[str],
    outputs_2: list[str],
    *,
    batch_size: int,
    desc: str,
    counts: JudgeCounts,
) -> list[dict]:
    """The pairwise judge's verdict for each (instruction, output_1, output_2); identical outputs tie unjudged."""
    ident = judge.cache_id()
    keys = [_key(ident, "pair", i, a, b) for i, a, b in zip(instructions, outputs_1, outputs_2, strict=True)]
    same = [a == b for a, b in zip(outputs_1, outputs_2, strict=True)]
    todo = sorted({k: n for n, k in enumerate(keys) if not same[n] and k not in log}.values())
    counts.add([k for n, k in enumerate(keys) if not same[n]], [keys[n] for n in todo])
    for start in tqdm(range(0, len(todo), batch_size), desc=desc, disable=len(todo) <= batch_size):
        idx = todo[start : start + batch_size]
        verdicts = compare(
            judge, [instructions[n] for n in idx], [outputs_1[n] for n in idx], [outputs_2[n] for n in idx]
        )
        log.append({"key": keys[n], **v} for n, v in zip(idx, verdicts, strict=True))
    out = []
    for n, k in enumerate(keys):
        out.append({"preference": 1.5} if same[n] else {kk: v for kk, v in log.get(k).items() if kk != "key"})
    return out


def annotate(
    judge: Judge,
    log: ResumableLog,
    system: str,
    instructions: list[str],
    outputs: list[str],
    reference_name: str | None,
    references: list[str] | None,
    *,
    batch_size: int = 8,
    counts: JudgeCounts | None = None,
) -> list[dict]:
    """AlpacaEval annotations of one system (output_2) against the reference (output_1), with rewards if any."""
    counts = counts if counts is not None else JudgeCounts()
    pairwise = isinstance(judge, PairwiseJudge)
    rewards = rewards_ref = None
    if not pairwise:
        rewards = cached_rewards(
            judge, log, instructions, outputs, batch_size=batch_size, desc=f"judging {system}", counts=counts
        )
        if references is not None:
            rewards_ref = cached_rewards(
                judge, log, instructions, references, batch_size=batch_size, desc="judging reference", counts=counts
            )
    verdicts = None
    if pairwise and references is not None:
        verdicts = cached_preferences(
            judge,
            log,
            instructions,
            references,
            outputs,
            batch_size=batch_size,
            desc=f"judging {system}",
            counts=counts,
        )
    annotations = []
    for n, instruction in enumerate(instructions):
        a = {"instruction": instruction}
        if references is not None:
            a.update(output_1=references[n], generator_1=reference_name)
        a.update(output_2=outputs[n], generator_2=system, annotator=judge.name)
        if rewards is not None:
            if rewards_ref is not None:
                a["preference"] = preference_from_rewards(rewards_ref[n], rewards[n], soft=judge.bradley_terry)
                a["reward_1"] = rewards_ref[n]
            a["reward_2"] = rewards[n]
        if verdicts is not None:
            a.update(verdicts[n])
        annotations.append(a)
    return annotations
