"""`w2s demo`: the main job on the tiny world; `w2s eval`: compare systems on an instruction set; `w2s bench`."""

from __future__ import annotations

import logging
import sys

from w2s.data.judges import JudgeError
from w2s.eval import bench_data, bench_guide
from w2s.eval.alignment_tax import alignment_tax
from w2s.eval.config import EvalConfigError, add_flags, load_config
from w2s.eval.demo import main as demo_main
from w2s.eval.generate import GenerationError
from w2s.eval.instructions import InstructionSetError
from w2s.eval.run import evaluate
from w2s.guide.commands import ArgumentParser

BENCH_USAGE = """usage: w2s bench {guide,data} [options]

  guide   the decoding engine against baselines, side by side (w2s bench guide --help)
  data    the data builder's generation stage against a plain generate loop (w2s bench data --help)"""


def demo(argv: list[str]) -> int:
    """`w2s demo`: the main job on the tiny world (see eval/demo.py)."""

    return demo_main(argv)


def main(argv: list[str]) -> int:
    """`w2s eval --config recipes/<family>/eval.yaml [--<key> value ...]`: generate, judge, report."""

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

    try:
        config = load_config(path, {k: v for k, v in args.items() if v is not None})
        result = evaluate(config, progress=not quiet)
        if config.lm_eval_tasks:
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


def bench(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(BENCH_USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "guide":
        return bench_guide.main(argv[1:])
    if argv[0] == "data":
        return bench_data.main(argv[1:])
    print(f"w2s bench: unknown benchmark {argv[0]!r}: choose guide or data", file=sys.stderr)
    return 2
