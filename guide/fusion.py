"""Logit arithmetic over a shared vocabulary: EFT / proxy tuning and dynamic logit fusion.

* Proxy tuning (EFT): ``logits = base + beta * (tuned - untuned)``.
* Dynamic logit fusion (Fan et al. 2024): experts t over one untuned small model,
  ``softmax(base + sum_t alpha_t (tuned_t - untuned))`` with, at each step, alpha chosen from a grid
  (one expert active) to minimise ``sum_t (KL(P~||P) - KL(Q_t||Q))^2 + (KL(P||P~) - KL(Q||Q_t))^2``
  (P the base, P~ the fused, Q the untuned small model, Q_t expert t).

Both need every model to share one vocabulary; models with different vocabularies are guided
through text instead, by chunk-level beam search (decoder: cbs) or draft-switch decoding (wsd).

Every model reads each item's prompt and response tokens once, charged to that item (guide/engine.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from w2s.guide.context import DecodeContext
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.ranges import above, any_number, at_least
from w2s.guide.types import Output


def proxy_tuning_logits(base: torch.Tensor, tuned: torch.Tensor, untuned: torch.Tensor, beta: float) -> torch.Tensor:
    """EFT / proxy tuning: base + beta * (tuned - untuned)."""
    return base.float() + beta * (tuned.float() - untuned.float())


def fusion_objective(base: torch.Tensor, experts: torch.Tensor, untuned: torch.Tensor, alphas: torch.Tensor):
    """Objective of every (expert, alpha) candidate and the fused logits it gives.

    base, untuned: (rows, vocab); experts: (T, rows, vocab); alphas: (A,).
    Returns objective (rows, T, A) and fused logits (rows, T, A, vocab).
    """
    log_p = torch.log_softmax(base.float(), -1)  # (rows, V)
    log_q = torch.log_softmax(untuned.float(), -1)
    log_qt = torch.log_softmax(experts.float(), -1)  # (T, rows, V)
    kl_qt_q = (log_qt.exp() * (log_qt - log_q)).sum(-1).T  # (rows, T): KL(Q_t || Q)
    kl_q_qt = (log_q.exp() * (log_q - log_qt)).sum(-1).T  # (rows, T): KL(Q || Q_t)
    shift = (experts.float() - untuned.float()).transpose(0, 1)  # (rows, T, V)
    fused = base.float()[:, None, None] + alphas[None, None, :, None] * shift[:, :, None]  # (rows, T, A, V)
    log_f = torch.log_softmax(fused, -1)
    kl_f_p = (log_f.exp() * (log_f - log_p[:, None, None])).sum(-1)  # (rows, T, A)
    kl_p_f = (log_p.exp()[:, None, None] * (log_p[:, None, None] - log_f)).sum(-1)
    objective = (kl_f_p[..., None] - kl_qt_q[:, None, None]) ** 2 + (kl_p_f[..., None] - kl_q_qt[:, None, None]) ** 2
    return objective.sum(-1), fused


def fuse(base, experts, untuned, alphas) -> tuple[torch.Tensor, torch.Tensor]:
    """The fused logits of the best candidate per row, and its alpha per expert (rows, T)."""
    objective, fused = fusion_objective(base, experts, untuned, alphas)
    rows, n_experts, n_alphas = objective.shape
    best = objective.reshape(rows, -1).argmin(-1)  # ties: the first, i.e. the smallest alpha of expert 0
    t, a = best // n_alphas, best % n_alphas
    chosen = torch.zeros(rows, n_experts, dtype=alphas.dtype)
    chosen[torch.arange(rows), t] = alphas[a]
    return fused[torch.arange(rows), t, a], chosen


@register_decoder("eft")
@dataclass
class ProxyTuning(Decoder):
    """EFT / proxy tuning with strength `beta`."""

    beta: float = field(default=1.0, metadata=any_number())  # negative: away from the tuned model

    needs = ("pairs",)
    shared_vocabulary = True

    def combine(self, base, experts, untuned):
        return proxy_tuning_logits(base, experts[0], untuned, self.beta), None

    def run(self, ctx: DecodeContext) -> list[Output]:
        return _lockstep(ctx, self.combine)


@register_decoder("fusion")
@dataclass
class DynamicFusion(Decoder):
    """Dynamic logit fusion with alpha from the grid 0..`alpha_max` step `alpha_step`, one expert per step."""

    alpha_max: float = field(default=2.0, metadata=at_least(0))
    alpha_step: float = field(default=0.1, metadata=above(0))

    needs = ("pairs",)
    shared_vocabulary = True

    def combine(self, base, experts, untuned):
        alphas = torch.arange(0, round(self.alpha_max / self.alpha_step) + 1) * self.alpha_step
        return fuse(base, torch.stack(experts), untuned, alphas)

    def run(self, ctx: DecodeContext) -> list[Output]:
        return _lockstep(ctx, self.combine)


def _lockstep(ctx: DecodeContext, combine) -> list[Output]:
    """Steps the base, every expert and the untuned model together, sampling from the combined logits."""
    rows = ctx.lockstep()
    rows.sample(ctx.max_new_tokens, combine=lambda logits: combine(logits[0], logits[1:-1], logits[-1])[0])
    return [Output(rows.text(r), r.stop) for r in rows.rows]
