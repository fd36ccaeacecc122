"""Generating every system's outputs through `guide/`, resumably, with the cost of each item.

Outputs go to `<system_dir>/generations.jsonl`, one record per instruction,
flushed after every batch: a killed run resumes with the instructions not yet
written and never writes one twice.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from pathlib import Path

from tqdm.auto import tqdm

from w2s.eval.instructions import Instruction
from w2s.eval.store import JsonlLog, write_json
from w2s.guide import Guide, GuideConfig
from w2s.guide.commands import UserError
from w2s.guide.config import outputs_recipe
from w2s.guide.shards import Shard
from w2s.guide.streams import STREAMS

logger = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"


class GenerationError(UserError, RuntimeError):
    """A system whose outputs cannot be generated or resumed."""


def _records(gens) -> list[dict]:
    """Plain records of Generations: an item's own tokens per model, its share of the batch's wall time, and the
    batch's."""
    return [
        {
            "text": g.text,
            "score": g.score,
            "switch_at": g.switch_at,
            "tokens": dict(g.tokens),
            "seconds": g.seconds,
            "batch_seconds": g.batch_seconds,
        }
        for g in gens
    ]


def check_guide_config(name: str, config: dict) -> None:
    """Raises GenerationError naming the system if `guide/` rejects its recipe (unknown key, bad value)."""

    try:
        GuideConfig.from_dict(dict(config), source=f"system {name!r}: guide")
    except (ValueError, TypeError) as e:
        raise GenerationError(str(e)) from e


class SystemGenerator:
    """Generates one system's outputs batch by batch through `guide/`, loading its models once (on first use)."""

    def __init__(self, config: dict):
        self.config = dict(config)
        self._guide = None

    def __call__(self, prompts: list[str]) -> list[dict]:
        """One batch of outputs as plain records (text, score, switch_at, tokens, seconds, batch_seconds)."""

        if self._guide is None:
            self._guide = Guide(GuideConfig.from_dict(dict(self.config)))
        gens = self._guide.generate(prompts, progress=False)
        if len(gens) != len(prompts):
            raise GenerationError(f"guide returned {len(gens)} outputs for {len(prompts)} prompts")
        return _records(gens)


def stale_streams(system_dir: Path) -> bool:
    """Whether `system_dir` holds outputs sampled another way than this w2s samples (an older release)."""
    meta = system_dir / "system.json"
    return meta.exists() and json.loads(meta.read_text()).get("streams") != STREAMS


def _check_system(system_dir: Path, name: str, guide_config: dict) -> None:
    meta = system_dir / "system.json"
    if meta.exists():
        stored = json.loads(meta.read_text())
        if stale_streams(system_dir):
            raise GenerationError(
                f"system {name!r}: {system_dir / GENERATIONS} was sampled by another release of w2s (its items "
                "would not match the ones generated now); delete that folder or use another output_dir"
            )
        if outputs_recipe(stored.get("guide") or {}) != outputs_recipe(guide_config):
            raise GenerationError(
                f"system {name!r}: its guide recipe changed since {system_dir / GENERATIONS} was written "
                f"(was {stored.get('guide')}, now {guide_config}); give the system a new name or delete that folder"
            )
    else:
        write_json(meta, {"name": name, "guide": guide_config, "streams": STREAMS})


def generate_outputs(
    name: str,
    guide_config: dict,
    instructions: list[Instruction],
    system_dir: Path,
    *,
    batch_size: int = 16,
    progress: bool = True,
    shard: Shard = (0, 1),
    items: list[int] | None = None,
) -> tuple[list[dict | None], dict]:
    """The outputs of one system (resuming what is on disk, in any process's log) for every instruction, after
    generating those of `items` (default: all) that no log holds yet into this process's log (`shard`);
    None for an instruction no process has done yet. Also counts {reused, generated} over `items`."""
    check_guide_config(name, guide_config)
    system_dir = Path(system_dir)
    system_dir.mkdir(parents=True, exist_ok=True)
    _check_system(system_dir, name, guide_config)
    log = JsonlLog(system_dir / GENERATIONS, "index", shard=shard)
    for i, ins in enumerate(instructions):
        rec = log.get(i)
        if rec is not None and rec["instruction"] != ins.instruction:
            raise GenerationError(
                f"{log.path} line for index {i}: written for another instruction set "
                f"({rec['instruction'][:60]!r} vs {ins.instruction[:60]!r}); use a new output_dir or delete it"
            )
    items = list(range(len(instructions))) if items is None else items
    todo = [i for i in items if i not in log]
    reused = len(items) - len(todo)
    if reused:
        logger.info("%s: %d outputs already on disk, %d to generate", name, reused, len(todo))
    generator = SystemGenerator(guide_config)
    attempt = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    bar = tqdm(total=len(todo), desc=f"generating {name}", disable=not progress or not todo)
    for start in range(0, len(todo), batch_size):
        idx = todo[start : start + batch_size]
        results = generator([instructions[i].instruction for i in idx])
        log.append(
            {"index": i, "instruction": instructions[i].instruction, **res, "attempt": attempt}
            for i, res in zip(idx, results, strict=True)
        )
        bar.update(len(idx))
    bar.close()
    records = [log.get(i) for i in range(len(instructions))]
    return records, {"reused": reused, "generated": len(todo)}
