"""Evaluation of guided decoding, AlpacaEval-style.

`eval.instructions` (instruction sets), `eval.generate` (each system's outputs through `guide/`,
resumable), `eval.judges` and `eval.annotate` (judges and their verdict cache), `eval.metrics`
(win rate, LC win rate, rewards, cost), `eval.report` (leaderboard, plots), `eval.run` (`evaluate`,
the whole run), `eval.config` (the recipe), `eval.cli` (`w2s eval`, `w2s demo`).
"""
