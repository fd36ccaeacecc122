"""Plain batched sampling from one model: the reference every guided decoder is compared with."""

from __future__ import annotations

from collections.abc import Collection

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.models import chat_prompt
from w2s.guide.stopping import StopRule


@torch.no_grad()
def sample(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list,
    *,
    num_samples: int = 1,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    batch_size: int = 64,
    seed: int | None = None,
    progress: bool = False,
    counter: list[int] | None = None,
) -> list[list[str]]:
    """`num_samples` responses per prompt (a string or chat messages, each rendered in the model's chat
    template), as text, with transformers' batched `generate`, ending at any of the model's end tokens (its
    tokenizer's EOS and every one its generation config names: `StopRule.for_model`). `counter[0]` (if given)
    grows by the tokens written, each row up to and including its first end token."""
    eos = sorted(StopRule.for_model(model, tokenizer, max_new_tokens).eos_ids)
    if seed is not None:
        torch.manual_seed(seed)
    texts = [chat_prompt(tokenizer, p) for p in prompts for _ in range(num_samples)]
    out: list[str] = []
    for start in tqdm(range(0, len(texts), batch_size), desc="sampling", disable=not progress):
        batch = tokenizer(
            texts[start : start + batch_size], return_tensors="pt", padding=True, add_special_tokens=False
        )
        batch = batch.to(model.device)
        generated = model.generate(
            **batch,
            do_sample=temperature > 0,
            temperature=temperature if temperature > 0 else None,
            top_k=top_k or None,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=eos or None,
        )
        new = generated[:, batch["input_ids"].shape[1] :]
        if counter is not None:
            counter[0] += count_new_tokens(new, eos)
        out += tokenizer.batch_decode(new, skip_special_tokens=True)
    return [out[i * num_samples : (i + 1) * num_samples] for i in range(len(prompts))]


def count_new_tokens(new: torch.Tensor, eos_token_id: int | Collection[int] | None) -> int:
    """Tokens a batch of continuations holds, each row up to and including its first end token (`eos_token_id`:
    one id or several; after it, `generate` pads; a pad token sampled before it is a token written, and counts)."""
    ids = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
    if not ids:
        return new.numel()
    eos = torch.isin(new, torch.tensor(ids, device=new.device))
    ends = torch.where(
        eos.any(1), eos.float().argmax(1) + 1, torch.full_like(eos[:, 0], new.shape[1], dtype=torch.long)
    )
    return int(ends.sum())
