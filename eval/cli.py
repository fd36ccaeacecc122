"""`w2s demo`: the main job on the tiny world; `w2s eval`: compare systems on an instruction set."""

from __future__ import annotations

import logging
import sys

from w2s.cli import ArgumentParser


def demo(argv: list[str]) -> int:
    """`w2s demo`: the main job on the tiny world (see eval/demo.py)."""
    from eval.demo import main as demo_main

    return demo_main(argv)


def main(argv: list[str]) -> int:
    """`w2s eval --config recipes/<family>/eval.yaml [--<key> value ...]`: generate, judge, report."""
    from eval.config import EvalConfigError, add_flags, load_config

    parser = ArgumentParser(
        prog="w2s eval",
        description="Compare systems (each a guide recipe) on an instruction set: generate their outputs "
        "(resumable), judge them against a reference (cached), write AlpacaEval-format outputs, a leaderboard "
        "and plots. Flags override the recipe's keys.",
    )
    parser.add_argument("--config", help="eval recipe YAML, e.g. recipes/tiny/eval.yaml")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    add_flags(parser)
    args = vars(parser.parse_args(argv))
    path, quiet = args.pop("config"), args.pop("quiet")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from eval.generate import GenerationError
    from eval.instructions import InstructionSetError
    from eval.judges import JudgeError
    from eval.run import evaluate

    try:
        config = load_config(path, {k: v for k, v in args.items() if v is not None})
        result = evaluate(config, progress=not quiet)
        if config.lm_eval_tasks:
            from eval.alignment_tax import alignment_tax

            alignment_tax(config)
    except (EvalConfigError, InstructionSetError, GenerationError, JudgeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from pathlib import Path

    print((Path(config.output_dir) / "leaderboard.md").read_text())
    gen = ", ".join(f"{k}: {v['generated']} generated, {v['reused']} reused" for k, v in result.generation.items())
    print(f"generation: {gen}")
    print(
        f"judging ({result.judging['judge']}): {result.judging['judged']} judged, {result.judging['cached']} from cache"
    )
    print("wrote: " + ", ".join(result.files))
    return 0
