"""Weak-to-strong decoding, WSD ("Well begun is half done", 2025): a small aligned pilot drafts the
opening; the large base takes over once it finds the draft likely, and never hands back.

With p_i the base model's probability of draft token i (in the base's own tokenisation of the draft
text) and a_i the geometric mean of p over the window i-w+1..i, the switch point is the first i with
a_i >= tau. The draft up to and including token i is kept and the base continues from there. Unlike
the public implementation, which drafts the whole response and throws the tail away, the base checks
the draft while it is written (every `check_every` pilot tokens, in one batched forward) and the pilot
stops drafting at the switch. If no window reaches tau, the whole draft is the response.

An item's cost (guide/engine.py): the pilot's prompt and draft; the base's prompt, its checks of the
draft (tokens re-fed where re-tokenising changed them, the one token re-fed at the switch) and its
continuation.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from w2s.guide.commands import GuideError
from w2s.guide.context import DecodeContext
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.ranges import at_least, between
from w2s.guide.types import Output


def switch_index(logprobs: list[float], window: int, threshold: float, stable: int | None = None) -> int | None:
    """First i (among the first `stable` tokens) whose window's mean log-prob reaches log(threshold)."""
    limit = len(logprobs) if stable is None else stable
    bar = math.log(threshold)
    total = sum(logprobs[: window - 1])
    for i in range(window - 1, limit):
        total += logprobs[i]
        if total / window >= bar - 1e-12:
            return i
        total -= logprobs[i - window + 1]
    return None


@register_decoder("wsd")
@dataclass
class DraftSwitch(Decoder):
    """WSD(w, tau): `window`, `threshold`; `continuation` sample or greedy once the base takes over.

    The pilot samples with the strong engine's settings and token limit; the base's continuation too,
    from a stream seeded with the engine's seed + 1.
    """

    window: int = field(default=6, metadata=at_least(1))
    threshold: float = field(default=0.8, metadata=between(0, 1, low_open=True))  # a geometric-mean probability
    check_every: int = field(default=4, metadata=at_least(1))  # pilot tokens drafted between two checks by the base
    continuation: str = "sample"

    needs = ("pilot",)

    def check(self) -> None:
        if self.continuation not in ("sample", "greedy"):
            raise GuideError(f"continuation {self.continuation!r}: choose sample or greedy")

    def run(self, ctx: DecodeContext) -> list[Output]:
        n = len(ctx.prompts)
        drafts = ctx.start("pilot")
        base = ctx.start()  # the base reads each draft as it is written (its own tokens, joint with the prompt)
        switch: dict[int, int] = {}  # prompt -> the base's draft tokens kept
        settled: set[int] = set()  # switched, or drafted to the end and checked
        while len(settled) < n:
            drafts.sample(self.check_every)
            texts = [None if p in settled else drafts.text(drafts.rows[p]) for p in range(n)]
            readings = base.read(texts, [r.done for r in drafts.rows])
            for p, reading in enumerate(readings):
                if reading is None:
                    continue
                i = switch_index(reading.logprobs, self.window, self.threshold, reading.stable)
                if i is not None:
                    switch[p] = i + 1
                if i is not None or drafts.rows[p].done:
                    settled.add(p)
            drafts.halt(sorted(switch))  # the pilot stops drafting at the switch

        out = [Output(drafts.text(r), r.stop) for r in drafts.rows]
        if switch:  # the base continues from the kept draft, and never hands back
            base.hand_over(switch)
            temperature = 0.0 if self.continuation == "greedy" else ctx.sampling.temperature
            base.sample(
                ctx.max_new_tokens,
                sampling=dataclasses.replace(ctx.sampling, temperature=temperature, seed=ctx.sampling.seed + 1),
            )
            for p in switch:
                row = base.rows[p]
                out[p] = Output(base.text(row), row.stop, switch_at=switch[p])
        return out
