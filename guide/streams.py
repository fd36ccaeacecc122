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


def gumbel_noise(keys: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel noise at token `ids` ((vocab,) for every row, or (rows, k) per row), entry (i, v) a pure
    function of `keys[i]` and v: splitmix64 of the pair in int64 arithmetic (wrapping), its top 53 bits a
    uniform number u in (0, 1), -log(-log u). Computed in place: five int64 passes and two float64 logs."""
    x = ids * _signed(0x9E3779B97F4A7C15)
    x = x.bitwise_xor(keys[:, None]) if x.dim() == 2 else x[None, :].bitwise_xor(keys[:, None])
    x.add_(_signed(0x9E3779B97F4A7C15))
    x.bitwise_xor_(_shift(x, 30)).mul_(_signed(0xBF58476D1CE4E5B9))
    x.bitwise_xor_(_shift(x, 27)).mul_(_signed(0x94D049BB133111EB))
    x.bitwise_xor_(_shift(x, 31))
    u = _shift(x, 11).double().add_(0.5).mul_(2.0**-53)
    return u.log_().neg_().log_().neg_()


# vocabulary slice the noise is drawn over at a time, per torch thread: its int64 and float64 passes stay in
# the CPU's cache (on one thread 2.8x faster than one pass over 16 rows x 151,936 tokens; the same numbers)
NOISE_CHUNK = 16384


def gumbel_argmax(logp: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """argmax over the vocabulary of `logp` (rows, vocab) + keyed Gumbel noise, in float64, a vocabulary slice
    at a time (the first index wins a tie, as one argmax over the whole row would)."""
    rows, vocab = logp.shape
    best = torch.full((rows,), float("-inf"), dtype=torch.float64, device=logp.device)
    token = torch.zeros(rows, dtype=torch.int64, device=logp.device)
    chunk = NOISE_CHUNK * torch.get_num_threads()
    for start in range(0, vocab, chunk):
        ids = torch.arange(start, min(vocab, start + chunk), dtype=torch.int64, device=logp.device)
        value, index = (gumbel_noise(keys, ids).add_(logp[:, start : start + len(ids)])).max(-1)
        better = value > best  # strictly: an earlier slice keeps a tie
        best = torch.where(better, value, best)
        token = torch.where(better, index + start, token)
    return token


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
        rows = torch.tensor([_signed(stream_key(self.params.seed, *k)) for k in keys], device=logp.device)
        top_k = self.params.top_k
        if 0 < top_k < logp.shape[-1] and bool((torch.isfinite(logp).sum(-1) <= top_k).all()):
            # only the top-k candidates can be drawn: noise at those ids alone (the same numbers as over the
            # whole row, so the same draws); in index order, so that a tie goes to the first index as before
            ids = logp.topk(top_k, dim=-1).indices.sort(dim=-1).values
            scores = gumbel_noise(rows, ids).add_(logp.gather(-1, ids))
            return ids.gather(-1, scores.argmax(-1, keepdim=True)).squeeze(-1)
        return gumbel_argmax(logp, rows)
