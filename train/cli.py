"""`w2s world`: the tiny world's tokenizers and base models."""

from __future__ import annotations

import argparse
import logging

from train.world import BASES, ensure_world


def world(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="w2s world",
        description="Build the tiny world (tokenizers and base models, cached; $W2S_CACHE moves the cache) "
        "and show what its models write.",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    build = sub.add_parser("build", help="build (or find in the cache) every base model and print its folder")
    samples = sub.add_parser("samples", help="print samples of each base model with their gold reward")
    for p in (build, samples):
        p.add_argument("--only", nargs="+", choices=sorted(BASES), default=list(BASES), help="which bases")
    samples.add_argument("-n", "--num-prompts", type=int, default=4, help="prompts to sample (default 4)")
    samples.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    paths = ensure_world(tuple(args.only))
    if args.action == "build":
        for name, path in paths.items():
            print(f"{name:8} {path}")
        return 0
    from train.world import show_samples

    show_samples(paths, num_prompts=args.num_prompts, seed=args.seed)
    return 0
