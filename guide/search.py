"""Weak-to-strong search (Zhou et al., NeurIPS 2024): chunk-level beam search, with best-of-N and
plain sampling as its special cases.

Every `chunk_len` tokens, the W·K rows of each prompt are scored by the guides' cumulative
log-likelihood ratio, the top `width` are kept and each is copied `successors` times. Finished and
unfinished rows compete on the same score (a finished row carries over once: copies would be
identical); a prompt is done when every kept row is finished.

Each item's cost is its own (guide/engine.py): its prompt's prefill once per model, then every row it
searched over, the dropped ones included, and the guides' re-fed tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s.guide.context import DecodeContext
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.ranges import at_least
from w2s.guide.types import Output


@register_decoder("cbs")
@dataclass
class ChunkBeamSearch(Decoder):
    """CBS(W, K, L): `width` beams kept, `successors` samples per beam, `chunk_len` tokens per chunk (None: ∞)."""

    width: int = field(default=4, metadata=at_least(1))
    successors: int = field(default=4, metadata=at_least(1))
    chunk_len: int | None = field(default=5, metadata=at_least(1))

    needs = ("pairs",)

    def draws(self) -> int:
        return self.width * self.successors

    def run(self, ctx: DecodeContext) -> list[Output]:
        """Searches every prompt at once on the strong model, rows ranked by the context's scorer."""
        beams = ctx.start(copies=self.width * self.successors)
        scorer = ctx.scorer(beams)
        best = {}
        while beams.growing():
            grew = {r.id for r in beams.growing()}
            beams.sample(self.chunk_len or ctx.max_new_tokens)
            texts = [beams.text(r) if r.id in grew else None for r in beams.rows]
            for row, score in zip(beams.rows, scorer.update(texts, [r.finished for r in beams.rows]), strict=True):
                row.score = score
            # keep the top W rows of each prompt; copy each growing one K times
            by_prompt: dict[int, list[int]] = {}
            for i, row in enumerate(beams.rows):
                by_prompt.setdefault(row.prompt, []).append(i)
            keep: list[int] = []
            for p, members in by_prompt.items():
                top = sorted(members, key=lambda i: beams.rows[i].score, reverse=True)[: self.width]
                if all(beams.rows[i].done for i in top):
                    best[p] = beams.rows[top[0]]
                    continue
                for i in top:
                    keep += [i] if beams.rows[i].done else [i] * self.successors
            beams.select(keep)
        return [Output(beams.text(best[p]), best[p].stop, best[p].score) for p in range(len(ctx.prompts))]


@register_decoder("bon")
@dataclass
class BestOfN(Decoder):
    """Best-of-N is CBS with W=1, K=N, L=∞: `num_samples` full samples, the best-scored one kept (by the
    reward model if the recipe names one, else by the guide pairs)."""

    num_samples: int = field(default=16, metadata=at_least(1))

    needs = ("scorer",)

    def draws(self) -> int:
        return self.num_samples

    def run(self, ctx: DecodeContext) -> list[Output]:
        return ChunkBeamSearch(width=1, successors=self.num_samples, chunk_len=None).run(ctx)


@register_decoder("sample")
@dataclass
class Sampling(Decoder):
    """Plain sampling from the strong model, one response per prompt."""

    def run(self, ctx: DecodeContext) -> list[Output]:
        rows = ctx.start()
        rows.sample(ctx.max_new_tokens)
        return [Output(rows.text(r), r.stop) for r in rows.rows]
