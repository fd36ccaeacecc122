"""Decoding prompts into files, resumably and over processes: the log of generations every job that decodes
through `guide/` keeps, and `generate_to`, the body of `w2s generate`.

A log of generations (`generation_log`) is headed by the outputs' recipe and the sampler (`STREAMS`): a log
of another recipe or sampler is refused, never mixed in. Each record is an item's whole `Generation`
(dataclasses.asdict) with its index and prompt, so whatever a Generation holds reaches the files. An item's
random stream is keyed by its prompt among all the prompts (`item_keys`), so its output does not depend on
its batch, on the process that decoded it, or on where a killed run resumed.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig, outputs_recipe
from w2s.guide.files import check_writable, model_folders, remove_stale_temps, write_atomic
from w2s.guide.logs import LogMismatch, ResumableLog, log_header
from w2s.guide.preflight import check_guide
from w2s.guide.run import Guide
from w2s.guide.shards import Shard, ShardedJob, shard_logs
from w2s.guide.streams import STREAMS, Prompt, item_keys
from w2s.guide.types import Generation

logger = logging.getLogger(__name__)


def generation_log(path: Path, recipe: dict, prompts: list[str], shard: Shard = (0, 1)) -> ResumableLog:
    """The log of generations `path` (shard's own file; the records of every shard's), headed by the outputs'
    `recipe`, the sampler and the fingerprints of the local model folders the recipe names: a log whose models
    were retrained or replaced since is refused (a log of an older release, without fingerprints, is not); a
    record of another prompt than `prompts` holds at its index is an error."""
    header = {"recipe": recipe, "sampler": STREAMS, "models": model_folders(recipe)}
    try:
        log = ResumableLog(path, "index", header=header, since=("models",), shard=shard)
    except LogMismatch as e:
        if e.field != "models":
            raise
        changed = [name for name, now in e.now.items() if (e.was or {}).get(name) != now]
        changed += [name for name in e.was or {} if name not in e.now]
        raise GuideError(
            f"{e.path}: the model folder {', '.join(map(repr, changed))} changed since these outputs were "
            "generated (retrained or replaced): delete the log to generate them again, or write elsewhere"
        ) from None
    for i, record in log.records.items():
        if i < len(prompts) and record["instruction"] != prompts[i]:
            raise GuideError(
                f"{path} (or a shard's log of it): item {i + 1} was generated for another prompt "
                f"({record['instruction'][:60]!r}, now {prompts[i][:60]!r}): delete it to start again"
            )
    return log


def sampled_by_another_release(path: Path) -> bool:
    """Whether a log of generations `path` (or a shard's log of it) was sampled another way than this w2s samples."""
    headers = [log_header(log) for log in shard_logs(Path(path))]
    return any(h is not None and h.get("sampler") != STREAMS for h in headers)


def generation_record(index: int, prompt: str, generation: Generation, attempt: str) -> dict:
    """An item's record in a log: its index and prompt, its whole Generation, and the run (`attempt`) that wrote it."""
    return {"index": index, "instruction": prompt, **asdict(generation), "attempt": attempt}


Decode = Callable[[list[Prompt], list[int]], list[Generation]]  # one batch of prompts and their streams


def decode_into(
    decode: Decode,
    prompts: list[Prompt],
    log: ResumableLog,
    todo: list[int],
    *,
    batch_size: int,
    per_write: int | None = None,
    progress: bool = True,
    desc: str = "generate",
) -> None:
    """Decodes the prompts `todo` (indices into `prompts`) by `decode` (`Guide.decode`, or a served system's:
    eval/endpoint.py), `batch_size` at a time, into `log`, flushed after every `per_write` items (default:
    every batch)."""
    items = item_keys(prompts)  # an item's stream: its prompt, not its batch or shard
    attempt = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # which run wrote a record (a resumed log holds several)
    per_write = per_write or batch_size
    with tqdm(total=len(todo), desc=desc, disable=not progress) as bar:
        for start in range(0, len(todo), per_write):
            chunk, gens = todo[start : start + per_write], []
            for b in range(0, len(chunk), batch_size):
                index = chunk[b : b + batch_size]
                gens += decode([prompts[i] for i in index], [items[i] for i in index])
            log.append(generation_record(i, prompts[i], g, attempt) for i, g in zip(chunk, gens, strict=True))
            bar.update(len(chunk))


def decode_missing(
    config: GuideConfig,
    prompts: list[str],
    log: ResumableLog,
    todo: list[int],
    *,
    per_write: int | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> None:
    """Decodes the prompts `todo` (indices into `prompts`), `config.batch_size` at a time, into `log`, flushed
    after every `per_write` items (default: every batch); the models load only if there is something to do."""
    if not todo:
        return
    decode_into(
        Guide(config).decode, prompts, log, todo, batch_size=config.batch_size, per_write=per_write,
        progress=progress, desc=desc or f"generate ({config.decoder})",
    )  # fmt: skip


def partial_log(out: Path) -> Path:
    """The log `w2s generate` keeps of the finished batches of its outputs `out` (one per shard: guide/shards.py)."""
    return out.with_name(out.name + ".partial.jsonl")


def details_path(out: Path) -> Path:
    """Where `w2s generate` writes each item's score, tokens per model and wall time (its share, and its batch's),
    beside the outputs."""
    return out.with_name(out.stem + ".details.json")


@dataclass
class GenerateResult:
    """What `generate_to` did: this shard's items reused from the logs and decoded now, and whether this process
    wrote the outputs (`complete`; else the last shard to finish writes them)."""

    out: Path
    details: Path
    reused: int
    generated: int
    complete: bool


def generate_to(
    config: GuideConfig, prompts: list[str], out: Path, shard: Shard = (0, 1), *, merge_only: bool = False
) -> GenerateResult:
    """The body of `w2s generate`: decodes shard (i, n)'s prompts that no log of `out` holds yet into the
    shard's log; the last shard to finish writes the outputs and their details from every shard's log, then
    removes the logs. `merge_only`: decode nothing and write the outputs now (an error if a prompt has none)."""
    out = Path(out)
    check_writable(out)  # before any decoding: a folder it cannot write loses nothing
    remove_stale_temps(out.parent, recursive=False)
    partial = partial_log(out)
    recipe = outputs_recipe(asdict(config))  # what the outputs depend on: a resumed run must share it
    log = generation_log(partial, recipe, prompts, shard)
    job = ShardedJob(out.with_name(f".{out.name}.shards-done"), shard)
    mine = [] if merge_only else job.items(len(prompts))
    todo = [i for i in mine if i not in log]
    if len(log) and todo:
        logger.info(
            "resuming: %d outputs in %s and its shards' logs, %d to generate", len(log), partial.name, len(todo)
        )
    if todo:
        check_guide(config, prompts)  # every model, format, context and vocabulary, before any weights load
        job.begin()
        decode_missing(config, prompts, log, todo)
    result = GenerateResult(out, details_path(out), len(mine) - len(todo), len(todo), complete=False)
    with job.finish(force=merge_only) as last:
        if last:
            _write_from_logs(out, config, prompts, partial, recipe)
            result.complete = True
    return result


def _write_from_logs(out: Path, config: GuideConfig, prompts: list[str], partial: Path, recipe: dict) -> None:
    log = generation_log(partial, recipe, prompts)  # re-read: every shard has written its share since
    missing = [i for i in range(len(prompts)) if i not in log]
    if missing:
        raise GuideError(
            f"{len(missing)} of {len(prompts)} prompts have no output in {partial.name} or its shards' logs "
            f"(e.g. prompt {missing[0] + 1}): run every shard (--shard i/n) to the end first"
        )
    write_outputs(out, config, [log.get(i) for i in range(len(prompts))])
    for path in shard_logs(partial):
        path.unlink()


def write_outputs(out: Path, config: GuideConfig, records: list[dict]) -> None:
    """The outputs (AlpacaEval format) and their details file, each written atomically."""
    name = config.generator or config.decoder
    # the outputs and each item's tokens do not depend on batches; a score (float sums over a batch) does, in its
    # last digits, and wall time does
    items = [
        {"instruction": r["instruction"], "output": r["text"], "generator": name, "switch_at": r["switch_at"],
         "stop": r["stop"]}
        for r in records
    ]  # fmt: skip
    details = [
        {"score": r["score"], "tokens": r["tokens"], "seconds": r["seconds"], "batch_seconds": r["batch_seconds"]}
        for r in records
    ]
    write_atomic(out, json.dumps(items, indent=2))  # never a half-written output
    write_atomic(details_path(out), json.dumps({"generator": name, "items": details}, indent=2))
