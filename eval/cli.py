"""`w2s demo`: the main job on the tiny world."""

from __future__ import annotations

import argparse
import logging


def demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="w2s demo",
        description="Run the main job on the tiny world. For now: build the world (cached) and print "
        "samples of each base model with their gold reward.",
    )
    parser.add_argument("-n", "--num-prompts", type=int, default=4, help="prompts to sample per model")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from train.world import ensure_world, show_samples

    paths = ensure_world()
    show_samples(paths, num_prompts=args.num_prompts)
    print("\nThe tiny world's models are cached in:")
    for name, path in paths.items():
        print(f"  {name:8} {path}")
    return 0
