"""w2s's win rate and LC win rate against alpaca_eval 0.6.6's on the same annotations (the demo's, world 0).

The reference values below were printed by `tests/eval/alpaca_eval_reference.py` (run in a virtual environment
with `alpaca_eval==0.6.6`; its docstring says exactly which function and arguments) on `lc_demo_annotations.json`.
alpaca_eval itself is not needed here. w2s reimplements AlpacaEval's GLM (eval/metrics.py) and must agree within
0.1 point; on these annotations it agrees within 0.01.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from w2s.eval.metrics import length_controlled_win_rate, win_rate

FIXTURE = json.loads(Path(__file__).with_name("lc_demo_annotations.json").read_text())
SYSTEMS = FIXTURE["systems"]

# alpaca_eval's length_controlled_winrate, GLM length_controlled_minimal (no instruction difficulty)
LC_NONE = {"bon16": 86.86100622241567, "cbs-4-4-5": 93.42549584464338, "eft": 28.54588960980586, "wsd": 50.0}
# GLM length_controlled_noreg with the fixture's `difficulty` as each instruction's difficulty
LC_DIFFICULTY = {
    "bon16": 86.54800468220145,
    "cbs-4-4-5": 93.98830439301932,
    "eft": 29.836376812740134,
    "wsd": 52.078260063933755,
}
# length_controlled_minimal with the preferences at the fixture's `missing` places NaN: (win_rate, SE, LC)
MISSING = {
    "bon16": (81.87134502923976, 2.8054762997287965, 87.06823024222429),
    "cbs-4-4-5": (95.32163742690058, 1.565641035529373, 94.38186874699498),
    "eft": (32.45614035087719, 3.5549082386511532, 25.383204408573917),
    "wsd": (41.52046783625731, 3.71038148985062, 50.0),
}


def _args(name):
    return SYSTEMS[name]["preferences"], SYSTEMS[name]["len_system"], FIXTURE["len_reference"]


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_lc_win_rate_without_difficulty_is_alpaca_evals(name):
    assert length_controlled_win_rate(*_args(name)) == pytest.approx(LC_NONE[name], abs=0.1)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_lc_win_rate_with_a_given_difficulty_is_alpaca_evals(name):
    lc = length_controlled_win_rate(*_args(name), difficulty=FIXTURE["difficulty"])
    assert lc == pytest.approx(LC_DIFFICULTY[name], abs=0.1)


@pytest.mark.parametrize("name", sorted(SYSTEMS))
def test_missing_preferences_are_left_out_as_alpaca_eval_leaves_them(name):
    prefs, len_system, len_reference = _args(name)
    blanked = [None if n in FIXTURE["missing"] else p for n, p in enumerate(prefs)]
    wr, se, lc = MISSING[name]
    got = win_rate(blanked)
    assert (got.n_total, got.n_missing) == (len(prefs) - len(FIXTURE["missing"]), len(FIXTURE["missing"]))
    assert got.win_rate == pytest.approx(wr) and got.standard_error == pytest.approx(se)
    assert length_controlled_win_rate(blanked, len_system, len_reference) == pytest.approx(lc, abs=0.1)
    # NaN is missing too, and blanking changes the LC win rate (the check above could fail)
    assert length_controlled_win_rate(
        [float("nan") if p is None else p for p in blanked], len_system, len_reference
    ) == (length_controlled_win_rate(blanked, len_system, len_reference))
    if name != "wsd":  # wsd's GLM puts its constant's weight at 0 (LC exactly 50) with or without the blanks
        assert abs(LC_NONE[name] - lc) > 0.1
