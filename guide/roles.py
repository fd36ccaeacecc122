"""Model roles: the models a decoder may need beyond the strong one, each with its recipe keys, its checks
before any work and its loading, in one place.

A decoder declares its roles (`Decoder.needs`); `Guide` loads them (`load`) and the preflight checks them
(`specs`) from that declaration alone. Built in: `pairs` (the guide pairs: `tuned` + `untuned` or
`adapter`, and `extra_guides`), `pilot` (WSD's small drafter) and `reward_model`; `scorer` stands for the
reward model when the recipe names one, else the pairs. A package adds a role with `register_role`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.models import load_model, load_tokenizer
from w2s.guide.pair import GuidePair
from w2s.guide.reward import RewardModel


@dataclass
class ModelSpec:
    """A model a recipe names, as the preflight checks it."""

    name: str  # as the recipe gives it
    role: str  # e.g. "strong_model", "tuned"
    prompt_format: str = "chat"
    format_key: str = "prompt_format"


@dataclass(frozen=True)
class Role:
    """What a role's models are: `specs` (for the preflight) and `load` (with `Guide.load`'s keyword arguments)
    from a recipe; `stands_for` picks another role by the recipe instead (`scorer`)."""

    name: str
    specs: Callable[[GuideConfig], list[ModelSpec]] = lambda config: []
    load: Callable[[GuideConfig, dict], object] | None = None
    stands_for: Callable[[GuideConfig], str] | None = None


ROLES: dict[str, Role] = {}


def register_role(role: Role) -> Role:
    """`needs = ("<name>",)` on a decoder now loads and checks the models of `role`."""
    if role.name in ROLES and ROLES[role.name] != role:
        raise GuideError(f"model role {role.name!r} is already registered")
    ROLES[role.name] = role
    return role


def resolve(needs, config: GuideConfig, decoder: str) -> list[str]:
    """The roles `needs` name for this recipe (`scorer` resolved); an unknown role is an error naming it."""
    out = []
    for need in needs:
        if need not in ROLES:
            raise GuideError(f"decoder {decoder!r} needs model role {need!r}; registered roles: {', '.join(ROLES)}")
        role = ROLES[need]
        out.append(role.stands_for(config) if role.stands_for else need)
    return out


# -- guide pairs
PAIR_KEYS = {"tuned", "untuned", "adapter", "weight", "adapter_base", "prompt_format"}


def pair_specs_of(config: GuideConfig) -> list[dict]:
    """Each guide pair a recipe names: the main one (`tuned` + `untuned` or `adapter`), then `extra_guides`."""
    c = config
    specs = []
    if c.adapter or c.tuned:
        specs.append(
            {"tuned": c.tuned, "untuned": c.untuned, "adapter": c.adapter, "weight": c.guide_weight}
            | {"prompt_format": c.guide_prompt_format}
        )
    for spec in c.extra_guides:
        unknown = set(spec) - PAIR_KEYS
        if unknown:
            raise GuideError(
                f"extra_guides: unknown key(s) {sorted(unknown)}; use tuned, untuned, adapter, weight, prompt_format"
            )
        specs.append(spec)
    return specs


def _pair_model_specs(config: GuideConfig) -> list[ModelSpec]:
    c, out = config, []
    for role in ("tuned", "untuned", "adapter"):
        if getattr(c, role):
            out.append(ModelSpec(getattr(c, role), role, c.guide_prompt_format, "guide_prompt_format"))
    for i, extra in enumerate(c.extra_guides):
        for role in ("tuned", "untuned", "adapter"):
            if extra.get(role):
                fmt = extra.get("prompt_format", c.guide_prompt_format)
                out.append(ModelSpec(extra[role], f"extra_guides[{i}].{role}", fmt, f"extra_guides[{i}].prompt_format"))
    return out


def _load_pairs(config: GuideConfig, load: dict) -> list[GuidePair]:
    pairs = []
    for spec in pair_specs_of(config):
        weight = float(spec.get("weight", 1.0))
        fmt = {"prompt_format": spec.get("prompt_format", config.guide_prompt_format)}
        if spec.get("adapter"):
            pairs.append(GuidePair.from_adapter(spec["adapter"], spec.get("adapter_base"), weight, **fmt, **load))
        elif spec.get("tuned") and spec.get("untuned"):
            pairs.append(GuidePair.from_folders(spec["tuned"], spec["untuned"], weight, **fmt, **load))
        else:
            raise GuideError("a guide pair needs both `tuned` and `untuned`, or an `adapter`")
    if not pairs:
        raise GuideError(f"decoder {config.decoder} needs a guide pair: set tuned and untuned (or adapter)")
    return pairs


# -- the pilot
def _pilot_specs(config: GuideConfig) -> list[ModelSpec]:
    return [ModelSpec(config.pilot, "pilot", config.pilot_prompt_format, "pilot_prompt_format")] if config.pilot else []


def _load_pilot(config: GuideConfig, load: dict):
    if not config.pilot:
        raise GuideError(f"decoder {config.decoder} needs a `pilot` model (the small aligned drafter)")
    tokenizer = load_tokenizer(
        config.pilot,
        trust_remote_code=config.trust_remote_code,
        prompt_format=config.pilot_prompt_format,
        format_key="pilot_prompt_format",
    )
    return load_model(config.pilot, **load), tokenizer


# -- the reward model
def _load_reward_model(config: GuideConfig, load: dict) -> RewardModel:
    try:
        return RewardModel.load(
            config.reward_model,
            dtype=config.dtype,
            device=load["device"],
            trust_remote_code=config.trust_remote_code,
            prompt_format=config.reward_model_prompt_format,
            format_key="reward_model_prompt_format",
        )
    except OSError as e:
        raise GuideError(f"reward_model {config.reward_model!r}: cannot load it ({e})") from e


register_role(Role("pairs", _pair_model_specs, _load_pairs))
register_role(Role("pilot", _pilot_specs, _load_pilot))
register_role(Role("reward_model", load=_load_reward_model))  # the preflight leaves sequence classifiers to loading
register_role(Role("scorer", stands_for=lambda c: "reward_model" if c.reward_model else "pairs"))
