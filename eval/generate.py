"""Generating every system's outputs through `guide/` (or an endpoint: eval/endpoint.py), resumably, with the cost
of each item.

Outputs go to `<system_dir>/generations.jsonl` (guide/outputs.py `generation_log`): a header holding the
system's outputs recipe and the sampler, then one record per instruction (its whole `Generation`), flushed
after every batch: a killed run resumes with the instructions not yet written and never writes one twice.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from w2s.eval.config import System
from w2s.eval.endpoint import Endpoint, EndpointError
from w2s.eval.instructions import Instruction
from w2s.guide import GuideConfig
from w2s.guide.commands import GuideError, UserError
from w2s.guide.config import outputs_recipe
from w2s.guide.logs import LogMismatch
from w2s.guide.outputs import decode_into, decode_missing, generation_log, sampled_by_another_release
from w2s.guide.shards import Shard

logger = logging.getLogger(__name__)

GENERATIONS = "generations.jsonl"


class GenerationError(UserError, RuntimeError):
    """A system whose outputs cannot be generated or resumed."""


def check_guide_config(name: str, config: dict) -> GuideConfig:
    """The system's guide recipe; GenerationError naming the system if `guide/` rejects it (unknown key, bad value)."""
    try:
        return GuideConfig.from_dict(dict(config), source=f"system {name!r}: guide")
    except (ValueError, TypeError) as e:
        raise GenerationError(str(e)) from e


def stale_streams(system_dir: Path) -> bool:
    """Whether `system_dir` holds outputs sampled another way than this w2s samples (an older release)."""
    return sampled_by_another_release(Path(system_dir) / GENERATIONS)


def _open_log(name: str, recipe: dict, prompts: list[str], system_dir: Path, shard: Shard):
    try:
        return generation_log(system_dir / GENERATIONS, recipe, prompts, shard)
    except LogMismatch as e:
        if e.field == "recipe" and e.was is not None:
            raise GenerationError(
                f"system {name!r}: its guide recipe changed since {e.path} was written (was {e.was}, now {e.now}); "
                "give the system a new name or delete that folder"
            ) from None
        if e.was is None:
            raise GenerationError(
                f"system {name!r}: {e.path} was written by an older w2s (a log without the header of its recipe "
                "and sampler): delete that folder or use another output_dir"
            ) from None
        raise GenerationError(
            f"system {name!r}: {e.path} was sampled by another release of w2s (its items would not match the "
            "ones generated now); delete that folder or use another output_dir"
        ) from None
    except GuideError as e:
        raise GenerationError(f"system {name!r}: {e}") from None


def check_system(system: System) -> GuideConfig | Endpoint:
    """A system's guide recipe, or its endpoint's keys; GenerationError naming the system if they are wrong."""
    if system.endpoint is not None:
        try:
            return Endpoint.of(system.name, system.endpoint)
        except EndpointError as e:
            raise GenerationError(str(e)) from None
    return check_guide_config(system.name, system.guide)


def generate_outputs(
    system: System,
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
    name, config = system.name, check_system(system)
    served = isinstance(config, Endpoint)
    recipe = config.recipe() if served else outputs_recipe(asdict(config))
    prompts = [ins.instruction for ins in instructions]
    log = _open_log(name, recipe, prompts, Path(system_dir), shard)
    items = list(range(len(prompts))) if items is None else items
    todo = [i for i in items if i not in log]
    reused = len(items) - len(todo)
    if reused:
        logger.info("%s: %d outputs already on disk, %d to generate", name, reused, len(todo))
    if served and todo:  # one request per instruction, a batch's in flight together (the server batches them)
        decode_into(config.decode, prompts, log, todo, batch_size=batch_size, progress=progress,
                    desc=f"generating {name}")  # fmt: skip
    elif todo:
        decode_missing(config, prompts, log, todo, per_write=batch_size, progress=progress, desc=f"generating {name}")
    return [log.get(i) for i in range(len(prompts))], {"reused": reused, "generated": len(todo)}
