"""`w2s bench serve`: `w2s serve` under concurrent clients against offline `w2s generate` of the same prompts at
the same batch size, side by side in one run.

The offline side is `Guide.generate` over the prompts, `batch_size` at a time, its models loaded (and warmed by
one decode) before the clock starts. The served side is `w2s serve` of the same recipe in its own process, on
loopback, with `--clients` threads each sending one chat request at a time (a prompt's text as one user
message) until every prompt is answered; the clock runs from the first request to the last answer. Both sides
decode on `--threads` torch threads, one after the other, alternating which goes first. Reported: answers per
second of each and their ratio (the best round of each), the served requests' p50/p95 latency, and whether
every served answer is the offline one (it must be: guide/serve.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import torch
import yaml

from w2s.data.world import world_prompts
from w2s.guide.commands import UserError
from w2s.guide.config import GuideConfig
from w2s.guide.run import Guide
from w2s.guide.vllm import stop_group

logger = logging.getLogger(__name__)


class BenchError(UserError, RuntimeError):
    """The server of the benchmark did not start or answer."""


def start_server(recipe: Path, threads: int, max_wait_ms: float, log) -> tuple[subprocess.Popen, str]:
    """`w2s serve` of `recipe` on a free loopback port; its process and base URL once it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "w2s.cli", "serve", "--config", str(recipe), "--port", "0", "--threads", str(threads),
         "--max_wait_ms", str(max_wait_ms)],
        stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True,
        env={**os.environ, "OMP_NUM_THREADS": str(threads)},
    )  # fmt: skip
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise BenchError(f"w2s serve did not start (its log: {log.name})")
    return proc, line.split()[-1]


def ask(url: str, model: str, prompt: str) -> tuple[str, float]:
    """The answer to one chat request, and the seconds its batch took to decode on the server."""
    body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    request = urllib.request.Request(
        f"{url}/chat/completions", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        choice = json.loads(response.read())["choices"][0]
    return choice["message"]["content"], choice["w2s"]["batch_seconds"]


def served_round(url: str, model: str, prompts: list[str], clients: int) -> tuple[float, list[float], list[str], float]:
    """Wall seconds, each request's latency, each prompt's answer and the server's seconds of decoding (its batches'),
    `clients` requests in flight at once."""
    answers: list[str | None] = [None] * len(prompts)
    batches: set[float] = set()
    latencies: list[float] = []
    lock, next_index = threading.Lock(), iter(range(len(prompts)))

    def client():
        while True:
            with lock:
                i = next(next_index, None)
            if i is None:
                return
            began = time.perf_counter()
            answers[i], batch = ask(url, model, prompts[i])
            with lock:
                latencies.append(time.perf_counter() - began)
                batches.add(batch)

    workers = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return time.perf_counter() - start, latencies, answers, sum(batches)


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def run(
    config: GuideConfig,
    prompts: list[str],
    *,
    clients: int = 32,
    rounds: int = 2,
    threads: int = 1,
    max_wait_ms: float = 20.0,
    source: str = "",
) -> dict:
    """Both sides `rounds` times (see the module docstring); prints each round and returns the figures."""
    name = config.generator or config.decoder
    print(
        f"w2s bench serve: {name} ({source or 'recipe'}), {len(prompts)} prompts, batch size {config.batch_size}, "
        f"{clients} clients, {threads} torch thread(s) per side, max wait {max_wait_ms:g} ms",
        flush=True,
    )
    guide = Guide(config)
    guide.generate(prompts[:1], progress=False)  # warm: the engine checks its cache once per process
    offline, served, latencies, identical = [], [], [], True
    with tempfile.TemporaryDirectory() as tmp:
        recipe = Path(tmp) / "guide.yaml"
        recipe.write_text(yaml.safe_dump(asdict(config)))
        with open(Path(tmp) / "server.log", "w") as log:
            proc, url = start_server(recipe, threads, max_wait_ms, log)
            try:
                ask(url, name, prompts[0])  # warm
                for r in range(rounds):
                    for side in ("offline", "served") if r % 2 == 0 else ("served", "offline"):
                        if side == "offline":
                            start = time.perf_counter()
                            expected = [g.text for g in guide.generate(prompts, progress=False)]
                            offline.append(time.perf_counter() - start)
                        else:
                            wall, lat, answers, decoding = served_round(url, name, prompts, clients)
                            served.append(wall)
                            latencies.append(lat)
                    identical = identical and answers == expected
                    print(
                        f"round {r + 1}: offline {offline[-1]:.2f} s ({len(prompts) / offline[-1]:.1f} answers/s), "
                        f"served {served[-1]:.2f} s ({len(prompts) / served[-1]:.1f} answers/s; its batches decoded in "
                        f"{decoding:.2f} s)",
                        flush=True,
                    )
            finally:
                stop_group(proc)
    best = min(range(len(served)), key=served.__getitem__)
    lat = latencies[best]
    figures = {
        "ratio": min(offline) / served[best], "offline_per_second": len(prompts) / min(offline),
        "served_per_second": len(prompts) / served[best], "p50": percentile(lat, 50), "p95": percentile(lat, 95),
        "identical": identical,
    }  # fmt: skip
    print(f"served / offline throughput: {figures['ratio']:.2f}x (best round of each)")
    print(f"served latency: p50 {figures['p50']:.2f} s, p95 {figures['p95']:.2f} s ({len(lat)} requests)")
    print(f"served answers identical to offline: {'yes' if identical else 'NO'}")
    return figures


def main(args: argparse.Namespace) -> int:
    """`w2s bench serve`, its flags parsed by eval/cli.py."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    torch.set_num_threads(args.threads)
    flags = list(args.overrides) + (["--batch_size", str(args.batch_size)] if args.batch_size else [])
    config = GuideConfig.from_yaml(args.config, flags)
    prompts = list(dict.fromkeys(world_prompts("test", 4 * args.num_prompts)))[: args.num_prompts]
    figures = run(config, prompts, clients=args.clients, rounds=args.rounds, threads=args.threads,
                  max_wait_ms=args.max_wait_ms, source=args.config)  # fmt: skip
    return 0 if figures["identical"] else 1
