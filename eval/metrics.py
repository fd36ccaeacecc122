"""Metrics: win rate (AlpacaEval's encoding), its bootstrap interval, length-controlled win rate, means.

Preferences use AlpacaEval's encoding: 1 the reference wins, 2 the system wins,
1.5 (or the legacy 0) a tie; soft values in between. A preference `p` counts
`p - 1` wins, so ties count half. A missing preference (None or NaN: a verdict
the judge did not give) is left out of the win rate and of the LC fit, and counted.

The length-controlled (LC) win rate is AlpacaEval 2's (alpaca_eval 0.6.6,
`metrics/glm_winrate.py`), reimplemented here with numpy. A logistic GLM of
`p - 1` on three columns and no other intercept:

    tanh(Δlen / std(Δlen)),  [instruction difficulty,]  1

with Δlen = reference length − system length in characters and std the sample
standard deviation (n − 1). Every weight has an L1 penalty, the constant's too;
its strength 1/C is the C of `LC_INVERSE_PENALTIES` with the lowest 5-fold
cross-validated log loss (judged instruction k of m is in fold (m − 1 − k) mod 5,
as sklearn's GroupKFold deals them). The LC win rate is the GLM's prediction at
Δlen = 0 averaged over the instructions, those with a missing preference
included (as alpaca_eval does). Its standard error is the standard deviation of
that whole procedure refitted on bootstrap resamples of the instructions.
"""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class WinRate:
    """A win rate in percent with its standard error and a bootstrap 95% interval."""

    win_rate: float
    standard_error: float
    ci_low: float
    ci_high: float
    n_wins: int
    n_wins_base: int
    n_draws: int
    n_total: int  # preferences counted
    n_missing: int = 0  # preferences missing, left out

    def as_dict(self) -> dict:
        return asdict(self)


def as_preferences(preferences) -> np.ndarray:
    """Preferences as floats in [1, 2] (the legacy tie 0 becomes 1.5), NaN where missing (None or NaN);
    anything else is an error."""
    p = np.array([np.nan if v is None else v for v in preferences], dtype=float)
    p = np.where(p == 0, 1.5, p)
    bad = np.flatnonzero(~((p >= 1) & (p <= 2)) & ~np.isnan(p))
    if bad.size:
        raise ValueError(f"preference {p[bad[0]]!r} at position {bad[0]} is outside [1, 2] (AlpacaEval's encoding)")
    return p


def win_rate(preferences, *, bootstrap_samples: int = 2000, seed: int = 0) -> WinRate:
    """Win rate (%) = mean of `p - 1`, standard error of that mean (ddof=1), percentile bootstrap 95% interval;
    missing preferences are left out and counted."""
    p = as_preferences(preferences)
    missing = int(np.isnan(p).sum())
    p = p[~np.isnan(p)]
    n = len(p)
    if n == 0:
        raise ValueError(f"win rate of no preferences ({missing} missing)")
    wins = p - 1.0
    se = float(wins.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    rng = np.random.default_rng(seed)
    means = wins[rng.integers(0, n, size=(bootstrap_samples, n))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return WinRate(
        win_rate=100 * float(wins.mean()),
        standard_error=100 * se,
        ci_low=100 * float(low),
        ci_high=100 * float(high),
        n_wins=int((p > 1.5).sum()),
        n_wins_base=int((p < 1.5).sum()),
        n_draws=int((p == 1.5).sum()),
        n_total=n,
        n_missing=missing,
    )


def mean_and_se(values) -> tuple[float, float]:
    """Mean and its standard error (sample standard deviation / sqrt n)."""
    v = np.asarray(list(values), dtype=float)
    if v.size == 0:
        return math.nan, math.nan
    se = float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else 0.0
    return float(v.mean()), se


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def length_feature(len_system, len_reference) -> np.ndarray:
    """AlpacaEval's length feature: tanh of (reference − system length) over its sample standard deviation
    (along the last axis)."""
    delta = np.asarray(len_reference, dtype=float) - np.asarray(len_system, dtype=float)
    std = delta.std(axis=-1, ddof=1, keepdims=True) if delta.shape[-1] > 1 else np.zeros((*delta.shape[:-1], 1))
    return np.tanh(np.divide(delta, std, out=np.zeros_like(delta), where=std > 0))


def fit_l1_logistic(X: np.ndarray, y: np.ndarray, weights: np.ndarray, penalty, *, max_iter: int = 100) -> np.ndarray:
    """Weights w minimising `Σ_i v_i·logloss(y_i, σ(x_i·w)) + λ·|w|_1`, for many problems at once.

    X (..., n, d), soft labels y in [0, 1] and row weights v (..., n), λ (...): the leading axes broadcast
    to the problems' shape S; returns (*S, d). Proximal Newton (liblinear's method for this loss): each step
    minimises the quadratic model plus the L1 term by coordinate descent, then backtracks; a problem stops
    once its minimum-norm subgradient is ~0, or the step's predicted or actual decrease of the loss is lost
    in rounding.
    """
    shape = np.broadcast_shapes(X.shape[:-2], y.shape[:-1], weights.shape[:-1], np.shape(penalty))
    d = X.shape[-1]
    lam = np.broadcast_to(np.asarray(penalty, dtype=float), shape)
    tol = 1e-9 * (1 + np.broadcast_to(weights.sum(axis=-1), shape))

    def logits(w):
        return (X @ w[..., None])[..., 0]

    def objective(w):
        z = logits(w)
        return np.sum(weights * (np.logaddexp(0, z) - y * z), axis=-1) + lam * np.abs(w).sum(axis=-1)

    w = np.zeros((*shape, d))
    f = objective(w)
    active = np.ones(shape, dtype=bool)
    for _ in range(max_iter):
        mu = _sigmoid(logits(w))
        g = ((weights * (mu - y))[..., None, :] @ X)[..., 0, :]
        H = (X * (weights * mu * (1 - mu))[..., None]).swapaxes(-1, -2) @ X
        lam_ = lam[..., None]
        subgradient = np.where(w != 0, np.abs(g + lam_ * np.sign(w)), np.maximum(np.abs(g) - lam_, 0))
        active &= subgradient.max(axis=-1) > tol
        if not active.any():
            break
        step = np.zeros_like(w)
        h = np.maximum(np.diagonal(H, axis1=-2, axis2=-1), 1e-12)
        for _ in range(30):  # coordinate descent on g·s + s·H·s/2 + λ|w + s|_1
            for j in range(d):
                slope = g[..., j] + np.sum(H[..., j, :] * step, axis=-1) - h[..., j] * step[..., j]
                u = w[..., j] - slope / h[..., j]
                step[..., j] = np.sign(u) * np.maximum(np.abs(u) - lam / h[..., j], 0) - w[..., j]
        expected = np.sum(g * step, axis=-1) + lam * (np.abs(w + step).sum(axis=-1) - np.abs(w).sum(axis=-1))
        active &= -expected > 1e-12 * (1 + np.abs(f))  # a decrease floating point could not see: converged
        step[~active] = 0
        expected[~active] = 0
        t = np.ones(shape)
        for _ in range(30):  # backtracking (Armijo): each step a descent step
            new = objective(w + t[..., None] * step)
            short = new > f + 0.01 * t * expected
            if not short.any():
                break
            t = np.where(short, t / 2, t)
        active &= ~short
        w = w + np.where(short, 0.0, t)[..., None] * step
        f = objective(w)
    return w


LC_INVERSE_PENALTIES = np.logspace(-4, 4, 10)  # the values of C tried (sklearn LogisticRegressionCV's default grid)
LC_FOLDS = 5


def _cross_validated_fit(X: np.ndarray, y: np.ndarray, judged: np.ndarray) -> np.ndarray:
    """For data sets X (B, n, d), y and judged (B, n): the L1 GLM's weights (B, d) at the C of lowest
    cross-validated log loss (the first of equals, i.e. the strongest penalty)."""
    place = np.cumsum(judged, axis=-1) - 1
    fold = np.where(judged, (judged.sum(axis=-1, keepdims=True) - 1 - place) % LC_FOLDS, -1)  # (B, n)
    train = np.stack([(fold >= 0) & (fold != k) for k in range(LC_FOLDS)], axis=1)  # (B, folds, n)
    Cs = LC_INVERSE_PENALTIES
    w = fit_l1_logistic(
        X[:, None, None], y[:, None, None], train[:, :, None].astype(float), 1 / Cs
    )  # (B, folds, Cs, d)
    loss = np.zeros((len(X), len(Cs)))
    for k in range(LC_FOLDS):
        test = (fold == k)[:, None, :]
        q = np.clip(_sigmoid(np.einsum("bnd,bcd->bcn", X, w[:, k])), 1e-15, 1 - 1e-15)
        ce = -(y[:, None] * np.log(q) + (1 - y[:, None]) * np.log(1 - q))
        loss += np.sum(ce * test, axis=-1) / np.maximum(test.sum(axis=-1), 1)
    best = np.argmin(loss, axis=-1)
    return fit_l1_logistic(X, y, judged.astype(float), 1 / Cs[best])


def _lc(y: np.ndarray, len_system: np.ndarray, len_reference: np.ndarray, difficulty: np.ndarray | None) -> np.ndarray:
    """LC win rates (%) of data sets given as (B, n) arrays; NaN where fewer preferences than folds were judged."""
    judged = ~np.isnan(y)
    cols = [length_feature(len_system, len_reference), *([] if difficulty is None else [difficulty]), np.ones(y.shape)]
    X = np.stack(cols, axis=-1)
    w = _cross_validated_fit(X, np.where(judged, y, 0.0), judged)
    X[..., 0] = 0.0  # no length difference
    lc = 100 * _sigmoid(np.einsum("bnd,bd->bn", X, w)).mean(axis=-1)
    return np.where(judged.sum(axis=-1) >= LC_FOLDS, lc, np.nan)


def _lc_inputs(preferences, len_system, len_reference, difficulty):
    y = as_preferences(preferences) - 1.0
    arrays = [np.asarray(v, dtype=float) for v in (len_system, len_reference)]
    d = None if difficulty is None else np.asarray(difficulty, dtype=float)
    if any(len(a) != len(y) for a in [*arrays, *([] if d is None else [d])]):
        raise ValueError("preferences, lengths and difficulties differ in length")
    return y, *arrays, d


def length_controlled_win_rate(preferences, len_system, len_reference, *, difficulty=None) -> float | None:
    """LC win rate (%) as AlpacaEval 2 computes it (module docstring), `difficulty` one value per instruction
    or None; None when fewer preferences than folds were judged."""
    y, ls, lr, d = _lc_inputs(preferences, len_system, len_reference, difficulty)
    (lc,) = _lc(y[None], ls[None], lr[None], None if d is None else d[None])
    return None if np.isnan(lc) else float(lc)


def length_controlled_standard_error(
    preferences, len_system, len_reference, *, difficulty=None, bootstrap_samples: int = 200, seed: int = 0
) -> float | None:
    """Standard deviation (%) of the LC win rate over bootstrap resamples of the instructions, each refitted with
    its own cross-validation (a given difficulty is held fixed); None with fewer than two usable resamples."""
    y, ls, lr, d = _lc_inputs(preferences, len_system, len_reference, difficulty)
    if bootstrap_samples < 2:
        return None
    resamples = np.random.default_rng(seed).integers(0, len(y), size=(bootstrap_samples, len(y)))
    values = []
    for idx in np.array_split(resamples, -(-bootstrap_samples // 25)):  # 25 at a time bounds the memory
        values.append(_lc(y[idx], ls[idx], lr[idx], None if d is None else d[idx]))
    values = np.concatenate(values)
    values = values[~np.isnan(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


L2_LENGTH = 1.0  # penalties of the joint GLM that fits instruction difficulty (keeps its weights finite)
L2_DIFFICULTY = 1.0


def instruction_difficulty(tables: dict[str, dict], *, max_iter: int = 100) -> dict:
    """Each instruction's difficulty: its intercept δ_i in one GLM over all the systems given, fitted on their
    judged preferences: `logit = a_s + b_s·length_feature + δ_i`, L2 penalties on b and δ.

    Newton's method; the δ block of the Hessian is diagonal, so each step is solved through its Schur
    complement in O(rows · systems²).
    """
    systems = list(tables)
    instr = sorted({i for t in tables.values() for i in t["instruction_ids"]})
    col = {i: k for k, i in enumerate(instr)}
    S, N = len(systems), len(instr)
    xs, ys, ii = [], [], []
    for s, name in enumerate(systems):
        t = tables[name]
        feat = length_feature(t["len_system"], t["len_reference"])
        p = as_preferences(t["preferences"])
        judged = ~np.isnan(p)
        block = np.zeros((int(judged.sum()), 2 * S))
        block[:, s], block[:, S + s] = 1.0, feat[judged]
        xs.append(block)
        ys.append(p[judged] - 1.0)
        ii += [col[i] for i, j in zip(t["instruction_ids"], judged, strict=True) if j]
    X, y, ii = np.concatenate(xs), np.concatenate(ys), np.array(ii, dtype=int)
    lam = np.concatenate([np.zeros(S), np.full(S, L2_LENGTH)])

    def loss(w, d):
        z = X @ w + d[ii]
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * (lam @ (w * w) + L2_DIFFICULTY * d @ d))

    w, d = np.zeros(2 * S), np.zeros(N)
    current = loss(w, d)
    for _ in range(max_iter):
        mu = _sigmoid(X @ w + d[ii])
        r, h = mu - y, mu * (1 - mu)
        g1, g2 = X.T @ r + lam * w, np.bincount(ii, r, N) + L2_DIFFICULTY * d
        A = (X * h[:, None]).T @ X + np.diag(lam) + 1e-9 * np.eye(2 * S)
        B = np.stack([np.bincount(ii, X[:, c] * h, N) for c in range(2 * S)])  # (2S, N)
        D = np.bincount(ii, h, N) + L2_DIFFICULTY
        step1 = np.linalg.solve(A - (B / D) @ B.T, g1 - B @ (g2 / D))
        step2 = (g2 - B.T @ step1) / D
        t = 1.0
        while t > 1e-6:
            new = loss(w - t * step1, d - t * step2)
            if new <= current:
                break
            t *= 0.5
        w, d = w - t * step1, d - t * step2
        done = current - new < 1e-10 * (1 + abs(current))
        current = new
        if done:
            break
    return {i: float(d[col[i]]) for i in instr}


def length_controlled_win_rates(
    tables: dict[str, dict],
    *,
    difficulty: dict | None = None,
    bootstrap_samples: int = 0,
    seed: int = 0,
    workers: int = 1,
) -> dict[str, dict]:
    """Each system's `lc_win_rate` and `lc_standard_error` (None without bootstrap samples); `tables[name]` holds
    preferences, len_system, len_reference and instruction_ids, `difficulty` maps instruction ids to difficulties
    (e.g. `instruction_difficulty(tables)`) or is None. Every system is resampled alike (same seed); with
    `workers` > 1 the systems' bootstraps run in that many processes (the same numbers: each is seeded alone)."""
    calls = {}
    for name, t in tables.items():
        d = None if difficulty is None else [difficulty[i] for i in t["instruction_ids"]]
        calls[name] = (t["preferences"], t["len_system"], t["len_reference"], d)
    ses: dict = dict.fromkeys(calls)
    if bootstrap_samples:
        jobs = [(*c, bootstrap_samples, seed) for c in calls.values()]
        if workers > 1 and len(jobs) > 1:
            context = multiprocessing.get_context("spawn")  # numpy only: a fresh interpreter starts in ~0.1 s
            with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
                ses = dict(zip(calls, pool.map(_standard_error, jobs), strict=True))
        else:
            ses = dict(zip(calls, map(_standard_error, jobs), strict=True))
    return {
        name: {"lc_win_rate": length_controlled_win_rate(*c[:3], difficulty=c[3]), "lc_standard_error": ses[name]}
        for name, c in calls.items()
    }


def _standard_error(job: tuple) -> float | None:
    preferences, len_system, len_reference, difficulty, samples, seed = job
    return length_controlled_standard_error(
        preferences, len_system, len_reference, difficulty=difficulty, bootstrap_samples=samples, seed=seed
    )


def cost(records: list[dict]) -> dict:
    """Compute one system spent: forward tokens per model (total and per item) and wall seconds."""
    n = max(len(records), 1)
    tokens: dict[str, int] = {}
    for r in records:
        for model, count in (r.get("tokens") or {}).items():
            tokens[model] = tokens.get(model, 0) + int(count)
    seconds = sum(float(r.get("seconds") or 0.0) for r in records)
    total = sum(tokens.values())
    return {
        "tokens": tokens,
        "tokens_total": total,
        "tokens_per_item": total / n,
        "strong_tokens_per_item": tokens.get("strong", 0) / n,
        "seconds": seconds,
        "seconds_per_item": seconds / n,
    }
