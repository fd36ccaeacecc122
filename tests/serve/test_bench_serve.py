"""`w2s bench serve`: 32 concurrent clients of `w2s serve` beside offline `w2s generate` of the same prompts at
the same batch size, in one run; every served answer is the offline one. The speed itself is the benchmark's
to print (docs/benchmarks.md), not a test's to assert: a timed test fails on a busy machine."""

from __future__ import annotations

import pytest

from w2s.data.world import world_prompts
from w2s.eval.bench_serve import run
from w2s.guide.config import GuideConfig


@pytest.mark.slow
def test_the_serve_bench_prints_its_figures_and_every_served_answer_is_the_offline_one(world_paths, tiny_guide, capsys):
    config = GuideConfig.from_yaml("recipes/tiny/guide.yaml", ["--max_new_tokens", "32", "--batch_size", "16"])
    prompts = list(dict.fromkeys(world_prompts("test", 256)))[:64]  # 4 batches each side
    figures = run(config, prompts, clients=32, rounds=1)
    out = capsys.readouterr().out
    assert figures["identical"]
    assert figures["ratio"] > 0 and 0 < figures["p50"] <= figures["p95"]
    assert f"{figures['ratio']:.2f}" in out  # printed
