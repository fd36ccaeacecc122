"""Decoders by name: a recipe's `decoder` is looked up here, and a new decoder registers itself.

A decoder is a small dataclass whose fields are its hyper-parameters, each read from the recipe key
of the same name (the recipe stays flat). It checks its own settings, says which models beyond the
strong one it needs, and decodes a batch of prompts on a loaded `guide.run.Guide`:

    @register_decoder("shortest")
    @dataclass
    class Shortest(Decoder):
        num_samples: int = 4  # a recipe key
        needs = ("pairs",)  # of "pairs", "pilot", "scorer" (the reward model if the recipe names one, else pairs)

        def check(self):
            if self.num_samples < 1:
                raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")

        def run(self, guide, prompts):  # guide.engine, .pairs, .pilot, .reward_model, .scorer(...)
            ...

A field that is not a `GuideConfig` key (a new decoder's own knob) is accepted in recipes and flags
once the decoder is registered. The built-in decoders live in `guide/search.py`, `guide/draft.py` and
`guide/fusion.py`, imported on the first look-up.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from w2s.guide.commands import GuideError

if TYPE_CHECKING:
    from w2s.guide.config import GuideConfig
    from w2s.guide.engine import Generation
    from w2s.guide.run import Guide

BUILTIN_MODULES = ("w2s.guide.search", "w2s.guide.draft", "w2s.guide.fusion")
NEEDS = ("pairs", "pilot", "scorer")

DECODERS: dict[str, type[Decoder]] = {}  # decoder name -> class, in registration order
_builtins_loaded = False


@dataclasses.dataclass
class Decoder:
    """Base of every decoder: subclasses are dataclasses of hyper-parameters with `check` and `run`."""

    name: ClassVar[str] = ""  # set by `register_decoder`
    needs: ClassVar[tuple[str, ...]] = ()  # models beyond the strong one, from NEEDS

    def __post_init__(self):
        self.check()

    @classmethod
    def recipe_keys(cls) -> dict[str, Any]:
        """The recipe keys this decoder reads, with their types."""
        return {f.name: f.type for f in dataclasses.fields(cls)}

    @classmethod
    def from_config(cls, config: GuideConfig) -> Decoder:
        """The decoder with its hyper-parameters from the recipe (defaults where the recipe is silent)."""
        known = {f.name for f in dataclasses.fields(config)}
        values = {}
        for key in cls.recipe_keys():
            if key in known:
                values[key] = getattr(config, key)
            elif key in config.options:
                values[key] = config.options[key]
        return cls(**values)

    def check(self) -> None:
        """Raises ValueError naming the key of any bad setting."""

    def run(self, guide: Guide, prompts: list[str]) -> list[Generation]:
        """One `Generation` per prompt, decoded together; its `tokens` are the prompt's own, per model (each
        `LMState.item_tokens[p]`), and its wall time the batch's (`batch_seconds`) and its share (`seconds`)."""
        raise NotImplementedError


def register_decoder(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: `decoder: <name>` in a recipe now builds this class."""

    def register(cls: type[Decoder]) -> type[Decoder]:
        if not (isinstance(cls, type) and issubclass(cls, Decoder) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"decoder {name!r}: {cls!r} must be a dataclass subclass of guide.decoders.Decoder")
        unknown = set(cls.needs) - set(NEEDS)
        if unknown:
            raise GuideError(f"decoder {name!r}: unknown needs {sorted(unknown)}; choose from {', '.join(NEEDS)}")
        if DECODERS.get(name, cls) is not cls:
            raise GuideError(f"decoder {name!r} is already registered (by {DECODERS[name].__qualname__})")
        cls.name = name
        DECODERS[name] = cls
        return cls

    return register


def registered() -> dict[str, type[Decoder]]:
    """Every registered decoder, the built-in ones included."""
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    return DECODERS


def decoder_class(name: str) -> type[Decoder]:
    """The class registered as `name`; the error lists every registered name."""
    decoders = registered()
    if name not in decoders:
        raise GuideError(f"decoder {name!r}: choose one of {', '.join(decoders)} (or register one: guide/decoders.py)")
    return decoders[name]


def option_keys(config_keys: set[str]) -> dict[str, Any]:
    """Keys registered decoders read that are not among `config_keys`, with their types."""
    out: dict[str, Any] = {}
    for cls in registered().values():
        for key, annotation in cls.recipe_keys().items():
            if key not in config_keys:
                out.setdefault(key, annotation)
    return out
