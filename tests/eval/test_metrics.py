"""Win rate, its standard error and interval, and the length-controlled win rate, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from w2s.eval.metrics import (
    L2_DIFFICULTY,
    L2_LENGTH,
    LC_INVERSE_PENALTIES,
    as_preferences,
    cost,
    fit_l1_logistic,
    instruction_difficulty,
    length_controlled_standard_error,
    length_controlled_win_rate,
    length_controlled_win_rates,
    length_feature,
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


def test_missing_preferences_are_left_out_and_counted():
    wr = win_rate([*TABLE[:3], None, *TABLE[3:], float("nan")], bootstrap_samples=500)
    assert wr.as_dict() == {**win_rate(TABLE, bootstrap_samples=500).as_dict(), "n_missing": 2}
    with pytest.raises(ValueError, match="no preferences"):
        win_rate([None, float("nan")])


def test_bootstrap_interval_is_about_four_standard_errors_wide():
    rng = np.random.default_rng(1)
    prefs = 1 + (rng.random(2000) < 0.3)
    wr = win_rate(prefs, bootstrap_samples=4000, seed=3)
    assert wr.ci_high - wr.ci_low == pytest.approx(2 * 1.96 * wr.standard_error, rel=0.1)


def test_mean_and_se():
    mean, se = mean_and_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt((4 + 1 + 0 + 9) / 3 / 4))


def _dense_logistic(X, y, l2):
    """Brute force: a ridge logistic regression by plain Newton steps (no line search, no tricks)."""
    w = np.zeros(X.shape[1])
    for _ in range(50):
        mu = 1 / (1 + np.exp(-(X @ w)))
        w -= np.linalg.solve((X * (mu * (1 - mu))[:, None]).T @ X + np.diag(l2), X.T @ (mu - y) + l2 * w)
    return w


def test_l1_logistic_fit_meets_its_optimality_conditions():
    # at the minimum of loss + λ|w|_1: |∂loss/∂w_j| = λ where w_j ≠ 0 (sign opposite), ≤ λ where w_j = 0
    rng = np.random.default_rng(4)
    X = np.column_stack([np.tanh(rng.normal(size=80)), rng.normal(size=80), np.ones(80)])
    y = (rng.random(80) < 1 / (1 + np.exp(-(1.5 * X[:, 0] + 0.3)))).astype(float)
    y[::7] = 0.5  # ties: soft labels
    penalties = np.array([0.01, 1.0, 5.0, 60.0])
    w = fit_l1_logistic(X, y, np.ones((4, 80)), penalties)
    for lam, wk in zip(penalties, w, strict=True):
        grad = X.T @ (1 / (1 + np.exp(-(X @ wk))) - y)
        nonzero = wk != 0
        assert grad[nonzero] == pytest.approx(-lam * np.sign(wk[nonzero]), abs=1e-5)
        assert np.all(np.abs(grad[~nonzero]) <= lam + 1e-5)
    assert np.count_nonzero(w[0]) == 3 and np.count_nonzero(w[-1]) == 0  # a weak penalty keeps all, a strong none
    # weights 0 drop a row: the same as fitting without it
    v = np.ones(80)
    v[:10] = 0
    assert fit_l1_logistic(X, y, v[None], [1.0]) == pytest.approx(
        fit_l1_logistic(X[10:], y[10:], np.ones((1, 70)), [1.0]), abs=1e-6
    )


def test_length_feature_is_alpaca_evals():
    # reference minus system, over the sample standard deviation (n - 1)
    len_sys, len_ref = np.array([10, 40, 20, 70]), np.array([30, 30, 30, 30])
    delta = np.array([20, -10, 10, -40])
    assert length_feature(len_sys, len_ref) == pytest.approx(np.tanh(delta / np.std(delta, ddof=1)))
    assert length_feature([5, 5], [5, 5]).tolist() == [0.0, 0.0]


def _length_only(rng, n, shift, *, difficulty=None, slope=4.0, bias=0.0):
    len_ref = rng.normal(300, 50, n)
    len_sys = len_ref + rng.normal(shift, 120, n)
    z = (len_sys - len_ref) / (len_sys - len_ref).std()
    logit = bias + slope * np.tanh(z) + (0 if difficulty is None else difficulty)
    prefs = 1.0 + (rng.random(n) < 1 / (1 + np.exp(-logit)))
    return {"preferences": prefs, "len_system": len_sys, "len_reference": len_ref, "instruction_ids": list(range(n))}


def _args(t):
    return t["preferences"], t["len_system"], t["len_reference"]


def test_lc_win_rate_removes_a_pure_length_preference():
    rng = np.random.default_rng(0)
    t = _length_only(rng, 600, 150)
    raw = win_rate(t["preferences"]).win_rate
    lc = length_controlled_win_rate(*_args(t))
    assert raw > 75
    assert abs(lc - 50) < 5


def test_lc_win_rate_keeps_a_real_quality_difference():
    # preference independent of length: the LC win rate must stay with the raw one, not be pulled to 50
    rng = np.random.default_rng(2)
    n = 600
    len_ref = rng.normal(300, 50, n)
    len_sys = len_ref + rng.normal(100, 120, n)
    prefs = 1 + (rng.random(n) < 0.8)
    lc = length_controlled_win_rate(prefs, len_sys, len_ref)
    assert abs(lc - win_rate(prefs).win_rate) < 5


def test_lc_win_rate_is_the_cross_validated_l1_glm_at_zero_length_difference():
    # brute force: the five folds, the ten penalties and the refit spelled out one fit at a time
    rng = np.random.default_rng(7)
    t = _length_only(rng, 90, 60, slope=2.0, bias=0.7)
    y = t["preferences"] - 1.0
    X = np.column_stack([length_feature(t["len_system"], t["len_reference"]), np.ones(90)])
    fold = (89 - np.arange(90)) % 5  # sklearn's GroupKFold deals one instruction per group this way
    losses = []
    for C in LC_INVERSE_PENALTIES:
        loss = 0.0
        for k in range(5):
            (w,) = fit_l1_logistic(X[fold != k], y[fold != k], np.ones((1, int((fold != k).sum()))), [1 / C])
            q = 1 / (1 + np.exp(-(X[fold == k] @ w)))
            loss -= np.mean(y[fold == k] * np.log(q) + (1 - y[fold == k]) * np.log(1 - q))
        losses.append(loss)
    (w,) = fit_l1_logistic(X, y, np.ones((1, 90)), [1 / LC_INVERSE_PENALTIES[int(np.argmin(losses))]])
    expected = 100 / (1 + np.exp(-w[1]))  # the length column at 0 leaves the constant's weight
    assert length_controlled_win_rate(*_args(t)) == pytest.approx(expected, abs=1e-6)
    assert length_controlled_win_rate(t["preferences"][:4], t["len_system"][:4], t["len_reference"][:4]) is None


def test_lc_standard_error_is_the_spread_of_the_procedure_over_resamples():
    # brute force: the same resamples (same seed) through the public LC function, one at a time
    rng = np.random.default_rng(3)
    t = _length_only(rng, 60, 80, slope=2.0, bias=0.5)
    t["preferences"] = np.where(np.arange(60) % 11 == 5, np.nan, t["preferences"])  # missing ones resampled too
    difficulty = rng.normal(0, 1, 60)
    se = length_controlled_standard_error(*_args(t), difficulty=difficulty, bootstrap_samples=30, seed=9)
    resamples = np.random.default_rng(9).integers(0, 60, size=(30, 60))
    values = [
        length_controlled_win_rate(*(np.asarray(a)[idx] for a in _args(t)), difficulty=difficulty[idx])
        for idx in resamples
    ]
    assert se == pytest.approx(np.std(values, ddof=1), rel=1e-6)
    assert se > 0


def test_lc_standard_error_matches_the_spread_over_fresh_data_sets():
    # the bootstrap SE of one data set estimates the sd of the LC win rate over data sets drawn alike
    def draw(seed):
        return _length_only(np.random.default_rng(seed), 150, 60, slope=1.5, bias=0.8)

    spread = np.std([length_controlled_win_rate(*_args(draw(s))) for s in range(100, 180)], ddof=1)
    ses = [length_controlled_standard_error(*_args(draw(s)), bootstrap_samples=150, seed=s) for s in range(4)]
    assert 0.7 < np.mean(ses) / spread < 1.4, (ses, spread)


def test_lc_win_rates_with_a_fitted_difficulty_still_remove_a_pure_length_preference():
    rng = np.random.default_rng(0)
    hard = rng.normal(0, 1.0, 500)
    tables = {
        name: _length_only(rng, 500, shift, difficulty=hard)
        for name, shift in [("long", 160), ("short", -120), ("same", 0)]
    }
    raw = {k: win_rate(t["preferences"]).win_rate for k, t in tables.items()}
    fitted = instruction_difficulty(tables)
    # three verdicts per instruction make a noisy estimate, but one of the planted difficulty
    assert np.corrcoef([fitted[i] for i in range(500)], hard)[0, 1] > 0.25
    lc = length_controlled_win_rates(tables, difficulty=fitted, bootstrap_samples=20)
    assert raw["long"] > 75 and raw["short"] < 30
    for name, t in tables.items():
        assert abs(lc[name]["lc_win_rate"] - 50) < 8, (name, lc[name], raw[name])
        d = [fitted[i] for i in range(500)]
        assert lc[name]["lc_win_rate"] == length_controlled_win_rate(*_args(t), difficulty=d)
        assert 0 < lc[name]["lc_standard_error"] < 10
    assert length_controlled_win_rates(tables)["long"]["lc_standard_error"] is None  # no bootstrap asked


def test_a_difficulty_keeps_length_from_taking_the_credit_of_easy_instructions():
    # no length effect at all: wins come from easy instructions, on which system a writes longer and b shorter.
    # Without a difficulty the GLM credits length and the LC win rate leaves the raw one; the planted
    # difficulty puts it back; one fitted over the three systems goes part of the way.
    rng = np.random.default_rng(0)
    n = 600
    easy = rng.normal(0, 2, n)
    len_ref = rng.normal(300, 30, n)
    tables = {}
    for name, sign, bias in [("a", 1, 0.5), ("b", -1, -0.3), ("c", 0, 0.0)]:
        len_sys = len_ref + 60 * sign * easy + rng.normal(0, 40, n)
        prefs = 1.0 + (rng.random(n) < 1 / (1 + np.exp(-(bias + easy))))
        tables[name] = {
            "preferences": prefs,
            "len_system": len_sys,
            "len_reference": len_ref,
            "instruction_ids": range(n),
        }
    raw = {k: win_rate(t["preferences"]).win_rate for k, t in tables.items()}

    def gap(difficulty):  # total distance of the LC win rates from the raw ones
        lc = length_controlled_win_rates(tables, difficulty=difficulty)
        return sum(abs(lc[k]["lc_win_rate"] - raw[k]) for k in tables)

    none, fitted, planted = gap(None), gap(instruction_difficulty(tables)), gap(dict(enumerate(-easy)))
    assert planted < 2.5 < 6 < none, (none, fitted, planted)
    assert fitted < none


def test_instruction_difficulty_matches_a_dense_fit():
    # the Schur-complement Newton solver against the plain dense logistic fit of the same GLM
    rng = np.random.default_rng(5)
    n = 30
    hard = rng.normal(0, 1, n)
    tables = {k: _length_only(rng, n, s, difficulty=hard) for k, s in [("x", 100), ("y", -50)]}
    tables["y"]["preferences"][4] = np.nan  # a missing preference is left out of the fit
    got = instruction_difficulty(tables)
    rows, ys = [], []
    for s, t in enumerate(tables.values()):
        f = length_feature(t["len_system"], t["len_reference"])
        for i in range(n):
            if np.isnan(t["preferences"][i]):
                continue
            x = np.zeros(4 + n)
            x[s], x[2 + s], x[4 + i] = 1, f[i], 1
            rows.append(x)
            ys.append(t["preferences"][i] - 1)
    l2 = np.array([0, 0, L2_LENGTH, L2_LENGTH] + [L2_DIFFICULTY] * n)
    w = _dense_logistic(np.array(rows), np.array(ys), l2)
    assert [got[i] for i in range(n)] == pytest.approx(list(w[4:]), abs=1e-4)


def test_cost_sums_tokens_per_model():
    recs = [{"tokens": {"strong": 10, "tuned": 4}, "seconds": 0.5}, {"tokens": {"strong": 20}, "seconds": 1.5}]
    c = cost(recs)
    assert c["tokens"] == {"strong": 30, "tuned": 4}
    assert (c["tokens_per_item"], c["strong_tokens_per_item"], c["seconds_per_item"]) == (17, 15, 1.0)


def test_lc_standard_errors_in_several_processes_are_the_ones_of_one():
    rng = np.random.default_rng(3)
    tables = {
        name: {
            "preferences": list(rng.choice([1.0, 1.5, 2.0], size=40)),
            "len_system": list(rng.integers(20, 200, size=40)),
            "len_reference": list(rng.integers(20, 200, size=40)),
            "instruction_ids": list(range(40)),
        }
        for name in ("a", "b", "c")
    }
    one = length_controlled_win_rates(tables, bootstrap_samples=20)
    assert length_controlled_win_rates(tables, bootstrap_samples=20, workers=2) == one
    assert all(row["lc_standard_error"] > 0 for row in one.values())
