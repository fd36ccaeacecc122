"""`w2s generate`: decode prompts with a guide recipe (the decoding loads when it runs: guide/commands.py)."""

from __future__ import annotations

import json
import logging
import os
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from filelock import FileLock
from tqdm.auto import tqdm

from w2s.guide.commands import ArgumentParser, GuideError, command, lazy
from w2s.guide.config import GuideConfig, outputs_recipe
from w2s.guide.files import check_writable, naming, read_rows, remove_stale_temps, write_atomic
from w2s.guide.shards import parse_shard, shard_items, shard_log, shard_logs
from w2s.guide.sources import resolve_prompts

Guide = lazy("w2s.guide.run:Guide")
item_keys = lazy("w2s.guide.streams:item_keys")
check_guide = lazy("w2s.guide.preflight:check_guide")
calibrate_wsd = lazy("w2s.guide.calibrate:calibrate_wsd")
check_calibration = lazy("w2s.guide.calibrate:check_calibration")


def load_prompts(source: str, limit: int | None) -> list[str]:
    """`tiny:<split>` prompts (a registered source: guide/sources.py), or the `instruction` field of an
    AlpacaEval JSON / JSONL file; an unreadable file, item or empty instruction is an error naming it."""
    named = resolve_prompts(source, limit)
    if named is not None:
        return named
    path = Path(source)
    if not path.is_file():
        raise GuideError(f"prompts {source!r}: no such file (or use tiny:test)")
    items = read_rows(path, GuideError)
    prompts = []
    for where, item in items:
        if not isinstance(item, dict) or "instruction" not in item:
            raise GuideError(f"{where}: not an object with an 'instruction' field")
        if not isinstance(item["instruction"], str) or not item["instruction"].strip():
            raise GuideError(f"{where}: the instruction is empty")
        prompts.append(item["instruction"])
    if not prompts:
        raise GuideError(f"{path}: no prompts")
    return prompts[:limit] if limit else prompts


def details_path(out: Path) -> Path:
    """Where `w2s generate` writes each item's score, tokens per model and wall time (its share, and its batch's),
    beside the outputs."""
    return out.with_name(out.stem + ".details.json")


def read_partial(paths: list[Path], recipe: dict, prompts: list[str]) -> dict[int, dict]:
    """The records that runs (killed ones, or the shards of one) left in the logs `paths` (a line cut by a kill
    is dropped), each log checked to be of the same recipe and prompts; {} if there are none."""
    done: dict[int, dict] = {}
    for path in paths:
        data = path.read_bytes()
        lines = [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]
        if not lines:
            continue
        if lines[0].get("recipe") != recipe:
            raise GuideError(
                f"{path}: left by a run of another recipe (was {lines[0].get('recipe')}): delete it to start again"
            )
        for record in lines[1:]:
            i = record["index"]
            if i >= len(prompts) or prompts[i] != record["instruction"]:
                raise GuideError(f"{path}: item {i + 1} was generated for another prompt: delete it to start again")
            done.setdefault(i, record)
    return done


@command("w2s generate")
def generate(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="w2s generate",
        description="Decode prompts with a guide recipe and write AlpacaEval-format outputs "
        "(instruction, output, generator) with each item's switch point and why it stopped; each item's score "
        "and cost (tokens per model, wall time) go beside them in <output>.details.json. A killed run resumes "
        "where it stopped and writes the outputs an uninterrupted run writes. Under `accelerate launch` (or "
        "with --shard i/n) each process decodes every n-th prompt into its own log; the last one to finish "
        "writes the outputs, the same as one process writes.",
        epilog="Any recipe key can be overridden: --decoder cbs --width 2 --output out.json. "
        "Two processes: accelerate launch --multi_gpu --num_processes 2 -m w2s.cli generate --config ...",
    )
    parser.add_argument("--config", required=True, help="a guide recipe, e.g. recipes/tiny/guide.yaml")
    parser.add_argument(
        "--shard", help="i/n: decode prompts i, i+n, i+2n, ... (default: the rank under accelerate launch, else all)"
    )
    parser.add_argument(
        "--merge", action="store_true", help="write the outputs from the shards' logs only (no model loads)"
    )
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = GuideConfig.from_yaml(args.config, overrides)
    shard = (0, 1) if args.merge else parse_shard(args.shard)
    out = Path(config.output or f"outputs/{config.generator or config.decoder}.json")
    check_writable(out)  # before any decoding: a folder it cannot write loses nothing
    remove_stale_temps(out.parent, recursive=False)
    prompts = load_prompts(config.prompts, config.num_prompts)
    partial = out.with_name(out.name + ".partial.jsonl")  # finished batches of a run that may be killed
    recipe = outputs_recipe(asdict(config))  # what the outputs depend on: a resumed run must share it
    done = read_partial(shard_logs(partial), recipe, prompts)
    todo = [] if args.merge else [i for i in shard_items(len(prompts), shard) if i not in done]
    if done and todo:
        print(f"resuming: {len(done)} outputs in {partial.name} and its shards' logs, {len(todo)} to generate")
    if todo:
        check_guide(config, prompts)  # every model, format, context and vocabulary, before any weights load
        _decode(config, recipe, prompts, todo, shard_log(partial, shard))
    out.parent.mkdir(parents=True, exist_ok=True)
    sharded = shard[1] > 1 or args.merge
    with FileLock(str(out.with_name(f".{out.name}.lock"))) if sharded else nullcontext():  # one shard writes
        logs = shard_logs(partial)
        if not logs and out.exists() and not args.merge:
            print(f"shard {shard[0]}/{shard[1]}: done; another shard wrote {out}")
            return 0
        done = read_partial(logs, recipe, prompts)
        missing = [i for i in range(len(prompts)) if i not in done]
        if missing:
            if args.merge:
                raise GuideError(
                    f"{len(missing)} of {len(prompts)} prompts have no output in {partial.name} or its shards' logs "
                    f"(e.g. prompt {missing[0] + 1}): run every shard (--shard i/n) to the end first"
                )
            print(
                f"shard {shard[0]}/{shard[1]}: done; {len(missing)} prompts of other shards are still to decode: "
                f"the last shard to finish writes {out} (or run `w2s generate --merge` once every shard finished)"
            )
            return 0
        write_outputs(out, config, [done[i] for i in range(len(prompts))])
        for log in logs:
            log.unlink()
    return 0


def _decode(config: GuideConfig, recipe: dict, prompts: list[str], todo: list[int], log_path: Path) -> None:
    """Decodes the prompts `todo`, appending each batch's records to `log_path` (flushed, fsynced), a new log
    headed by the outputs' `recipe`."""
    guide, items = Guide(config), item_keys(prompts)  # an item's stream: its prompt, not its batch or shard
    log_path.parent.mkdir(parents=True, exist_ok=True)  # checked writable above; made once the inputs passed
    with naming(log_path), log_path.open("a", encoding="utf-8") as log:  # a full disk names the log
        if log.tell() == 0:
            log.write(json.dumps({"recipe": recipe}) + "\n")
        for start in tqdm(range(0, len(todo), config.batch_size), desc=f"generate ({config.decoder})"):
            index = todo[start : start + config.batch_size]
            for i, g in zip(index, guide.decode([prompts[i] for i in index], [items[i] for i in index]), strict=True):
                log.write(json.dumps({"index": i, "instruction": prompts[i], **asdict(g)}) + "\n")
            log.flush()
            os.fsync(log.fileno())


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
        {"score": r["score"], "tokens": r["tokens"], "seconds": r["seconds"], "batch_seconds": r.get("batch_seconds")}
        for r in records
    ]  # batch_seconds: None for an item an older release wrote before its run was killed
    write_atomic(out, json.dumps(items, indent=2))  # never a half-written output
    write_atomic(details_path(out), json.dumps({"generator": name, "items": details}, indent=2))
    print(f"wrote {len(items)} outputs to {out} (scores and costs: {details_path(out)})")


@command("w2s calibrate")
def calibrate(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="w2s calibrate",
        description="Calibrate draft-switch decoding's threshold tau on held-out prompts: the smallest tau of the "
        "grid 0.05..0.95 at which at least half of the pilot's drafts are handed over no earlier than the end of "
        "their first sentence. Prints the grid and the chosen tau (and writes them as JSON with --json).",
        epilog="e.g. w2s calibrate --config recipes/tiny/guide.yaml --decoder wsd --prompts tiny:train --num_prompts 64",
    )
    parser.add_argument("--config", required=True, help="a guide recipe with decoder wsd (or --decoder wsd)")
    parser.add_argument("--sentence_end", default=".", help="the text that ends a sentence (default: '.')")
    parser.add_argument("--json", dest="json_out", help="also write the calibration to this JSON file")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    config = GuideConfig.from_yaml(args.config, overrides)
    check_calibration(config)  # before the preflight, which would look at the models of another decoder
    if args.json_out:
        check_writable(Path(args.json_out))
    prompts = load_prompts(config.prompts, config.num_prompts)
    check_guide(config, prompts)
    result = calibrate_wsd(config, prompts, sentence_end=args.sentence_end)
    print(result.table())
    if result.threshold is None:
        print(f"no threshold of the grid hands over at least half the drafts after their first {args.sentence_end!r}")
    else:
        print(
            f"threshold: {result.threshold} (window {result.window}, {result.num_prompts} prompts of {config.prompts})"
        )
    if args.json_out:
        write_atomic(Path(args.json_out), json.dumps(asdict(result), indent=2))
    return 0 if result.threshold is not None else 1
