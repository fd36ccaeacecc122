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

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from w2s.guide.commands import GuideError
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.engine import Generation, LMState, Row, encode_prompts, item_keys

if TYPE_CHECKING:
    from w2s.guide.run import Guide


def check_shared_vocabulary(tokenizers: dict[str, object]) -> None:
    """Raises a clear error unless every tokenizer has the same vocabulary."""
    names = list(tokenizers)
    first = tokenizers[names[0]].get_vocab()
    for name in names[1:]:
        if tokenizers[name].get_vocab() != first:
            raise GuideError(
                f"logit arithmetic needs one shared vocabulary, but {names[0]!r} and {name!r} have different "
                "vocabularies: use chunk-level beam search (decoder: cbs) or draft-switch decoding (decoder: wsd), "
                "which pass text between models"
            )


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

    beta: float = 1.0

    needs = ("pairs",)

    def combine(self, base, experts, untuned):
        return proxy_tuning_logits(base, experts[0], untuned, self.beta), None

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        return _lockstep(guide, prompts, self.combine)


@register_decoder("fusion")
@dataclass
class DynamicFusion(Decoder):
    """Dynamic logit fusion with alpha from the grid 0..`alpha_max` step `alpha_step`, one expert per step."""

    alpha_max: float = 2.0
    alpha_step: float = 0.1

    needs = ("pairs",)

    def check(self) -> None:
        if self.alpha_step <= 0:
            raise GuideError(f"alpha_step must be > 0, got {self.alpha_step}")
        if self.alpha_max < 0:
            raise GuideError(f"alpha_max must be >= 0, got {self.alpha_max}")

    def combine(self, base, experts, untuned):
        alphas = torch.arange(0, round(self.alpha_max / self.alpha_step) + 1) * self.alpha_step
        return fuse(base, torch.stack(experts), untuned, alphas)

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        return _lockstep(guide, prompts, self.combine)


def _lockstep(guide: Guide, prompts: list[str], combine) -> list[Generation]:
    """Steps the base, every expert and the untuned model together, sampling from the combined logits."""
    start = time.perf_counter()
    engine = guide.engine
    pairs = guide.pairs
    if not pairs:
        raise GuideError("logit arithmetic needs a guide pair: set tuned and untuned (or adapter)")
    if any(p.is_adapter for p in pairs) and len(pairs) > 1:
        raise GuideError("dynamic fusion over several adapters is not supported: give experts as model folders")
    untuned_model = pairs[0].untuned
    if any(p.untuned is not untuned_model and p.untuned.name_or_path != untuned_model.name_or_path for p in pairs):
        raise GuideError("logit fusion needs every expert to share one untuned model")
    check_shared_vocabulary({"strong": engine.tokenizer, **{f"guide {i}": p.tokenizer for i, p in enumerate(pairs)}})
    vocab = len(engine.tokenizer)
    n = len(prompts)
    pad = engine.tokenizer.pad_token_id or 0
    states = [LMState(engine.model, n, pad_id=pad)]
    states += [LMState(p.tuned, n, pad_id=pad, adapter=True if p.is_adapter else None) for p in pairs]
    states.append(LMState(untuned_model, n, pad_id=pad, adapter=False if pairs[0].is_adapter else None))
    tokenizers = [engine.tokenizer] + [p.tokenizer for p in pairs] + [pairs[0].tokenizer]
    for state, tok in zip(states, tokenizers, strict=True):
        state.append(encode_prompts(tok, prompts, None))  # each model sees the prompt in its own template
    states[0].items = guide.items or item_keys(prompts)  # the prompts' random streams (Engine.start)
    rows = [Row(p) for p in range(n)]

    def combined(logits: list[torch.Tensor]) -> torch.Tensor:
        logits = [x[:, :vocab] for x in logits]  # lm heads may be padded past the vocabulary
        return combine(logits[0], logits[1:-1], logits[-1])[0]

    engine.advance(states[0], list(rows), engine.stop.max_new_tokens, followers=tuple(states[1:]), combine=combined)
    elapsed = time.perf_counter() - start
    names = ["strong", *[f"tuned_{i}" if len(pairs) > 1 else "tuned" for i in range(len(pairs))], "untuned"]
    return [
        Generation(
            engine.text(r),
            tokens={name: s.item_tokens[r.prompt] for name, s in zip(names, states, strict=True)},
            seconds=elapsed / n,
            stop=r.stop,
            batch_seconds=elapsed,
        )
        for r in rows
    ]
