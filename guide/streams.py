"""Sampling and random streams: every draw of w2s is a pure function of the seed and the item it is for.

`SamplingParams` holds every knob of next-token sampling; `Sampler` draws by the Gumbel-max trick with
noise keyed by (seed, item, slot, position); `item_keys` gives each prompt the identity of its stream.
So an item's output does not depend on the batch it was decoded in, the batch size, the other items,
the point a killed run resumed from, or the number of processes. `STREAMS` names this scheme: a
resumed run refuses outputs drawn another way.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch

from w2s.guide.commands import GuideError


@dataclass
class SamplingParams:
    """Every knob of next-token sampling (temperature 0 is greedy)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0:
            raise GuideError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise GuideError(f"top_p must be in (0, 1], got {self.top_p}")


MASK64 = (1 << 64) - 1
# what an item's samples are a function of; a resumed run refuses outputs drawn another way
STREAMS = "gumbel-max keyed by seed, item, slot, position (1)"


def _mix(x: int) -> int:
    """splitmix64's finaliser: a 64-bit integer to a well-mixed one."""
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


Prompt = str | list[dict]  # a prompt's text (one user message), or chat messages


def prompt_identity(prompt: Prompt) -> str:
    """What a prompt's random stream is keyed by: its text; chat messages by their JSON, except one user
    message, which is the same prompt as its text (both render alike, `chat_prompt`)."""
    if isinstance(prompt, str):
        return prompt
    if len(prompt) == 1 and prompt[0].get("role") == "user":
        return prompt[0]["content"]
    return "messages:" + json.dumps(prompt, ensure_ascii=False, sort_keys=True)


def item_keys(prompts: list[Prompt]) -> list[int]:
    """Each item's identity for its random stream: a 64-bit hash of its prompt's content (`prompt_identity`)
    and of how many times the same content came before it in `prompts` (so that repeated prompts draw
    different samples)."""
    seen: dict[str, int] = {}
    out = []
    for text in map(prompt_identity, prompts):
        seen[text] = seen.get(text, -1) + 1
        digest = hashlib.blake2b(f"{seen[text]}:{text}".encode(), digest_size=8).digest()
        out.append(int.from_bytes(digest, "little"))
    return out


def stream_key(seed: int, item: int, slot: int, position: int) -> int:
    """The 64-bit key of the draw that row `slot` of `item` makes at `position`."""
    x = _mix(seed & MASK64)
    for part in (item, slot, position):
        x = _mix(x ^ (part & MASK64))
    return x


def _signed(x: int) -> int:
    return x - (1 << 64) if x >= 1 << 63 else x


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding 64-bit patterns."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def gumbel_noise(keys: torch.Tensor, vocab: int) -> torch.Tensor:
    """(rows, vocab) standard Gumbel noise, entry (i, v) a pure function of `keys[i]` and v: splitmix64 of
    the pair in int64 arithmetic (wrapping), its top 53 bits a uniform number u in (0, 1), -log(-log u)."""
    ids = torch.arange(vocab, dtype=torch.int64, device=keys.device)
    x = keys[:, None] ^ (ids[None, :] * _signed(0x9E3779B97F4A7C15))
    x = x + _signed(0x9E3779B97F4A7C15)
    x = (x ^ _shift(x, 30)) * _signed(0xBF58476D1CE4E5B9)
    x = (x ^ _shift(x, 27)) * _signed(0x94D049BB133111EB)
    x = x ^ _shift(x, 31)
    u = (_shift(x, 11).double() + 0.5) * 2.0**-53
    return -torch.log(-torch.log(u))


class Sampler:
    """Draws next tokens by the Gumbel-max trick with noise keyed per row.

    A row's noise is a pure function of the seed, its item (a hash of its prompt), its slot among its item's
    rows and its position (`stream_key`): an item's output does not depend on the batch it was decoded in,
    the batch size, the other items, or the point a killed run resumed from. Gumbel-max (the argmax of
    log-probability + noise) draws exactly from the warped distribution, and float noise of a batch's
    numerics moves a draw only when the two best entries are within it (inverse-CDF sampling would move
    it whenever the uniform number fell near a boundary between two of the thousands of unlikely tokens).
    """

    def __init__(self, params: SamplingParams):
        self.params = params

    def warp(self, logits: torch.Tensor) -> torch.Tensor:
        """Temperature, top-k and top-p applied to (rows, vocab) logits, as log-probabilities."""
        p = self.params
        logits = logits.float() / max(p.temperature, 1e-6)
        if p.top_k > 0 and p.top_k < logits.shape[-1]:
            kth = logits.topk(p.top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = logits.sort(dim=-1, descending=True)
            cumulative = sorted_logits.softmax(-1).cumsum(-1)
            drop = cumulative - sorted_logits.softmax(-1) >= p.top_p  # keep the smallest set reaching top_p
            logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
        return torch.log_softmax(logits, dim=-1)

    def __call__(self, logits: torch.Tensor, keys: list[tuple[int, int, int]]) -> torch.Tensor:
        """One token id per row; `keys[i]` is row i's (item, slot, position)."""
        if self.params.temperature == 0:
            return logits.argmax(-1)
        logp = self.warp(logits)
        rows = [_signed(stream_key(self.params.seed, *k)) for k in keys]
        noise = gumbel_noise(torch.tensor(rows, dtype=torch.int64, device=logp.device), logp.shape[-1])
        return (logp.double() + noise).argmax(-1)
