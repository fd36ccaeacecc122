"""`w2s`: a thin dispatcher to each stage's own command line (its `cli.py`)."""

from __future__ import annotations

import importlib
import sys

from w2s import __version__
from w2s.guide.commands import run_command

# subcommand -> (module, function, one-line help); modules load only when their command runs
COMMANDS = {
    "world": ("w2s.train.cli", "world", "build the tiny world's tokenizers and base models, show samples"),
    "train": ("w2s.train.cli", "train", "train guides from recipes: sft, dpo, distill; `w2s train guide` (tiny world)"),
    "demo": ("w2s.eval.cli", "demo", "run the main job on the tiny world"),
    "generate": ("w2s.guide.cli", "generate", "steer a strong model with guides: cbs, wsd, eft, fusion, bon, sample"),
    "calibrate": ("w2s.guide.cli", "calibrate", "calibrate draft-switch decoding's threshold on held-out prompts"),
    "serve": ("w2s.eval.cli", "serve", "serve a guide or eval recipe's systems behind an OpenAI-compatible API"),
    "bench": ("w2s.eval.cli", "bench", "benchmarks: `w2s bench guide`, `data`, `eval`, `serve`"),
    "eval": ("w2s.eval.cli", "main", "compare systems on an instruction set: generate, judge, win rates, report"),
    "data": ("w2s.data.cli", "main", "build preference data sets: generate, judge, pair, filter (resumable, sharded)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return (
        "usage: w2s <command> [options]\n\n"
        "w2s: train small guide models and use them to steer a large frozen model.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`w2s <command> --help` for a command's options; "
        "`--debug` anywhere: a traceback instead of a one-line error."
    )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] in ("-V", "--version"):
        print(f"w2s {__version__}")
        return 0
    if argv[0] not in COMMANDS:
        print(f"w2s: unknown command {argv[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[argv[0]]
    return run_command(f"w2s {argv[0]}", getattr(importlib.import_module(module), function), argv[1:])


if __name__ == "__main__":
    sys.exit(main())
