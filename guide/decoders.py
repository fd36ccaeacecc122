"""The decoder contract: a decoder is one small dataclass, registered by name, found by entry point.

A decoder's dataclass fields are its hyper-parameters and its recipe keys, nowhere else (the recipe stays
flat). It declares the models it needs beyond the strong one by role (`needs`, from guide/roles.py), and
whether it needs one vocabulary with the strong model (`shared_vocabulary`: logit arithmetic). Loading
and the checks before any work derive from those declarations. `run` decodes one batch through the
decode context (guide/context.py) and returns what only the decoder knows, an `Output` per prompt; the
context times the batch, fills each item's tokens per model and builds the `Generation`s:

    @register_decoder("shortest")
    @dataclass
    class Shortest(Decoder):
        num_draws: int = field(default=4, metadata=at_least(1))  # a recipe key and its range (guide/ranges.py)
        needs = ("pairs",)  # roles: pairs, pilot, scorer (the reward model if the recipe names one, else pairs)

        def check(self):  # what the fields' ranges cannot say: raise ValueError naming the key
            ...

        def draws(self):  # strong samples competing per prompt: temperature 0 is refused when more than one
            return self.num_draws

        def run(self, ctx):  # ctx.start(...), ctx.scorer(...), ctx.lockstep(), ctx.prompts (guide/context.py)
            ...

A package adds decoders without editing w2s through the entry-point group `w2s.decoders`: each entry
point names a module that registers its decoders when imported, or a `Decoder` class (registered under
the entry point's name). The built-in decoders live in guide/search.py, guide/draft.py and guide/fusion.py.
A field named like a key every decoder shares (`GuideConfig`'s, guide/config.py) is an error at
registration, and so is a key two decoders declare with different types.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import typing
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar

from w2s.guide.commands import GuideError
from w2s.guide.ranges import check_ranges

if TYPE_CHECKING:
    from w2s.guide.context import DecodeContext
    from w2s.guide.types import Output

logger = logging.getLogger(__name__)

BUILTIN_MODULES = ("w2s.guide.search", "w2s.guide.draft", "w2s.guide.fusion")
GROUP = "w2s.decoders"

DECODERS: dict[str, type[Decoder]] = {}  # decoder name -> class, in registration order
SHARED_KEYS: set[str] = set()  # the keys every decoder shares (`GuideConfig`'s fields: `reserve_keys`)
_loaded = False


@dataclasses.dataclass
class Decoder:
    """Base of every decoder: subclasses are dataclasses of hyper-parameters with `check` and `run`."""

    name: ClassVar[str] = ""  # set by `register_decoder`
    needs: ClassVar[tuple[str, ...]] = ()  # models beyond the strong one, by role (guide/roles.py)
    shared_vocabulary: ClassVar[bool] = False  # needs one vocabulary with the strong model (logit arithmetic)

    def __post_init__(self):
        check_ranges(self)  # each field's declared range (guide/ranges.py), then what only the decoder knows
        self.check()

    @classmethod
    def recipe_keys(cls) -> dict[str, Any]:
        """The recipe keys this decoder reads, with their types (resolved, whether or not its module postpones
        annotations)."""
        hints = typing.get_type_hints(cls)
        return {f.name: hints[f.name] for f in dataclasses.fields(cls)}

    @classmethod
    def from_options(cls, options: dict) -> Decoder:
        """The decoder with its hyper-parameters from a recipe's decoder keys (defaults where it is silent)."""
        return cls(**{key: options[key] for key in cls.recipe_keys() if key in options})

    def check(self) -> None:
        """Raises ValueError naming the key of any bad setting its fields' ranges do not already refuse."""

    def draws(self) -> int:
        """The strong model's samples that compete for one prompt (CBS: width x successors; best-of-N: N): with
        more than one, temperature 0 is refused (guide/config.py), as every sample would be the greedy one."""
        return 1

    def run(self, ctx: DecodeContext) -> list[Output]:
        """One `Output` per prompt of `ctx.prompts`, decoded together."""
        raise NotImplementedError


def _check_keys(name: str, cls: type[Decoder]) -> None:
    shadowed = sorted(set(cls.recipe_keys()) & SHARED_KEYS)
    if shadowed:
        raise GuideError(
            f"decoder {name!r}: field(s) {', '.join(shadowed)} shadow recipe keys every decoder shares "
            "(guide/config.py GuideConfig): rename them"
        )
    for other in DECODERS.values():
        if other is cls:
            continue
        theirs = other.recipe_keys()
        for key, annotation in cls.recipe_keys().items():
            if key in theirs and theirs[key] != annotation:
                raise GuideError(
                    f"decoder {name!r}: key {key!r} is {_name(annotation)} here but {_name(theirs[key])} in decoder "
                    f"{other.name!r}: a recipe key has one type"
                )


def _name(annotation) -> str:
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def register_decoder(name: str) -> Callable[[type[Decoder]], type[Decoder]]:
    """Class decorator: `decoder: <name>` in a recipe now builds this class."""

    def register(cls: type[Decoder]) -> type[Decoder]:
        if not (isinstance(cls, type) and issubclass(cls, Decoder) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"decoder {name!r}: {cls!r} must be a dataclass subclass of guide.decoders.Decoder")
        if DECODERS.get(name, cls) is not cls:
            raise GuideError(f"decoder {name!r} is already registered (by {DECODERS[name].__qualname__})")
        _check_keys(name, cls)
        cls.name = name
        DECODERS[name] = cls
        return cls

    return register


def reserve_keys(keys: set[str]) -> None:
    """Declares keys every decoder shares (guide/config.py): no decoder field may take one of their names."""
    SHARED_KEYS.update(keys)
    for name, cls in DECODERS.items():
        _check_keys(name, cls)


def registered() -> dict[str, type[Decoder]]:
    """Every registered decoder: the built-in ones, then those of the `w2s.decoders` entry points."""
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
        for point in entry_points(group=GROUP):
            try:
                target = point.load()
            except Exception as e:  # a user's package: say which entry point failed, whatever it raised
                raise GuideError(f"entry point {point.name} = {point.value} ({GROUP}) failed to load: {e}") from e
            if isinstance(target, type) and point.name not in DECODERS:
                register_decoder(point.name)(target)
        # one order whatever module a process imported first: the built-ins module by module, then the others
        rank = {module: i for i, module in enumerate(BUILTIN_MODULES)}
        ordered = sorted(DECODERS.items(), key=lambda item: rank.get(item[1].__module__, len(rank)))
        DECODERS.clear()
        DECODERS.update(ordered)
    return DECODERS


def decoder_class(name: str) -> type[Decoder]:
    """The class registered as `name`; the error lists every registered name."""
    decoders = registered()
    if name not in decoders:
        raise GuideError(
            f"decoder {name!r}: choose one of {', '.join(decoders)} (or register one: guide/decoders.py, "
            f"or an entry point of the group {GROUP})"
        )
    return decoders[name]


def option_keys() -> dict[str, Any]:
    """The keys registered decoders read, with their types."""
    out: dict[str, Any] = {}
    for cls in registered().values():
        for key, annotation in cls.recipe_keys().items():
            out.setdefault(key, annotation)
    return out
