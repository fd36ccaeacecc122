"""The data-set recipe: what `w2s data build` reads from `recipes/<family>/data.yaml`.

A recipe is flat YAML (grouped by comments) whose keys are the fields of
:class:`DataRecipe`; `generators` and `judges` are lists of small mappings
(:class:`GeneratorConfig`, :class:`JudgeConfig`). Unknown keys are an error
that names the file and the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from w2s.guide.files import RecipeError, did_you_mean, read_recipe
from w2s.guide.formats import check_prompt_format
from w2s.guide.ranges import above, any_number, at_least, between, check_ranges


@dataclass
class GeneratorConfig:
    """One model that writes responses (its own chat template and sampling settings)."""

    name: str
    model: str = ""  # folder, hub id or tiny:<name>; unused by kind guide
    # hf: sampling through the engine (guide/engine.py); guide: a guide/ decoder (settings in `guide`);
    # openai: a served model (`model` is its served name) sampled over /v1/completions (guide/served.py)
    kind: str = "hf"
    num_samples: int = field(default=4, metadata=at_least(1))  # responses per prompt
    temperature: float = field(default=1.0, metadata=at_least(0))  # 0: greedy
    top_k: int = field(default=0, metadata=at_least(0))  # 0: the whole vocabulary
    top_p: float = field(default=1.0, metadata=between(0, 1, low_open=True))
    max_new_tokens: int = field(default=64, metadata=at_least(1))
    batch_size: int = field(
        default=64, metadata=at_least(1)
    )  # kind hf: rows decoded together (whole prompts: all num_samples of each)
    dtype: str = "auto"
    device: str | None = None
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    prompt_format: str = "chat"  # chat (its template), raw (the text as it is) or a template with {prompt}
    guide: dict = field(default_factory=dict)  # kind guide: the guide recipe passed to guide.generate
    tokenizer: str | None = None  # kind openai: renders prompts here (a folder or hub id; default `model`)
    base_url_env: str = "W2S_STRONG_BASE_URL"  # kind openai: the environment variable holding the server's base URL
    api_key_env: str = "W2S_STRONG_API_KEY"  # kind openai: ... and its key (never logged or written)


@dataclass
class JudgeConfig:
    """One judge; several judges form an ensemble of normalised scores (weighted by `weight`)."""

    name: str
    kind: str  # rule | reward_model | pairwise | implicit
    weight: float = field(default=1.0, metadata=any_number())
    rule: str = "tiny_gold"  # kind rule: a name in data.judges.RULES
    model: str = ""  # reward_model / pairwise: the judging model
    tuned: str = ""  # implicit: log pi_tuned(y|x) - log pi_untuned(y|x)
    untuned: str = ""
    labels: list[str] = field(default_factory=lambda: ["A", "B"])  # pairwise: answer tokens for first/second
    template: str = ""  # pairwise: judge prompt with {prompt}, {first}, {second}; empty: the default
    batch_size: int = field(default=32, metadata=at_least(1))
    max_length: int = field(
        default=1024, metadata=at_least(1)
    )  # tokens fed to a judging model (longer inputs are cut on the left)
    dtype: str = "auto"
    device: str | None = None
    device_map: str | dict | None = None  # e.g. auto: a judging model too big for one device spans them all
    trust_remote_code: bool = False
    prompt_format: str = "chat"  # chat (its template), raw (the text as it is) or a template with {prompt}


@dataclass
class MatchConfig:
    """A control judge: pairs form only among responses it scores alike (equal, or within `tolerance`), so
    chosen and rejected differ in what the other judges score, not in this (length, format, quality)."""

    judge: str  # a judge's name in `judges`; a control does not enter the score pairs are made on
    tolerance: float = field(default=0.0, metadata=at_least(0))  # the largest difference allowed (0: equal)
    relative: bool = False  # tolerance as a fraction of the larger of the two scores' magnitudes


@dataclass
class DataRecipe:
    """Everything `w2s data build` needs: prompts, generators, judges, pairing, filters, outputs."""

    output_dir: str = ""
    work_dir: str = ""  # generation and judge shards (default <output_dir>/work): builds sharing it reuse them
    seed: int = field(default=0, metadata=any_number())
    shard_size: int = field(
        default=64, metadata=at_least(1)
    )  # prompts per shard: the unit that generation and judging commit atomically
    num_threads: int | None = field(
        default=None, metadata=at_least(1)
    )  # torch CPU threads while building (None: torch's default); tiny models: 1
    # prompts
    prompt_source: str = "tiny:train"  # hub id, save_to_disk folder, .json/.jsonl file, or tiny:<split>
    prompt_field: str = "prompt"  # field with a string or a list of chat messages
    prompt_split: str = "train"  # split of a hub/disk DatasetDict
    prompt_subset: str | None = None  # hub config name
    num_prompts: int | None = field(default=None, metadata=at_least(1))  # first N prompts (None: all)
    # generators and judges
    generators: list[GeneratorConfig] = field(default_factory=list)
    judges: list[JudgeConfig] = field(default_factory=list)
    # pairing: best_worst | best_random | all_pairs
    pairing: str = "best_worst"
    # matched pairing: control judges chosen and rejected must score alike, e.g. [{judge: malformed}] or
    # [{judge: length, tolerance: 0.1, relative: true}]
    match: list[MatchConfig] = field(default_factory=list)
    # filters
    min_margin: float = field(
        default=0.0, metadata=at_least(0)
    )  # keep pairs whose score gap exceeds this (ties are always dropped)
    min_length_ratio: float = field(default=0.0, metadata=at_least(0))  # bounds on words(chosen) / words(rejected):
    max_length_ratio: float = field(default=float("inf"), metadata=above(0))  # against length bias
    dedup_prompts: str = "near"  # none | exact | near
    near_dup_threshold: float = field(
        default=0.9, metadata=between(0, 1)
    )  # Jaccard similarity of word 3-gram sets for near duplicates
    # evaluation prompt sources: a source string, or {source, field, split, subset}
    decontaminate: list[str | dict] = field(default_factory=list)
    decontam_ngram: int = field(
        default=8, metadata=at_least(1)
    )  # a prompt sharing a word n-gram with an evaluation prompt is dropped
    max_repeat_fraction: float = field(
        default=0.5, metadata=between(0, 1)
    )  # a response whose repeated 3-grams exceed this share is degenerate
    # outputs
    test_fraction: float = field(default=0.1, metadata=between(0, 1, high_open=True))
    jsonl: bool = True  # also write every split as JSONL


_CLASSES = {"generators": GeneratorConfig, "judges": JudgeConfig, "match": MatchConfig}


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Checks one YAML value against its field's type (ints are accepted where floats are)."""
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    hints = typing.get_args(annotation) if union else (annotation,)
    if value is None and type(None) in hints:
        return None
    for hint in hints:
        origin = typing.get_origin(hint) or hint
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if origin is float and isinstance(value, str) and value.lower() in ("inf", ".inf", "infinity"):
            return float("inf")
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, dict, list) and isinstance(value, origin):
            return value
    raise RecipeError(f"{where}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


def _build(cls: type, values: dict, where: str) -> Any:
    if not isinstance(values, dict):
        raise RecipeError(f"{where}: expected a mapping of keys to values, got {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            hint = did_you_mean(key, fields) or f"; known keys: {', '.join(fields)}"
            raise RecipeError(f"{where}: unknown key {key!r}{hint}")
        if key in _CLASSES and cls is DataRecipe:
            if not isinstance(value, list):
                raise RecipeError(f"{where}: {key!r} must be a list of mappings")
            kwargs[key] = [_build(_CLASSES[key], v, f"{where}: {key}[{i}]") for i, v in enumerate(value)]
        else:
            kwargs[key] = _coerce(value, hints[key], f"{where}: key {key!r}")
    missing = [
        f.name
        for f in fields.values()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in kwargs
    ]
    if missing:
        raise RecipeError(f"{where}: missing required key(s) {', '.join(map(repr, missing))}")
    return cls(**kwargs)


def load_recipe(path: str | Path, overrides: dict[str, Any] | None = None) -> DataRecipe:
    """Parses a data recipe YAML (unknown keys an error); `overrides` replace top-level keys."""
    path = Path(path)
    values = read_recipe(path, RecipeError)
    values.update(overrides or {})
    return recipe_from_dict(values, where=str(path))


def recipe_from_dict(values: dict[str, Any], where: str = "recipe") -> DataRecipe:
    """A :class:`DataRecipe` from a mapping, checked like a recipe file."""
    recipe = _build(DataRecipe, values, where)
    check_recipe(recipe, where)
    return recipe


def check_recipe(recipe: DataRecipe, where: str = "recipe") -> None:
    """Checks what the types cannot: each numeric key's range (guide/ranges.py), choices, unique names."""
    check_ranges(recipe, lambda message: RecipeError(f"{where}: {message}"))
    if not recipe.generators:
        raise RecipeError(f"{where}: 'generators' is empty: name at least one model that writes responses")
    if not recipe.judges:
        raise RecipeError(f"{where}: 'judges' is empty: name at least one judge")
    for key, items in (("generators", recipe.generators), ("judges", recipe.judges)):
        names = [g.name for g in items]
        if len(set(names)) != len(names):
            raise RecipeError(f"{where}: {key} names must be unique, got {names}")
    for i, g in enumerate(recipe.generators):
        if g.kind not in ("hf", "guide", "openai"):
            raise RecipeError(f"{where}: generators[{i}].kind {g.kind!r}: choose hf, guide or openai")
        if g.kind in ("hf", "openai") and not g.model:
            raise RecipeError(f"{where}: generators[{i}] ({g.name}) needs a 'model'")
    for key, items in (("generators", recipe.generators), ("judges", recipe.judges)):
        for i, item in enumerate(items):
            try:
                check_prompt_format(item.prompt_format, f"{where}: {key}[{i}].prompt_format")
            except ValueError as e:
                raise RecipeError(str(e)) from None
    kinds = {"rule": ("rule",), "reward_model": ("model",), "pairwise": ("model",), "implicit": ("tuned", "untuned")}
    for i, j in enumerate(recipe.judges):
        if j.kind not in kinds:
            raise RecipeError(f"{where}: judges[{i}].kind {j.kind!r}: choose one of {', '.join(kinds)}")
        for key in kinds[j.kind]:
            if not getattr(j, key):
                raise RecipeError(f"{where}: judges[{i}] ({j.name}, kind {j.kind}) needs {key!r}")
        if j.kind == "pairwise" and len(j.labels) != 2:
            raise RecipeError(f"{where}: judges[{i}].labels must be two answer tokens (first, second)")
    judge_names = [j.name for j in recipe.judges]
    for i, m in enumerate(recipe.match):
        if m.judge not in judge_names:
            hint = did_you_mean(m.judge, judge_names) or f"; judges: {', '.join(judge_names)}"
            raise RecipeError(f"{where}: match[{i}].judge {m.judge!r} is not a judge of the recipe{hint}")
    controls = [m.judge for m in recipe.match]
    if len(set(controls)) != len(controls):
        raise RecipeError(f"{where}: match names a judge twice: {controls}")
    if not set(judge_names) - set(controls):
        raise RecipeError(
            f"{where}: every judge is a control in 'match': name at least one judge to pair by, besides the controls"
        )
    if recipe.pairing not in ("best_worst", "best_random", "all_pairs"):
        raise RecipeError(f"{where}: pairing {recipe.pairing!r}: choose best_worst, best_random or all_pairs")
    if recipe.dedup_prompts not in ("none", "exact", "near"):
        raise RecipeError(f"{where}: dedup_prompts {recipe.dedup_prompts!r}: choose none, exact or near")


def recipe_to_dict(recipe: DataRecipe) -> dict[str, Any]:
    """The recipe as plain data (for fingerprints and the card)."""
    return dataclasses.asdict(recipe)
