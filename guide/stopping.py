"""When a response ends: one `StopReason` per row, decided by one `StopRule`."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from transformers import PreTrainedModel, PreTrainedTokenizerBase


class StopReason(str, Enum):
    """Why a row stopped growing; its value is what outputs record (`Generation.stop`)."""

    EOS = "eos"  # the model's end token: finished
    STOP_STRING = "stop_string"  # a stop string: finished (the text is cut before it)
    MAX_NEW_TOKENS = "max_new_tokens"  # the token limit: cut off
    CONTEXT = "context"  # a model's context was full: cut off
    HALTED = "halted"  # the decoder stopped it (e.g. a WSD draft handed over to the base)

    @property
    def finished(self) -> bool:
        """The model chose to end here (scored with its end token), as opposed to being cut off."""
        return self in (StopReason.EOS, StopReason.STOP_STRING)


@dataclass
class StopRule:
    """When a response ends: an end-of-turn token, a stop string, or the token limit."""

    eos_ids: set[int]
    max_new_tokens: int
    stop_strings: tuple[str, ...] = ()

    @classmethod
    def for_model(
        cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_new_tokens: int, stop=()
    ) -> StopRule:
        """The model family's end tokens: the tokenizer's EOS and every EOS its generation config names."""
        eos = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        config_eos = getattr(model.generation_config, "eos_token_id", None)
        eos |= set(config_eos if isinstance(config_eos, list) else [config_eos] if config_eos is not None else [])
        return cls(eos_ids=eos, max_new_tokens=max_new_tokens, stop_strings=tuple(stop))

    def cut(self, text: str) -> tuple[str, bool]:
        """Text up to the first stop string, and whether one was found."""
        hits = [text.find(s) for s in self.stop_strings if s in text]
        return (text[: min(hits)], True) if hits else (text, False)
