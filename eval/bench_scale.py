"""`w2s bench eval`: `w2s eval` over n processes (`accelerate launch`) against one process, items per second.

Both sides are the real command, each in fresh output folders, on the tiny world (sampling from the strong
base as the reference, weak-to-strong search as the system, the gold judge): start-up, model loads, judging
and the report count on both sides. Every process runs one torch thread. Rounds alternate which side goes
first; the figure is the median of the rounds' ratios. Each round also checks that both sides wrote the same
outputs and annotations.

    w2s bench eval                          # 48 instructions, 2 processes, 2 rounds
    w2s bench eval --num_instructions 96 --processes 2 --rounds 3
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

SYSTEM = {"strong_model": "tiny:strong", "max_new_tokens": 48, "temperature": 1.0, "top_k": 0}
CBS = {"tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs", "width": 2, "successors": 4, "chunk_len": 8}
COMPARED = ["base/model_outputs.json", "cbs/model_outputs.json", "cbs/annotations.json"]


def recipe(folder: Path, num_instructions: int, batch_size: int) -> Path:
    path = folder / "eval.yaml"
    settings = {
        "instructions": "tiny:test",
        "num_instructions": num_instructions,
        "reference": "base",
        "judge": "gold",
        "batch_size": batch_size,
        "systems": [{"name": "base", "guide": SYSTEM}, {"name": "cbs", "guide": {**SYSTEM, **CBS}}],
    }
    path.write_text(yaml.safe_dump(settings))
    return path


def command(config: Path, out: Path, processes: int) -> list[str]:
    w2s = ["-m", "w2s.cli", "eval", "--config", str(config), "--output_dir", str(out), "--quiet"]
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
    ensure_world()  # build (or find) the models before timing
    n, sides = args.num_instructions, {1: "1 process", args.processes: f"{args.processes} processes"}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        config = recipe(Path(tmp), n, args.batch_size)
        for r in range(args.rounds):
            rate, outs = {}, {}
            for processes in list(sides)[:: 1 if r % 2 == 0 else -1]:
                outs[processes] = Path(tmp) / f"round{r}-{processes}"
                rate[processes] = n / timed(command(config, outs[processes], processes))
            same = all(
                (outs[1] / f).read_bytes() == (outs[args.processes] / f).read_bytes() for f in COMPARED
            )  # fmt: skip
            ratios.append(rate[args.processes] / rate[1])
            print(
                f"round {r + 1}: {sides[1]} {rate[1]:.2f} items/s, {sides[args.processes]} "
                f"{rate[args.processes]:.2f} items/s, ratio {ratios[-1]:.2f}; same outputs: {'yes' if same else 'NO'}"
            )
            if not same:
                print("the two sides wrote different outputs: a bug to report", file=sys.stderr)
                return 1
    print(
        f"w2s eval on {n} instructions (sampling and CBS W2 K4 L8 from tiny:strong, {SYSTEM['max_new_tokens']} new "
        f"tokens, gold judge), one torch thread per process, {os.cpu_count()} CPUs"
    )
    print(
        f"{sides[args.processes]} / 1 process, items per second (median of {args.rounds} rounds): "
        f"{statistics.median(ratios):.2f}"
    )
    return 0
