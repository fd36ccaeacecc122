"""Generators: models that write N responses per prompt, each in its own chat template.

`kind: hf` samples with HF transformers' batched `generate`; `kind: guide` hands the
prompts to a `guide/` decoder (`guide.generate(config, prompts)`), so weak-to-strong
search over a strong model can be a teacher. Every generator counts the tokens it
wrote, for the benchmark and the card.
"""

from __future__ import annotations

import logging
import os
from typing import Protocol

import torch

from data.prompts import Messages
from data.recipe import GeneratorConfig

logger = logging.getLogger(__name__)


class Generator(Protocol):
    """Writes `num_samples` responses per prompt; the same seed gives the same responses."""

    name: str
    num_samples: int
    tokens: int  # response tokens written so far

    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]: ...


def default_device(device: str | None) -> str | None:
    """The recipe's device, else this process's GPU under `accelerate launch` (LOCAL_RANK), else None (CPU)."""
    if device is not None or not torch.cuda.is_available():
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def count_new_tokens(new: torch.Tensor, pad_token_id: int | None, eos_token_id: int | None) -> int:
    """Tokens a batch of continuations holds, up to and including each row's first end-of-sequence."""
    stop = torch.zeros_like(new, dtype=torch.bool)
    for token in {pad_token_id, eos_token_id} - {None}:
        stop |= new == token
    # a row counts its tokens before the first stop token, plus that stop token if it is eos
    first = torch.where(
        stop.any(1), stop.float().argmax(1), torch.full_like(stop[:, 0], new.shape[1], dtype=torch.long)
    )
    ends_with_eos = first < new.shape[1]
    return int((first + ends_with_eos.long()).sum())


class HFGenerator:
    """Batched sampling with transformers' `generate` (a plain loop: the engine adds nothing per token)."""

    def __init__(self, config: GeneratorConfig):
        from guide.models import load_model_and_tokenizer

        self.config = config
        self.name = config.name
        self.num_samples = config.num_samples
        self.tokens = 0
        self.model, self.tokenizer = load_model_and_tokenizer(
            config.model,
            dtype=config.dtype,
            device=default_device(config.device),
            attn_implementation=config.attn_implementation,
            trust_remote_code=config.trust_remote_code,
        )

    @torch.no_grad()
    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]:
        from guide.models import chat_prompt

        cfg, tok = self.config, self.tokenizer
        torch.manual_seed(seed)
        texts = [chat_prompt(tok, p) for p in prompts for _ in range(cfg.num_samples)]
        out: list[str] = []
        for start in range(0, len(texts), cfg.batch_size):
            batch = tok(
                texts[start : start + cfg.batch_size], return_tensors="pt", padding=True, add_special_tokens=False
            )
            batch = batch.to(self.model.device)
            generated = self.model.generate(
                **batch,
                do_sample=cfg.temperature > 0,
                temperature=cfg.temperature if cfg.temperature > 0 else None,
                top_k=cfg.top_k or None,
                top_p=cfg.top_p,
                max_new_tokens=cfg.max_new_tokens,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
            )
            new = generated[:, batch["input_ids"].shape[1] :]
            self.tokens += count_new_tokens(new, tok.pad_token_id, tok.eos_token_id)
            out += tok.batch_decode(new, skip_special_tokens=True)
        n = cfg.num_samples
        return [[r.strip() for r in out[i * n : (i + 1) * n]] for i in range(len(prompts))]


class GuideGenerator:
    """A `guide/` decoder as a generator: the `guide` settings are a guide recipe (`guide.GuideConfig` keys).

    For example weak-to-strong search over a strong model as a teacher:
    `{decoder: cbs, strong_model: ..., tuned: ..., untuned: ..., width: 4, successors: 4, chunk_len: 5}`.
    """

    def __init__(self, config: GeneratorConfig):
        from guide import Guide, GuideConfig

        self.guide = Guide(GuideConfig.from_dict(dict(config.guide), source=f"generator {config.name!r}: guide"))
        self.config = config
        self.name = config.name
        self.num_samples = config.num_samples
        self.tokens = 0

    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]:
        if any(len(p) != 1 for p in prompts):
            raise ValueError(f"generator {self.name!r} (kind guide) takes single-turn prompts (one user message)")
        torch.manual_seed(seed)
        self.guide.engine.sampler.generator.manual_seed(seed)  # the engine's private stream: same seed, same text
        n = self.num_samples
        expanded = [p[0]["content"] for p in prompts for _ in range(n)]
        generations = self.guide.generate(expanded, progress=False)
        self.tokens += sum(sum(g.tokens.values()) for g in generations)  # forward tokens over every model
        texts = [g.text.strip() for g in generations]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


def make_generator(config: GeneratorConfig) -> Generator:
    """The generator a recipe entry describes (loads its model)."""
    return GuideGenerator(config) if config.kind == "guide" else HFGenerator(config)
