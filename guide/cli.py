"""`w2s generate`: decode prompts with a guide recipe (the decoding, guide/outputs.py `generate_to`, loads when it
runs: guide/commands.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from w2s.guide.commands import ArgumentParser, GuideError, command, lazy
from w2s.guide.config import GuideConfig
from w2s.guide.files import check_writable, read_rows, write_atomic
from w2s.guide.shards import parse_shard
from w2s.guide.sources import resolve_prompts

generate_to = lazy("w2s.guide.outputs:generate_to")
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
    prompts = load_prompts(config.prompts, config.num_prompts)
    result = generate_to(config, prompts, out, shard, merge_only=args.merge)
    if result.complete:
        print(f"wrote {len(prompts)} outputs to {out} (scores and costs: {result.details})")
    else:
        print(
            f"shard {shard[0]}/{shard[1]}: done; the last shard to finish writes {out} "
            "(or run `w2s generate --merge` once every shard finished)"
        )
    return 0


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
