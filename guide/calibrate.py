"""Calibrating draft-switch decoding's threshold τ on held-out prompts (`w2s calibrate`).

WSD hands over at the first draft token i whose window's geometric-mean probability under the base, a_i,
reaches τ; a larger τ hands over later. The pilot's job is the opening, so the rule w2s uses is:

    τ = the smallest threshold of the grid at which at least half of the drafts are handed over no
        earlier than the end of their first sentence (the median switch lands at or after it).

A smaller τ would let most drafts go before the pilot has set the response's stance; a larger one keeps
the pilot (the weaker writer) drafting longer than it must. The drafts are the ones WSD itself samples
(the same pilot streams: the pilot's draws do not depend on τ), written in full once; the base scores
each draft's tokens once, and every τ of the grid is read off those scores.
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass, field

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.draft import DraftSwitch, switch_index
from w2s.guide.models import render_prompts
from w2s.guide.run import Guide
from w2s.guide.scoring import response_ids, token_logprobs

GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))  # 0.05 .. 0.95


@dataclass
class Calibration:
    """The chosen threshold and, for every threshold of the grid, where the switches land."""

    threshold: float | None  # None: no threshold of the grid satisfies the rule
    window: int
    sentence_end: str
    num_prompts: int
    grid: list[dict] = field(default_factory=list)  # per τ: median switch, share at/after the sentence end, ...
    switches: list[int | None] = field(default_factory=list)  # per prompt at τ: draft tokens kept (None: all)

    def table(self) -> str:
        lines = ["| τ | median switch (tokens) | switched at/after the first sentence | never switched |",
                 "| --- | --- | --- | --- |"]  # fmt: skip
        for row in self.grid:
            mark = " ←" if row["threshold"] == self.threshold else ""
            median = "never" if row["median_switch"] is None else f"{row['median_switch']:.0f}"
            lines.append(
                f"| {row['threshold']:.2f}{mark} | {median} | {row['after_sentence']:.0%} | {row['never']:.0%} |"
            )
        return "\n".join(lines)


def first_sentence_end(tokenizer, context: str, context_ids: list[int], draft: str, end: str) -> int | None:
    """Index (among the draft's scored tokens) of the token that completes the draft's first `end`, or None."""
    at = draft.find(end)
    if at < 0:
        return None
    row = response_ids(tokenizer, context, context_ids, draft[: at + len(end)], False)
    return len(row.ids) - row.start - 1


def check_calibration(config: GuideConfig) -> DraftSwitch:
    """The recipe's decoder; a clear error unless it is draft-switch decoding (WSD, or a decoder built on it)."""
    decoder = config.make_decoder()
    if not isinstance(decoder, DraftSwitch):
        raise GuideError(
            f"calibration is for the wsd decoder, but the recipe's decoder is {config.decoder!r}: add --decoder wsd"
        )
    if config.strong_backend != "hf":
        raise GuideError(
            "w2s calibrate scores the drafts with the strong model in-process: set strong_backend: hf (the same "
            "weights as the served model) to calibrate, then serve"
        )
    return decoder


def calibrate_wsd(config: GuideConfig, prompts: list[str], *, sentence_end: str = ".") -> Calibration:
    """The rule above on `prompts` (held out from the evaluation), for the WSD recipe `config`."""
    decoder = check_calibration(config)
    if not prompts:
        raise GuideError("no prompts to calibrate on")
    # the pilot's full drafts: a window longer than any draft never hands over
    drafting = dataclasses.replace(decoder, window=config.max_new_tokens + 1, threshold=1.0)
    guide = Guide(config, drafting)
    drafts = guide.generate(prompts)
    tokenizer = guide.engine.tokenizer
    contexts, context_ids = render_prompts(tokenizer, prompts)
    rows = [
        response_ids(tokenizer, c, ids, g.text, g.stop == "eos")
        for c, ids, g in zip(contexts, context_ids, drafts, strict=True)
    ]
    logprobs = token_logprobs(guide.engine.model, rows, batch_size=config.batch_size)
    ends = [
        first_sentence_end(tokenizer, c, ids, g.text, sentence_end)
        for c, ids, g in zip(contexts, context_ids, drafts, strict=True)
    ]
    threshold, grid, switches = choose_threshold(logprobs, ends, decoder.window)
    return Calibration(threshold, decoder.window, sentence_end, len(prompts), grid, switches)


def choose_threshold(
    logprobs: list[list[float]], ends: list[int | None], window: int
) -> tuple[float | None, list[dict], list[int | None]]:
    """The rule on the base's log-probs of each draft's tokens and the index of each draft's first sentence end:
    the chosen τ (None if none qualifies), the grid's statistics, and each draft's switch at τ (tokens kept)."""
    grid, chosen, kept = [], None, []
    for tau in GRID:
        switches = [switch_index(lp, window, tau) for lp in logprobs]
        # a draft never handed over kept its first sentence; one with no sentence end that switched did not
        after = [s is None or (e is not None and s >= e) for s, e in zip(switches, ends, strict=True)]
        positions = sorted(len(lp) if s is None else s + 1 for s, lp in zip(switches, logprobs, strict=True))
        never = sum(s is None for s in switches) / len(switches)
        grid.append(
            {
                "threshold": tau,
                "median_switch": None if never > 0.5 else statistics.median(positions),
                "after_sentence": sum(after) / len(after),
                "never": never,
            }
        )
        if chosen is None and sum(after) >= len(after) / 2:
            chosen, kept = tau, [None if s is None else s + 1 for s in switches]
    return chosen, grid, kept
