"""`w2s`: a thin dispatcher to each stage's own command line (its `cli.py`)."""

from __future__ import annotations

import argparse
import importlib
import sys

from w2s import __version__

# subcommand -> (module, function, one-line help); modules load only when their command runs
COMMANDS = {
    "world": ("train.cli", "world", "build the tiny world's tokenizers and base models, show samples"),
    "train": ("train.cli", "train", "train guides from recipes: sft, dpo, distill; `w2s train guide` (tiny world)"),
    "demo": ("eval.cli", "demo", "run the main job on the tiny world"),
    "generate": ("guide.cli", "generate", "steer a strong model with guides: cbs, wsd, eft, fusion, bon, sample"),
    "bench": ("guide.cli", "bench", "benchmarks: `w2s bench guide`, `w2s bench data`"),
    "eval": ("eval.cli", "main", "compare systems on an instruction set: generate, judge, win rates, report"),
    "data": ("data.cli", "main", "build preference data sets: generate, judge, pair, filter (resumable, sharded)"),
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, but a bad flag is one line naming it, not the whole usage first (`--help` shows that)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (--help for the options)\n")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return (
        "usage: w2s <command> [options]\n\n"
        "w2s: train small guide models and use them to steer a large frozen model.\n\n"
        "commands:\n" + "\n".join(lines) + "\n\n`w2s <command> --help` for a command's options."
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
    return getattr(importlib.import_module(module), function)(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
