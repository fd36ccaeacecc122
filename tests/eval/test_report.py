"""The leaderboard's columns: the LC win rate's SE beside it, and missing preferences shown only when there are some."""

from __future__ import annotations

from w2s.eval.report import leaderboard_csv, leaderboard_markdown

ROW = {"system": "x", "win_rate": 60.0, "lc_win_rate": 55.0, "lc_standard_error": 2.5, "n_total": 10, "n_missing": 0}


def test_lc_standard_error_and_missing_preferences_columns():
    header = leaderboard_csv([ROW]).splitlines()[0].split(",")
    assert header.index("lc_standard_error") == header.index("lc_win_rate") + 1 and "n_missing" in header
    md = leaderboard_markdown([ROW], reference="base", judge="gold")
    assert "| LC win rate % | LC SE |" in md and "| 55.00 | 2.50 |" in md
    assert "| missing |" not in md  # no preference missing: no column
    md = leaderboard_markdown(
        [ROW, {**ROW, "system": "y", "n_total": 8, "n_missing": 2}], reference="base", judge="gold"
    )
    assert "| missing |" in md and md.splitlines()[-1].endswith("| 2 | 8 |")
