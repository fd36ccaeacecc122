"""Win rate, its standard error and interval, and the length-controlled win rate, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from w2s.eval.metrics import (
    as_preferences,
    cost,
    fit_logistic,
    instruction_difficulty,
    length_controlled_win_rate,
    length_controlled_win_rates,
    mean_and_se,
    win_rate,
)

# AlpacaEval's encoding: 1 reference wins, 2 system wins, 1.5 (or legacy 0) tie, soft values between
TABLE = [2, 1, 1.5, 2, 2, 0, 1, 1.75]


def test_win_rate_and_standard_error_match_hand_computation():
    wr = win_rate(TABLE, bootstrap_samples=500)
    # wins p - 1: 1, 0, .5, 1, 1, .5, 0, .75 -> sum 4.75 over 8
    assert wr.win_rate == pytest.approx(100 * 4.75 / 8)
    # squared deviations from 0.59375 sum to 1.2421875; sample variance / n, square root
    assert wr.standard_error == pytest.approx(100 * math.sqrt(1.2421875 / 7 / 8))
    assert (wr.n_wins, wr.n_wins_base, wr.n_draws, wr.n_total) == (4, 2, 2, 8)
    assert wr.ci_low <= wr.win_rate <= wr.ci_high


def test_ties_count_half_and_bounds():
    assert win_rate([1.5] * 10).win_rate == 50.0
    assert win_rate([2, 1]).win_rate == 50.0
    all_wins = win_rate([2] * 20)
    assert (all_wins.win_rate, all_wins.standard_error, all_wins.ci_low, all_wins.ci_high) == (100, 0, 100, 100)
    with pytest.raises(ValueError, match="outside"):
        as_preferences([1, 2.5])


def test_bootstrap_interval_is_about_four_standard_errors_wide():
    rng = np.random.default_rng(1)
    prefs = 1 + (rng.random(2000) < 0.3)
    wr = win_rate(prefs, bootstrap_samples=4000, seed=3)
    assert wr.ci_high - wr.ci_low == pytest.approx(2 * 1.96 * wr.standard_error, rel=0.1)


def test_mean_and_se():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))


def test_logistic_fit_with_only_an_intercept_recovers_the_mean():
    y = np.array([0.0, 1.0, 1.0, 0.5, 1.0])
    (w,) = fit_logistic(np.ones((5, 1)), y)
    assert 1 / (1 + math.exp(-w)) == pytest.approx(y.mean(), abs=1e-6)


def _length_only(rng, n, shift, *, difficulty=None, slope=4.0):
    len_ref = rng.normal(300, 50, n)
    len_sys = len_ref + rng.normal(shift, 120, n)
    z = (len_sys - len_ref) / (len_sys - len_ref).std()
    logit = slope * np.tanh(z) + (0 if difficulty is None else difficulty)
    prefs = 1 + (rng.random(n) < 1 / (1 + np.exp(-logit)))
    return {"preferences": prefs, "len_system": len_sys, "len_reference": len_ref, "instruction_ids": list(range(n))}


def test_lc_win_rate_removes_a_pure_length_preference():
    rng = np.random.default_rng(0)
    t = _length_only(rng, 600, 150)
    raw = win_rate(t["preferences"]).win_rate
    lc = length_controlled_win_rate(t["preferences"], t["len_system"], t["len_reference"])
    assert raw > 75
    assert abs(lc - 50) < 5


def test_lc_win_rate_with_several_systems_and_instruction_difficulty():
    rng = np.random.default_rng(0)
    hard = rng.normal(0, 1.0, 500)
    tables = {
        name: _length_only(rng, 500, shift, difficulty=hard)
        for name, shift in [("long", 160), ("short", -120), ("same", 0)]
    }
    raw = {k: win_rate(t["preferences"]).win_rate for k, t in tables.items()}
    lc = length_controlled_win_rates(tables)
    assert raw["long"] > 75 and raw["short"] < 30
    for name in tables:
        assert abs(lc[name] - 50) < 8, (name, lc[name], raw[name])


def test_lc_win_rate_keeps_a_real_quality_difference():
    # preference independent of length: the LC win rate must stay with the raw one, not be pulled to 50
    rng = np.random.default_rng(2)
    n = 600
    len_ref = rng.normal(300, 50, n)
    len_sys = len_ref + rng.normal(100, 120, n)
    prefs = 1 + (rng.random(n) < 0.8)
    lc = length_controlled_win_rate(prefs, len_sys, len_ref)
    assert abs(lc - win_rate(prefs).win_rate) < 5


def test_instruction_difficulty_matches_a_dense_fit():
    # the Schur-complement Newton solver against the plain dense logistic fit of the same GLM
    from w2s.eval.metrics import L2_DIFFICULTY, L2_LENGTH, _length_feature

    rng = np.random.default_rng(5)
    n = 30
    hard = rng.normal(0, 1, n)
    tables = {k: _length_only(rng, n, s, difficulty=hard) for k, s in [("x", 100), ("y", -50)]}
    got = instruction_difficulty(tables)
    rows, ys = [], []
    for s, t in enumerate(tables.values()):
        f = _length_feature(t["len_system"], t["len_reference"])
        for i in range(n):
            x = np.zeros(4 + n)
            x[s], x[2 + s], x[4 + i] = 1, f[i], 1
            rows.append(x)
            ys.append(t["preferences"][i] - 1)
    l2 = np.array([0, 0, L2_LENGTH, L2_LENGTH] + [L2_DIFFICULTY] * n)
    w = fit_logistic(np.array(rows), np.array(ys), l2=l2)
    assert [got[i] for i in range(n)] == pytest.approx(list(w[4:]), abs=1e-4)


def test_cost_sums_tokens_per_model():
    recs = [{"tokens": {"strong": 10, "tuned": 4}, "seconds": 0.5}, {"tokens": {"strong": 20}, "seconds": 1.5}]
    c = cost(recs)
    assert c["tokens"] == {"strong": 30, "tuned": 4}
    assert (c["tokens_per_item"], c["strong_tokens_per_item"], c["seconds_per_item"]) == (17, 15, 1.0)
