"""`w2s bench serve`: 32 concurrent clients of `w2s serve` answer at least 0.8x as fast as offline `w2s generate`
of the same prompts at the same batch size, in one run, and every served answer is the offline one."""

from __future__ import annotations

import pytest

from w2s.data.world import world_prompts
from w2s.eval.bench_serve import run
from w2s.guide.config import GuideConfig


@pytest.mark.slow
def test_served_throughput_at_32_clients_is_at_least_0_8x_offline(world_paths, tiny_guide, capsys):
    config = GuideConfig.from_yaml("recipes/tiny/guide.yaml", ["--max_new_tokens", "32", "--batch_size", "16"])
    prompts = list(dict.fromkeys(world_prompts("test", 256)))[:64]  # 4 batches each side
    figures = run(config, prompts, clients=32, rounds=2)
    print(capsys.readouterr().out)  # the figures, with -s
    assert figures["identical"]
    assert figures["ratio"] >= 0.8, figures
    assert 0 < figures["p50"] <= figures["p95"]
