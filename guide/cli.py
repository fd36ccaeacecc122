"""`w2s generate`: decode prompts with a guide recipe (the decoding loads when it runs: guide/commands.py)."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from w2s.guide.commands import ArgumentParser, GuideError, command, lazy
from w2s.guide.config import GuideConfig
from w2s.guide.files import check_writable, remove_stale_temps, write_atomic
from w2s.guide.sources import resolve_prompts

Guide = lazy("w2s.guide.run:Guide")
check_guide = lazy("w2s.guide.preflight:check_guide")


def load_prompts(source: str, limit: int | None) -> list[str]:
    """`tiny:<split>` prompts (a registered source: guide/sources.py), or the `instruction` field of an
    AlpacaEval JSON / JSONL file; an unreadable file, item or empty instruction is an error naming it."""
    named = resolve_prompts(source, limit)
    if named is not None:
        return named
    path = Path(source)
    if not path.is_file():
        raise GuideError(f"prompts {source!r}: no such file (or use tiny:test)")
    if path.suffix == ".jsonl":
        items = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    items.append((f"{path}:{number}", json.loads(line)))
                except json.JSONDecodeError as e:
                    raise GuideError(f"{path}:{number}: not valid JSON ({e.msg})") from None
    else:
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise GuideError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
        if not isinstance(data, list):
            raise GuideError(f'{path}: expected a JSON list of {{"instruction": ...}} objects')
        items = [(f"{path}: item {number}", item) for number, item in enumerate(data, 1)]
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
        "(instruction, output, generator) with per-item score, switch point, tokens per model and wall time.",
        epilog="Any recipe key can be overridden: --decoder cbs --width 2 --output out.json",
    )
    parser.add_argument("--config", required=True, help="a guide recipe, e.g. recipes/tiny/guide.yaml")
    args, overrides = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    config = GuideConfig.from_yaml(args.config, overrides)
    out = Path(config.output or f"outputs/{config.generator or config.decoder}.json")
    check_writable(out)  # before any decoding: a folder it cannot write loses nothing
    remove_stale_temps(out.parent, recursive=False)
    prompts = load_prompts(config.prompts, config.num_prompts)
    check_guide(config, prompts)  # every model, format, context and vocabulary, before any weights load
    generations = Guide(config).generate(prompts)  # a user's mistake: one line, exit 2 (guide/commands.py)
    name = config.generator or config.decoder
    items = [
        {"instruction": p, "output": g.text, "generator": name, **{k: v for k, v in asdict(g).items() if k != "text"}}
        for p, g in zip(prompts, generations, strict=True)
    ]
    write_atomic(out, json.dumps(items, indent=2))  # never a half-written output
    print(f"wrote {len(items)} outputs to {out}")
    return 0
