"""Names that a higher layer resolves: `tiny:<name>` models and `tiny:<split>` prompts.

The guide layer knows nothing of the tiny world (data/ and train/ build it, above this layer). A layer
that owns a kind of name registers a resolver for its prefix: in Python with `register_models(prefix, fn)`
/ `register_prompts(prefix, fn)`, or through an entry point of the groups `w2s.models` / `w2s.prompts`
(see pyproject.toml), loaded the first time an unregistered prefix is asked for, the way pytest finds
its plugins. w2s registers `tiny` in both groups.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path

ModelResolver = Callable[[str], str | Path]  # name after the prefix -> model folder
PromptResolver = Callable[[str, int | None], list[str]]  # (name after the prefix, limit) -> prompts

MODELS: dict[str, ModelResolver] = {}
PROMPTS: dict[str, PromptResolver] = {}
GROUPS = {"w2s.models": MODELS, "w2s.prompts": PROMPTS}


def register_models(prefix: str, resolver: ModelResolver) -> None:
    """`<prefix>:<name>` model names now resolve to `resolver(name)`, a model folder."""
    MODELS[prefix] = resolver


def register_prompts(prefix: str, resolver: PromptResolver) -> None:
    """`<prefix>:<name>` prompt sources now resolve to `resolver(name, limit)`, a list of prompts."""
    PROMPTS[prefix] = resolver


def _resolver(group: str, spec: str):
    registry = GROUPS[group]
    prefix = spec.split(":", 1)[0]
    if prefix not in registry:
        for point in entry_points(group=group, name=prefix):
            registry[prefix] = point.load()
    return registry.get(prefix)


def has_prefix(spec: str) -> bool:
    """Whether `spec` looks like `<prefix>:<name>` (not a path, not a hub id, not a URL)."""
    prefix, sep, _ = spec.partition(":")
    return bool(sep) and prefix.isidentifier() and "/" not in prefix


def resolve_model(spec: str) -> str:
    """A model folder or hub id; `<prefix>:<name>` through the resolver registered for the prefix."""
    if not has_prefix(spec):
        return spec
    resolver = _resolver("w2s.models", spec)
    if resolver is None:
        return spec  # not a registered prefix: a hub id or a path with a colon, as the caller wrote it
    return str(resolver(spec.split(":", 1)[1]))


def resolve_prompts(spec: str, limit: int | None) -> list[str] | None:
    """Prompts of a registered `<prefix>:<name>` source, or None when `spec` names none."""
    if not has_prefix(spec):
        return None
    resolver = _resolver("w2s.prompts", spec)
    return None if resolver is None else resolver(spec.split(":", 1)[1], limit)
