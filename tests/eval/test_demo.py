"""The main job end to end at reduced size: data -> SFT -> DPO -> evaluation on the tiny world."""

import pytest

from w2s.eval.demo import QUICK, run_demo


@pytest.mark.slow
def test_demo_reproduces_the_direction_of_each_finding(tmp_path):
    rows, checks = run_demo(tmp_path / "demo", QUICK)
    by = {r["system"]: r for r in rows}
    reward = {name: row["reward_mean"] for name, row in by.items()}
    assert reward["cbs-4-4-5"] > reward["bon16"] > reward["base"]
    assert by["cbs-4-4-5"]["win_rate"] > 50
    assert reward["cbs-4-4-5"] > reward["guide-alone"]
    assert len(checks) == 4
    # every stage left its artefact where the next one reads it
    for stage in ("data", "sft", "guide", "eval"):
        assert (tmp_path / "demo" / stage).is_dir()
    assert (tmp_path / "demo" / "data" / "card.json").is_file()
    assert (tmp_path / "demo" / "guide" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "eval" / "win_rate.png").is_file()
