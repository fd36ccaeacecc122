"""The main job end to end at reduced size: data -> DPO (guide and two experts) -> calibration -> CBS distilled
into the strong base -> evaluation."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from w2s.eval.demo import QUICK, _stage, run_demo, world_table


@pytest.mark.slow
def test_demo_reproduces_the_direction_of_weak_to_strong_search(tmp_path):
    rows, checks = run_demo(tmp_path / "demo", QUICK)
    by = {r["system"]: r for r in rows}
    reward = {name: row["reward_mean"] for name, row in by.items()}
    # the full demo's findings are checked over worlds 0-2 (README); at 48 prompts, the directions that held
    # with the widest margins there
    assert reward["cbs"] > reward["bon16"] > reward["base"]
    assert by["cbs"]["win_rate"] > 50
    assert reward["cbs"] > reward["guide-alone"]
    assert len(checks) == 14 and len(rows) == 15
    assert all(0 <= r["well_formed"] <= 1 for r in rows)
    # every stage left its artefact where the next one reads it
    run = tmp_path / "demo"
    for stage in ("data", "data-sentiment", "data-topic", "guide", "guide_sentiment", "guide_topic", "eval"):
        assert (run / stage).is_dir()
    assert (run / "data" / "card.json").is_file()
    assert (run / "cbs-train" / "cbs-train.json").is_file()  # CBS over training prompts, distilled into:
    for guide in ("guide", "guide_sentiment", "guide_topic", "cbs-distilled"):
        assert (run / guide / "model.safetensors").is_file()
    # the three data sets judged one set of samples: one generation folder, a judge folder per rule (gold, sentiment,
    # topic, and the experts' control, malformed, judged once for both)
    work = run / "data-work"
    judges = sorted(p.name.rsplit("-", 1)[0] for p in work.glob("judge-*") if p.is_dir())
    assert len(list(work.glob("gen-*"))) == 1
    assert judges == ["judge-gold", "judge-malformed", "judge-sentiment", "judge-topic"]
    for expert in ("data-sentiment", "data-topic"):  # matched pairs: as many malformed sentences on both sides
        assert (
            json.loads((run / expert / "card.json").read_text())["controls"]["malformed"]["mean_chosen_minus_rejected"]
            == 0
        )
    threshold = json.loads((run / "wsd" / "calibration.json").read_text())["threshold"]
    systems = {s["name"]: s["guide"] for s in yaml.safe_load((run / "eval.yaml").read_text())["systems"]}
    assert systems["wsd"]["threshold"] == threshold  # WSD runs at the calibrated threshold
    # the experts' fusion picks alpha from 0..1, the guide's from the decoder's default 0..2
    assert [systems[s].get("alpha_max") for s in ("fusion", "fusion-sentiment", "fusion-topic", "fusion-2")] == [
        None,
        1.0,
        1.0,
        1.0,
    ]
    assert (run / "eval" / "win_rate.png").is_file()


def _stage_log(log: Path, name: str):
    """A stage's command: writes `name` into the stage's folder and appends it to `log` (outside the run folder),
    so a test sees which stages ran."""
    code = f"open({str(log)!r}, 'a').write({name!r} + ' '); open(__import__('sys').argv[1], 'w').write({name!r})"
    return lambda out: [sys.executable, "-c", code, out / "made"]


def test_a_stage_is_reused_only_while_its_inputs_and_the_stages_it_reads_are_unchanged(tmp_path):
    log, run = tmp_path / "ran", tmp_path / "run"

    def b(out):  # b names a's folder among its arguments: b is made from a
        return [*_stage_log(log, "b")(out), run / "a" / "made"]

    _stage(run, "a", "first", _stage_log(log, "a"), "t")
    _stage(run, "b", "second", b, "t")
    _stage(run, "a", "first", _stage_log(log, "a"), "t")  # the same commands: both reused
    _stage(run, "b", "second", b, "t")
    assert log.read_text() == "a b "
    _stage(run, "a", "first", _stage_log(log, "a2"), "t")  # another command: a is redone from nothing ...
    _stage(run, "b", "second", b, "t")  # ... and so is b, made from it, though b's own command is the same
    assert log.read_text() == "a b a2 b " and (run / "a" / "made").read_text() == "a2"
    moved = tmp_path / "moved"
    run.rename(moved)
    run = moved  # a moved run folder resumes: its markers write the run folder as <run>
    _stage(run, "a", "first", _stage_log(log, "a2"), "t")
    _stage(run, "b", "second", b, "t")
    assert log.read_text() == "a b a2 b "


def test_a_worlds_table_rounds_as_the_readme_shows_it():
    row = {"system": "cbs", "decoder": "cbs", "win_rate": 84.75, "standard_error": 2.4937, "lc_win_rate": 91.6249,
           "reward_mean": 6.1125, "reward_se": 0.2271, "well_formed": 0.945, "tokens_per_item": 778.54,
           "strong_tokens_per_item": 255.5}  # fmt: skip
    header, rule, line = world_table([row]).splitlines()
    assert header.count("|") == rule.count("|") == line.count("|") == 11
    assert line == "| cbs | cbs | 84.8 | 2.5 | 91.6 | +6.11 | 0.23 | 94% | 779 | 255.5 |"
