"""`w2s world`: the tiny world's tokenizers and base models; `w2s train`: the training stages."""

from __future__ import annotations

import logging
import sys

from w2s.data.world.cache import world_seed
from w2s.guide.commands import ArgumentParser, command, lazy
from w2s.train.tiny import BASES, GUIDES

# the work loads when a command runs, not for --help (guide/commands.py)
ensure_guide = lazy("w2s.train.guides:ensure_guide")
guides_table = lazy("w2s.train.guides:guides_table")
bases_table = lazy("w2s.train.world:bases_table")
ensure_world = lazy("w2s.train.world:ensure_world")
show_samples = lazy("w2s.train.world:show_samples")
STAGES = {stage: lazy(f"w2s.train.{stage}:cli") for stage in ("sft", "dpo", "distill")}


@command("w2s world")
def world(argv: list[str]) -> int:

    parser = ArgumentParser(
        prog="w2s world",
        description="Build the tiny world (tokenizers and base models, cached; $W2S_CACHE moves the cache) "
        "and show what its models write.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build (or find in the cache) every base model and print its folder")
    samples = sub.add_parser("samples", help="print samples of each base model with their gold reward")
    report = sub.add_parser(
        "report",
        help="the tables of docs/tiny-world.md and docs/train.md: how each base writes the world's language (--guides: and each guide)",
    )
    for p in (build, samples):
        p.add_argument("--only", nargs="+", choices=sorted(BASES), default=list(BASES), help="which bases")
    samples.add_argument("-n", "--num-prompts", type=int, default=4, help="prompts to sample (default 4)")
    report.add_argument("-n", "--num-prompts", type=int, default=300, help="test prompts sampled (default 300)")
    report.add_argument(
        "--guides", action="store_true", help="also train (or find) every tiny-world guide and judge it"
    )
    for p in (samples, report):
        p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.action == "report":
        print(f"tiny world {world_seed()} (W2S_WORLD_SEED), {args.num_prompts} test prompts sampled at temperature 1\n")
        print(bases_table(args.num_prompts, args.seed))
        if args.guides:
            print(guides_table(args.num_prompts, args.seed))
        return 0

    paths = ensure_world(tuple(args.only))
    if args.action == "build":
        for name, path in paths.items():
            print(f"{name:8} {path}")
        return 0

    show_samples(paths, num_prompts=args.num_prompts, seed=args.seed)
    return 0


TRAIN_USAGE = """usage: w2s train {sft,dpo,distill} --config RECIPE [--field value ...]
       w2s train guide [--kind dpo|sft_dpo|lora|b]

  sft, dpo, distill   run train/<stage>.py in this process (for several devices:
                      accelerate launch --config_file recipes/accelerate_configs/<x>.yaml train/<stage>.py ...)
  guide               build (or find in the cache) a tiny-world guide and print its folder

`w2s train <stage> --help` for a stage's options (every recipe key is one)."""


@command("w2s train")
def train(argv: list[str]) -> int:
    """`w2s train`: one training stage from a recipe, or a tiny-world guide."""
    if not argv or argv[0] in ("-h", "--help"):
        print(TRAIN_USAGE)
        return 0
    stage, rest = argv[0], argv[1:]
    if stage == "guide":
        parser = ArgumentParser(prog="w2s train guide", description="Build a tiny-world guide (cached).")
        parser.add_argument("--kind", choices=sorted(GUIDES), default="dpo")
        args = parser.parse_args(rest)
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        print(ensure_guide(args.kind))
        return 0
    if stage not in STAGES:
        print(f"w2s train: unknown stage {stage!r}\n\n{TRAIN_USAGE}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return STAGES[stage](rest, prog=f"w2s train {stage}")
