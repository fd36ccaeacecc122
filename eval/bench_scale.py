"""`w2s bench eval`: `w2s eval` over n processes (`accelerate launch`) against one process, items per second.

Both sides are the real command on the tiny world's evaluation recipe (recipes/tiny/eval.yaml: 14 systems,
sampling, best-of-16, CBS, EFT, fusion, WSD, guides alone, the gold judge) over 240 instructions (the recipe's
60 x 4), each in a fresh output folder: start-up, every system's model loads (in each process), judging and the
report (its LC bootstrap over the n processes of the merge) count on both sides. At 60 instructions a
process's fixed costs weigh about as much as its share of the decoding. Every process runs
one torch thread. A warm-up run first builds any tiny-world model the recipe names. Rounds alternate which
side goes first; the figure is the median of the rounds' ratios. Each round also checks that both sides
wrote the same outputs and annotations.

    w2s bench eval                          # recipes/tiny/eval.yaml on 240 instructions, 2 processes, 2 rounds
    w2s bench eval --num_instructions 60 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from w2s.train.world import ensure_world

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "eval.yaml"


def systems() -> list[str]:
    return [s["name"] for s in yaml.safe_load(RECIPE.read_text())["systems"]]


def command(out: Path, processes: int, num_instructions: int, lc_bootstrap: int) -> list[str]:
    w2s = ["-m", "w2s.cli", "eval", "--config", str(RECIPE), "--output_dir", str(out), "--quiet",
           "--num_instructions", str(num_instructions), "--lc_bootstrap_samples", str(lc_bootstrap)]  # fmt: skip
    if processes == 1:
        return [sys.executable, *w2s]
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes)]
    return [sys.executable, *launch, "--mixed_precision", "no", *w2s]


def timed(cmd: list[str]) -> float:
    """Wall seconds of one command, every process on one torch thread and on the CPU."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "TOKENIZERS_PARALLELISM": "false", "MASTER_PORT": str(22000 + os.getpid() % 20000)}  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed:\n{done.stderr[-3000:]}")
    return seconds


def main(args: argparse.Namespace) -> int:
    """`w2s bench eval`, its flags parsed by eval/cli.py."""
    ensure_world()
    n, sides = args.num_instructions, {1: "1 process", args.processes: f"{args.processes} processes"}
    names = systems()
    compared = [f"{name}/{f}" for name in names for f in ("model_outputs.json", "annotations.json")]
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        timed(command(Path(tmp) / "warm-up", 1, 2, 0))  # builds the guides the recipe names, before any timing
        for r in range(args.rounds):
            rate, seconds, outs = {}, {}, {}
            for processes in list(sides)[:: 1 if r % 2 == 0 else -1]:
                outs[processes] = Path(tmp) / f"round{r}-{processes}"
                seconds[processes] = timed(command(outs[processes], processes, n, args.lc_bootstrap_samples))
                rate[processes] = n / seconds[processes]
            same = all((outs[1] / f).read_bytes() == (outs[args.processes] / f).read_bytes() for f in compared)
            ratios.append(rate[args.processes] / rate[1])
            print(
                f"round {r + 1}: {sides[1]} {seconds[1]:.1f} s, {sides[args.processes]} {seconds[args.processes]:.1f} s "
                f"for {n} instructions x {len(names)} systems, ratio {ratios[-1]:.2f}; "
                f"same outputs: {'yes' if same else 'NO'}"
            )
            if not same:
                print("the two sides wrote different outputs: a bug to report", file=sys.stderr)
                return 1
    print(f"w2s eval --config recipes/tiny/eval.yaml, one torch thread per process, {os.cpu_count()} CPUs")
    print(
        f"{sides[args.processes]} / 1 process, items per second (median of {args.rounds} rounds): "
        f"{statistics.median(ratios):.2f}"
    )
    return 0
