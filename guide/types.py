"""The public types of decoding: a `Row` being written, what a decoder decides (`Output`), and what the
caller gets (`Generation`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from w2s.guide.stopping import StopReason


@dataclass
class Row:
    """One candidate response being written: its prompt, its response tokens (in the writing model's
    vocabulary) and, once it stopped growing, why. `id` is stable for the row's life (a copy gets its own)."""

    prompt: int  # index of its prompt in the batch
    ids: list[int] = field(default_factory=list)
    stop: StopReason | None = None  # None while it may still grow
    score: float = 0.0  # what a search ranked it by
    text: str = ""  # its text where a stop string cut it (else decoded from `ids`)
    id: int = 0
    cut: str = ""  # prompt characters its first token carries (a hand-over re-tokenised them), cut from its text

    @property
    def done(self) -> bool:
        """It will not grow any more."""
        return self.stop is not None

    @property
    def finished(self) -> bool:
        """It ended by the model's choice (an end token or a stop string), not by a limit."""
        return self.stop is not None and self.stop.finished

    def copy(self, id: int) -> Row:
        return Row(self.prompt, list(self.ids), self.stop, self.score, self.text, id, self.cut)


@dataclass
class Output:
    """What only a decoder knows of one item: its response, why it ended, its score, its switch point."""

    text: str
    stop: StopReason | str | None = None
    score: float | None = None
    switch_at: int | None = None


@dataclass
class Generation:
    """One response and what it cost, assembled by the decode context (guide/context.py) from a decoder's
    `Output`.

    `tokens` is exact and the item's own: per model, the real tokens fed for this item's rows (its prompt's
    prefill once, every row it searched over including those dropped, tokens re-fed after rollbacks; never
    padding), so it does not depend on the batch; over a batch they sum to the models' totals. Wall time
    cannot be split so: `seconds` is the batch's time over its items, `batch_seconds` the whole batch's.
    """

    text: str
    score: float | None = None  # the guide's (or reward model's) score of the chosen response
    switch_at: int | None = None  # draft-switch decoding: the base's tokens of the draft that were kept
    tokens: dict[str, int] = field(default_factory=dict)  # tokens run through each model for this item
    seconds: float = 0.0  # this item's share of the batch's wall time
    stop: str = ""  # why the response ended: eos, stop_string, max_new_tokens, or context (cut: a context was full)
    batch_seconds: float = 0.0  # wall time of the whole batch this item was decoded in
