"""Metrics: win rate (AlpacaEval's encoding), its bootstrap interval, length-controlled win rate, means.

Preferences use AlpacaEval's encoding: 1 the reference wins, 2 the system wins,
1.5 (or the legacy 0) a tie; soft values in between. A preference `p` counts
`p - 1` wins, so ties count half.

The length-controlled win rate follows AlpacaEval 2: a logistic GLM of the
preference on `tanh(Δlen / std(Δlen))` (Δlen: system output length minus
reference length, in characters) plus, when several systems are compared, each
instruction's difficulty; the win rate is the GLM's prediction at Δlen = 0,
averaged over instructions. An instruction's difficulty is its intercept in a
joint GLM over the other systems. The GLMs are fitted by Newton's method (numpy).
"""

from __future__ import annotations

import math
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
    n_total: int

    def as_dict(self) -> dict:
        return asdict(self)


def as_preferences(preferences) -> np.ndarray:
    """Preferences as floats in [1, 2] (the legacy tie 0 becomes 1.5); anything else is an error."""
    p = np.asarray(list(preferences), dtype=float)
    p = np.where(p == 0, 1.5, p)
    bad = np.flatnonzero(~((p >= 1) & (p <= 2)))
    if bad.size:
        raise ValueError(f"preference {p[bad[0]]!r} at position {bad[0]} is outside [1, 2] (AlpacaEval's encoding)")
    return p


def win_rate(preferences, *, bootstrap_samples: int = 2000, seed: int = 0) -> WinRate:
    """Win rate (%) = mean of `p - 1`, standard error of that mean (ddof=1), percentile bootstrap 95% interval."""
    p = as_preferences(preferences)
    n = len(p)
    if n == 0:
        raise ValueError("win rate of no preferences")
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


def fit_logistic(X: np.ndarray, y: np.ndarray, *, l2: np.ndarray | float = 0.0, max_iter: int = 100) -> np.ndarray:
    """Weights of a logistic regression of soft labels `y` in [0, 1] on `X` (Newton's method, L2 penalty per weight)."""
    d = X.shape[1]
    lam = np.broadcast_to(np.asarray(l2, dtype=float), (d,))
    w = np.zeros(d)

    def loss(w):
        z = X @ w
        return float(np.sum(np.logaddexp(0, z) - y * z) + 0.5 * np.sum(lam * w * w))

    current = loss(w)
    for _ in range(max_iter):
        mu = _sigmoid(X @ w)
        grad = X.T @ (mu - y) + lam * w
        hess = (X * (mu * (1 - mu))[:, None]).T @ X + np.diag(lam) + 1e-9 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        t = 1.0
        while t > 1e-6:  # backtracking keeps every step a descent step
            new = loss(w - t * step)
            if new <= current:
                break
            t *= 0.5
        w = w - t * step
        if current - new < 1e-10 * (1 + abs(current)):
            current = new
            break
        current = new
    return w


L2_LENGTH = 1.0  # penalty on the GLM's non-intercept weights (keeps them finite when length separates the outcomes)
L2_DIFFICULTY = 1.0


def _length_feature(len_system, len_reference) -> np.ndarray:
    delta = np.asarray(len_system, dtype=float) - np.asarray(len_reference, dtype=float)
    std = delta.std()
    return np.tanh(delta / std) if std > 0 else np.zeros_like(delta)


def instruction_difficulty(tables: dict[str, dict], *, max_iter: int = 100) -> dict:
    """Each instruction's difficulty: its intercept in a joint GLM over the systems given (system intercept + length).

    Newton's method on `logit = a_s + b_s·tanh(std. Δlen) + δ_i`; the δ block of the Hessian is diagonal,
    so each step is solved through its Schur complement in O(rows · systems²).
    """
    systems = list(tables)
    instr = sorted({i for t in tables.values() for i in t["instruction_ids"]})
    col = {i: k for k, i in enumerate(instr)}
    S, N = len(systems), len(instr)
    xs, ys, ii = [], [], []
    for s, name in enumerate(systems):
        t = tables[name]
        feat = _length_feature(t["len_system"], t["len_reference"])
        block = np.zeros((len(feat), 2 * S))
        block[:, s], block[:, S + s] = 1.0, feat
        xs.append(block)
        ys.append(as_preferences(t["preferences"]) - 1.0)
        ii += [col[i] for i in t["instruction_ids"]]
    X, y, ii = np.concatenate(xs), np.concatenate(ys), np.array(ii)
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


def length_controlled_win_rate(
    preferences, len_system, len_reference, *, difficulty: list[float] | None = None
) -> float:
    """LC win rate (%): the GLM `p - 1 ~ tanh(std. Δlen) [+ difficulty]` predicted at Δlen = 0, averaged."""
    y = as_preferences(preferences) - 1.0
    feat = _length_feature(len_system, len_reference)
    cols = [np.ones_like(y), feat]
    l2 = [0.0, L2_LENGTH]
    if difficulty is not None:
        cols.append(np.asarray(difficulty, dtype=float))
        l2.append(L2_LENGTH)
    X = np.stack(cols, axis=1)
    w = fit_logistic(X, y, l2=np.array(l2))
    X0 = X.copy()
    X0[:, 1] = 0.0  # zero length difference
    return 100 * float(_sigmoid(X0 @ w).mean())


def length_controlled_win_rates(tables: dict[str, dict]) -> dict[str, float]:
    """LC win rate of each system; `tables[name]` holds preferences, len_system, len_reference, instruction_ids.

    With several systems, each instruction's difficulty enters a system's GLM, fitted on the *other*
    systems' annotations (fitting it on the system's own would let it absorb that system's length effect).
    """
    out = {}
    for name, t in tables.items():
        others = {k: v for k, v in tables.items() if k != name}
        d = None
        if others:
            difficulty = instruction_difficulty(others)
            d = [difficulty.get(i, 0.0) for i in t["instruction_ids"]]
        out[name] = length_controlled_win_rate(t["preferences"], t["len_system"], t["len_reference"], difficulty=d)
    return out


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
