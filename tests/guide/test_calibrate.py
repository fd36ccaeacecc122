"""Calibrating WSD's threshold: the rule by hand, and the switches it predicts are the ones WSD makes."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.calibrate import calibrate_wsd, choose_threshold


def test_choose_threshold_by_hand():
    # window 2; geometric means of each window (i >= 1), and the index of each draft's first sentence end:
    # A: 0.1, 0.3, 0.9, 0.9 (end 2)   B: 0.5, 0.5, 0.5 (end 3)   C: 0.2, 0.2, 0.4, 0.8 (end 1)
    probs = [[0.1, 0.1, 0.9, 0.9, 0.9], [0.5, 0.5, 0.5, 0.5], [0.2, 0.2, 0.2, 0.8, 0.8]]
    logprobs = [[math.log(p) for p in draft] for draft in probs]
    threshold, grid, kept = choose_threshold(logprobs, [2, 3, 1], window=2)
    # tau 0.05 and 0.10: A and B switch at token 1, before their sentence ends; only C is handed over after
    # its end (1 of 3). tau 0.15: A's first window (0.1) is below, its second (0.3) reaches it at token 2 = its
    # end: 2 of 3, the first grid point where at least half the drafts keep their first sentence.
    assert threshold == 0.15
    assert [row["after_sentence"] for row in grid[:3]] == [pytest.approx(1 / 3)] * 2 + [pytest.approx(2 / 3)]
    assert kept == [3, 2, 2]  # tokens kept: switch index + 1
    # tau 0.55: B never switches (all kept), A at index 3, C at index 4
    row = next(r for r in grid if r["threshold"] == 0.55)
    assert row["never"] == pytest.approx(1 / 3) and row["after_sentence"] == 1.0
    assert row["median_switch"] == 4  # sorted positions 4 (A), 4 (B: all 4 tokens), 5 (C)


ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--decoder", "wsd", "--pilot", "tiny:weak", "--window", "4", "--max_new_tokens", "32", "--batch_size", "5",
         "--seed", "3", "--prompts", "tiny:train", "--num_prompts", "10"]  # fmt: skip


@pytest.mark.slow
def test_calibrated_switches_are_wsds(tmp_path):
    config = GuideConfig.from_yaml(ROOT / "recipes/tiny/guide.yaml", FLAGS)
    prompts = world_prompts("train", 10)
    result = calibrate_wsd(config, prompts)
    assert result.threshold is not None
    # WSD at the chosen tau hands over exactly where calibration said: the same pilot streams, the same scores
    config.options["threshold"] = result.threshold
    outputs = Guide(config).generate(prompts, progress=False)
    assert [g.switch_at for g in outputs] == result.switches
    shares = [row["after_sentence"] for row in result.grid]
    at = [row["threshold"] for row in result.grid].index(result.threshold)
    assert shares[at] >= 0.5 and all(s < 0.5 for s in shares[:at])

    # the command, on the same recipe and flags: the same threshold and switches, as a table and JSON
    out = tmp_path / "calibration.json"
    run = subprocess.run(
        [sys.executable, "-m", "w2s.cli", "calibrate", "--config", str(ROOT / "recipes/tiny/guide.yaml"), *FLAGS,
         "--json", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert f"threshold: {result.threshold}" in run.stdout
    assert json.loads(out.read_text())["switches"] == result.switches
