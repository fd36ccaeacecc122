"""Reports: the leaderboard (CSV and markdown) and the two plots (win rate with intervals; reward against compute)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt
import matplotlib.ticker

from w2s.guide.files import write_atomic

COLUMNS = [
    ("system", "system"),
    ("decoder", "decoder"),
    ("win_rate", "win rate %"),
    ("standard_error", "SE"),
    ("ci_low", "95% CI low"),
    ("ci_high", "95% CI high"),
    ("lc_win_rate", "LC win rate %"),
    ("lc_standard_error", "LC SE"),
    ("n_wins", "wins"),
    ("n_wins_base", "losses"),
    ("n_draws", "ties"),
    ("n_missing", "missing"),
    ("reward_mean", "reward"),
    ("reward_se", "reward SE"),
    ("avg_length", "length (chars)"),
    ("tokens_per_item", "tokens / item"),
    ("strong_tokens_per_item", "strong tokens / item"),
    ("seconds_per_item", "s / item"),
    ("n_total", "n"),
]
COMPUTE_LABELS = {
    "tokens": "forward tokens per instruction (all models)",
    "strong_tokens": "forward tokens per instruction (strong model)",
    "seconds": "wall time per instruction (s)",
}
COMPUTE_KEYS = {"tokens": "tokens_per_item", "strong_tokens": "strong_tokens_per_item", "seconds": "seconds_per_item"}


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) >= 1000 else f"{value:.2f}"
    return str(value)


def leaderboard_csv(rows: list[dict]) -> str:
    """The leaderboard as CSV, full precision."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([key for key, _ in COLUMNS])
    for row in rows:
        writer.writerow(["" if row.get(key) is None else row.get(key) for key, _ in COLUMNS])
    return buf.getvalue()


def leaderboard_markdown(rows: list[dict], *, reference: str | None, judge: str) -> str:
    """The leaderboard as a markdown table (columns with no value in any row left out, and `missing` unless
    some preference is)."""
    cols = [(k, h) for k, h in COLUMNS if any(r.get(k) is not None for r in rows)]
    cols = [(k, h) for k, h in cols if k != "n_missing" or any(r.get(k) for r in rows)]
    lines = [
        f"Judge: `{judge}`. Reference: `{reference or 'none'}`. Win rates in %, ties count half; "
        "LC: length-controlled (AlpacaEval 2), its SE by bootstrap; n: preferences counted (missing ones left out).",
        "",
        "| " + " | ".join(h for _, h in cols) + " |",
        "| " + " | ".join("---" for _ in cols) + " |",
    ]
    lines += ["| " + " | ".join(_fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_win_rates(rows: list[dict], path: Path, *, reference: str | None, judge: str) -> bool:
    """Bar chart of win rate per system with 95% bootstrap intervals, LC win rate beside it; False if no win rates."""
    rows = [r for r in rows if r.get("win_rate") is not None]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(rows) + 2), 4.5))
    x = range(len(rows))
    wr = [r["win_rate"] for r in rows]
    err = [[r["win_rate"] - r["ci_low"] for r in rows], [r["ci_high"] - r["win_rate"] for r in rows]]
    has_lc = any(r.get("lc_win_rate") is not None for r in rows)
    width = 0.38 if has_lc else 0.6
    shift = width / 2 if has_lc else 0.0
    ax.bar(
        [i - shift for i in x], wr, width, yerr=err, capsize=4, color="tab:blue", label="win rate (95% bootstrap CI)"
    )
    if has_lc:
        lc = [r["lc_win_rate"] if r.get("lc_win_rate") is not None else 0.0 for r in rows]
        lc_err = [1.96 * (r.get("lc_standard_error") or 0.0) for r in rows]
        ax.bar([i + shift for i in x], lc, width, yerr=lc_err, capsize=4, color="tab:orange",
               label="length-controlled win rate (± 1.96 SE)")  # fmt: skip
    ax.axhline(50, color="grey", linestyle="--", linewidth=1, label="tie with the reference (50%)")
    ax.set_xticks(list(x), [r["system"] for r in rows], rotation=20, ha="right")
    ax.set_ylim(0, 118)  # room above 100% for the legend
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel(f"win rate against {reference} (%)")
    ax.set_xlabel("system")
    ax.set_title(f"Win rate per system (judge: {judge})")
    ax.legend(loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


def plot_reward_vs_compute(rows: list[dict], path: Path, *, compute_axis: str, judge: str) -> bool:
    """Mean reward (± SE; else win rate ± 95% CI) against compute per instruction, one labelled point per system."""
    key = COMPUTE_KEYS[compute_axis]
    use_reward = any(r.get("reward_mean") is not None for r in rows)
    ykey = "reward_mean" if use_reward else "win_rate"
    rows = [r for r in rows if r.get(ykey) is not None and r.get(key)]
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(8.5 if len(rows) <= 10 else 7, 4.5))
    for n, r in enumerate(rows):
        if use_reward:
            yerr = [[r["reward_se"] or 0.0], [r["reward_se"] or 0.0]]
        else:
            yerr = [[r["win_rate"] - r["ci_low"]], [r["ci_high"] - r["win_rate"]]]
        ax.errorbar([r[key]], [r[ykey]], yerr=yerr, fmt="o", capsize=4, color=f"C{n % 10}", label=r["system"])
        ax.annotate(r["system"], (r[key], r[ykey]), textcoords="offset points", xytext=(6, 4), fontsize=8)
    xs = [r[key] for r in rows]
    log_scale = max(xs) / min(xs) > 5  # a log axis only when the systems' compute spans a wide range
    if log_scale:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.margins(x=0.15)
    ax.set_xlabel(COMPUTE_LABELS[compute_axis] + (", log scale" if log_scale else ""))
    ax.set_ylabel(f"mean reward ({judge}) ± SE" if use_reward else "win rate (%) ± 95% CI")
    ax.set_title("Reward against compute" if use_reward else "Win rate against compute")
    ax.grid(True, which="both", alpha=0.3)
    if len(rows) <= 10:  # every point is labelled; past ten systems the colours repeat and a legend would mislead
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    _save(fig, path)
    return True


def _save(fig, path: Path) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def write_tables(rows: list[dict], out_dir: Path, *, reference: str | None, judge: str) -> None:
    """`leaderboard.csv` and `leaderboard.md` in `out_dir`."""
    write_atomic(Path(out_dir) / "leaderboard.csv", leaderboard_csv(rows))
    write_atomic(Path(out_dir) / "leaderboard.md", leaderboard_markdown(rows, reference=reference, judge=judge))
