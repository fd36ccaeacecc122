"""`w2s data`: build preference data sets (generate, judge, pair, filter), merge shards, binarise rated sets.

    w2s data build --config recipes/tiny/data.yaml --output_dir out/tiny-pairs
    w2s data build --config recipes/ultrafeedback/data.yaml --shard 0/4      # one of four processes
    accelerate launch -m w2s.data.cli build --config recipes/ultrafeedback/data.yaml   # ranks pick shards
    w2s data merge --config recipes/ultrafeedback/data.yaml
    w2s data binarize --source openbmb/UltraFeedback --output_dir out/uf-binarized
    w2s bench data                                   # (eval/bench_data.py)

Any top-level recipe key can be overridden as a flag: `--num_prompts 200 --seed 3`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import yaml

from w2s.data.binarize import BinarizeConfig
from w2s.data.recipe import load_recipe
from w2s.guide.commands import ArgumentParser, command, lazy

# the work loads when a command runs, not for --help (guide/commands.py)
build_data = lazy("w2s.data.build:build")
merge = lazy("w2s.data.build:merge")
plan = lazy("w2s.data.build:plan")
binarize_to_disk = lazy("w2s.data.binarize:binarize_to_disk")

logger = logging.getLogger(__name__)


def _overrides(extra: list[str], parser: argparse.ArgumentParser) -> dict[str, Any]:
    """`--key value` / `--key=value` pairs as recipe overrides (values parsed as YAML)."""
    out, i = {}, 0
    while i < len(extra):
        arg = extra[i]
        if not arg.startswith("--"):
            parser.error(f"unexpected argument {arg!r}: recipe overrides are --key value")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(extra):
                parser.error(f"{arg}: missing a value")
            value, i = extra[i + 1], i + 1
        out[key] = yaml.safe_load(value)
        i += 1
    return out


def build(argv: list[str], *, merge_only: bool = False) -> int:
    parser = ArgumentParser(
        prog=f"w2s data {'merge' if merge_only else 'build'}",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="data recipe YAML (recipes/<family>/data.yaml)")
    if not merge_only:
        parser.add_argument(
            "--shard",
            help="i/n: run this process's share of the shards (default: the rank under accelerate launch, else all)",
        )
        parser.add_argument("--no-merge", action="store_true", help="stop after generating and judging")
    args, extra = parser.parse_known_args(argv)

    recipe = load_recipe(args.config, _overrides(extra, parser))
    path = merge(plan(recipe)) if merge_only else build_data(recipe, shard=args.shard, do_merge=not args.no_merge)
    if path is not None:
        print(path)
    return 0


def binarize(argv: list[str]) -> int:

    parser = ArgumentParser(
        prog="w2s data binarize",
        description="Multi-response rated sets "
        "(UltraFeedback style) into preference pairs: the highest mean rating chosen, "
        "a random lower one rejected.",
    )
    defaults = BinarizeConfig()
    parser.add_argument("--source", required=True, help="hub id, save_to_disk folder or .json/.jsonl file")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--split", default=defaults.split)
    parser.add_argument("--prompt_field", default=defaults.prompt_field)
    parser.add_argument("--completions_field", default=defaults.completions_field)
    parser.add_argument("--response_key", default=defaults.response_key)
    parser.add_argument("--model_key", default=defaults.model_key)
    parser.add_argument(
        "--rating_keys",
        nargs="+",
        default=defaults.rating_keys,
        help="dotted paths of the ratings inside a completion; their mean is its score",
    )
    parser.add_argument("--test_fraction", type=float, default=defaults.test_fraction)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    args = vars(parser.parse_args(argv))
    source, output_dir = args.pop("source"), args.pop("output_dir")
    print(binarize_to_disk(source, output_dir, BinarizeConfig(**args)))
    return 0


@command("w2s data")
def main(argv: list[str]) -> int:
    """`w2s data <build|merge|binarize> ...`."""
    actions = {"build": build, "merge": lambda a: build(a, merge_only=True), "binarize": binarize}
    usage = f"usage: w2s data {{{','.join(actions)}}} ...   (w2s data <action> --help for its options)\n\n{__doc__}"
    if not argv or argv[0] not in actions:
        if argv and argv[0] in ("-h", "--help"):
            print(usage)
            return 0
        print(f"w2s data: unknown action {argv[0]!r}\n\n{usage}" if argv else usage, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return actions[argv[0]](argv[1:])


if __name__ == "__main__":  # accelerate launch -m w2s.data.cli build ...
    sys.exit(main(sys.argv[1:]))
