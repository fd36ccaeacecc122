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

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from w2s.guide.commands import GuideError
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.engine import Generation, Row

if TYPE_CHECKING:
    from w2s.guide.run import Guide


@register_decoder("cbs")
@dataclass
class ChunkBeamSearch(Decoder):
    """CBS(W, K, L): `width` beams kept, `successors` samples per beam, `chunk_len` tokens per chunk (None: ∞)."""

    width: int = 4
    successors: int = 4
    chunk_len: int | None = 5

    needs = ("pairs",)

    def check(self) -> None:
        for key in ("width", "successors", "chunk_len"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise GuideError(f"{key} must be >= 1, got {value}")

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        """Searches every prompt at once on the strong engine, rows ranked by `guide.scorer`."""
        start = time.perf_counter()
        engine = guide.engine
        fanout = self.width * self.successors
        row_prompts = [p for p in range(len(prompts)) for _ in range(fanout)]
        state = engine.start(prompts, row_prompts, guide.items)
        scorer = guide.scorer(prompts, row_prompts)
        beams = [Row(p) for p in row_prompts]  # every row, in scorer order
        growing = list(beams)  # the rows the strong state holds, in state order
        best: dict[int, Row] = {}
        chunk = self.chunk_len or engine.stop.max_new_tokens
        while growing:
            before = {id(r) for r in growing}
            engine.advance(state, growing, chunk)
            texts = [engine.text(r) if id(r) in before else None for r in beams]
            for row, score in zip(beams, scorer.update(texts, [r.finished for r in beams]), strict=True):
                row.score = score
            # keep the top W rows of each prompt; copy each growing one K times
            by_prompt: dict[int, list[int]] = {}
            for i, row in enumerate(beams):
                by_prompt.setdefault(row.prompt, []).append(i)
            keep_index: list[int] = []
            for p, members in by_prompt.items():
                top = sorted(members, key=lambda i: beams[i].score, reverse=True)[: self.width]
                if all(beams[i].done for i in top):
                    best[p] = beams[top[0]]
                    continue
                for i in top:
                    keep_index += [i] if beams[i].done else [i] * self.successors
            scorer.select(keep_index)
            new_beams = [beams[i].copy() for i in keep_index]
            state_rows = [i for i in keep_index if not beams[i].done]
            position = {id(r): k for k, r in enumerate(r for r in beams if not r.done)}
            state.select([position[id(beams[i])] for i in state_rows])
            beams = new_beams
            growing = [r for r in beams if not r.done]
        elapsed = time.perf_counter() - start
        tokens = {engine.name: state.item_tokens, **scorer.item_tokens()}
        return [
            Generation(
                engine.text(best[p]),
                best[p].score,
                tokens={k: v[p] for k, v in tokens.items()},
                seconds=elapsed / len(prompts),
                stop=best[p].stop,
                batch_seconds=elapsed,
            )
            for p in range(len(prompts))
        ]


@register_decoder("bon")
@dataclass
class BestOfN(Decoder):
    """Best-of-N is CBS with W=1, K=N, L=∞: `num_samples` full samples, the best-scored one kept (by the
    reward model if the recipe names one, else by the guide pairs)."""

    num_samples: int = 16

    needs = ("scorer",)

    def check(self) -> None:
        if self.num_samples < 1:
            raise GuideError(f"num_samples must be >= 1, got {self.num_samples}")

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        return ChunkBeamSearch(width=1, successors=self.num_samples, chunk_len=None).run(guide, prompts)


@register_decoder("sample")
@dataclass
class Sampling(Decoder):
    """Plain sampling from the strong model, one response per prompt."""

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        start = time.perf_counter()
        engine = guide.engine
        rows = [Row(p) for p in range(len(prompts))]
        state = engine.start(prompts, list(range(len(prompts))), guide.items)
        engine.advance(state, list(rows), engine.stop.max_new_tokens)
        elapsed = time.perf_counter() - start
        return [
            Generation(
                engine.text(r),
                tokens={engine.name: state.item_tokens[r.prompt]},
                seconds=elapsed / len(prompts),
                stop=r.stop,
                batch_seconds=elapsed,
            )
            for r in rows
        ]
