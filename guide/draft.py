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
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from w2s.guide.commands import GuideError
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.engine import Engine, Generation, Row, StopRule
from w2s.guide.scoring import IncrementalScores, render

if TYPE_CHECKING:
    from w2s.guide.run import Guide


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

    window: int = 6
    threshold: float = 0.8
    check_every: int = 4  # pilot tokens drafted between two checks by the base
    continuation: str = "sample"

    needs = ("pilot",)

    def check(self) -> None:
        for key in ("window", "check_every"):
            if getattr(self, key) < 1:
                raise GuideError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not 0 < self.threshold <= 1:
            raise GuideError(f"threshold must be in (0, 1] (a geometric-mean probability), got {self.threshold}")
        if self.continuation not in ("sample", "greedy"):
            raise GuideError(f"continuation {self.continuation!r}: choose sample or greedy")

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        start = time.perf_counter()
        pilot_model, pilot_tok = guide.pilot
        base: Engine = guide.engine
        max_new_tokens = base.stop.max_new_tokens
        pilot_stop = StopRule.for_model(pilot_model, pilot_tok, max_new_tokens)
        pilot = Engine(pilot_model, pilot_tok, base.sampling, pilot_stop, "pilot", base.share_prefixes)
        n = len(prompts)
        drafts = [Row(p) for p in range(n)]
        pilot_state = pilot.start(prompts, list(range(n)), guide.items)
        base_state = base.start(prompts, list(range(n)), guide.items)
        contexts, context_ids = render(base.tokenizer, prompts)
        prompt_len = [len(ids) for ids in context_ids]
        # the base's log-prob of each of its tokens of the draft, joint with the prompt (guide/scoring.py)
        scores = IncrementalScores(base_state, base.tokenizer, contexts, context_ids, list(range(n)), "strong model")
        lp: list[list[float]] = [[] for _ in range(n)]
        begin = list(prompt_len)  # where each draft's tokens begin in the base's row
        switch: dict[int, int] = {}
        settled: set[int] = set()  # switched, or drafted to the end and checked
        drafting = list(drafts)
        while len(settled) < n:
            drafting = pilot.advance(pilot_state, drafting, self.check_every)
            texts = [None if p in settled else pilot.text(drafts[p]) for p in range(n)]
            rows = scores.tokens(texts, [False] * n)
            new = scores.update(rows)
            for p in range(n):
                if p in settled:
                    continue
                lp[p], begin[p] = new[p], rows[p].start
                done = drafts[p].done
                stable = len(lp[p]) if done else self._stable(base.tokenizer, contexts[p], texts[p], begin[p])
                i = switch_index(lp[p], self.window, self.threshold, stable)
                if i is not None:
                    switch[p] = i
                if i is not None or done:
                    settled.add(p)
            growing = [k for k, r in enumerate(drafting) if r.prompt not in switch]
            if len(growing) < len(drafting):
                pilot_state.select(growing)  # the pilot stops drafting at the switch
                drafting = [drafting[k] for k in growing]

        texts = {p: pilot.text(drafts[p]) for p in range(n) if p not in switch}
        stops = {p: drafts[p].stop for p in range(n)}
        switched = sorted(switch)
        if switched:  # the base continues from the kept draft: roll back past the switch, refresh the logits
            refeed = [[] for _ in range(n)]
            for p in switched:
                keep = begin[p] + switch[p] + 1
                refeed[p] = [base_state.ids[p][keep - 1]]
                base_state.rollback(p, len(base_state.ids[p]) - keep + 1)
            base_state.append(refeed)
            base_state.select(switched)
            # the response's tokens; where re-tokenising merged the prompt's tail into the draft's first token,
            # from that token on (its prompt characters are cut from the text below)
            rows = [Row(p, ids=base_state.ids[k][begin[p] :]) for k, p in enumerate(switched)]
            temperature = 0.0 if self.continuation == "greedy" else base.sampling.temperature
            params = dataclasses.replace(base.sampling, temperature=temperature, seed=base.sampling.seed + 1)
            cont = Engine(base.model, base.tokenizer, params, base.stop, base.name, base.share_prefixes)
            cont.advance(base_state, [r for r in rows if len(r.ids) < max_new_tokens], max_new_tokens)
            for r in rows:
                text, p = cont.text(r), r.prompt
                if begin[p] < prompt_len[p]:  # cut the prompt's characters its first token carries
                    text = text.removeprefix(
                        base.tokenizer.decode(context_ids[p][begin[p] :], skip_special_tokens=True)
                    )
                texts[p], stops[p] = text, r.stop or "max_new_tokens"
        elapsed = time.perf_counter() - start
        return [
            Generation(
                texts[p],
                switch_at=switch[p] + 1 if p in switch else None,
                tokens={"strong": base_state.item_tokens[p], "pilot": pilot_state.item_tokens[p]},
                seconds=elapsed / n,
                stop=stops[p],
                batch_seconds=elapsed,
            )
            for p in range(n)
        ]

    @staticmethod
    def _stable(tokenizer, context: str, text: str, start: int) -> int:
        """The base's tokens of the draft that can no longer change: those ending before its last space."""
        cut = text.rfind(" ")
        if cut <= 0:
            return 0
        offsets = tokenizer(context + text, add_special_tokens=False, return_offsets_mapping=True).offset_mapping
        return sum(1 for _, end in offsets[start:] if end <= len(context) + cut)
