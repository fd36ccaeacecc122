"""The eval recipe: which instructions, which systems (each one guide recipe), which judge, where to write.

A recipe is a flat YAML mapping whose keys are the fields of :class:`EvalConfig`;
`systems` is a list of `{name: ..., guide: {<a guide recipe>}}`. Unknown keys are
an error naming the file and the key; flags (`--judge gold`) override the recipe.
"""

from __future__ import annotations

import argparse
import re
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

from w2s.guide.commands import UserError
from w2s.guide.files import did_you_mean, read_recipe
from w2s.guide.ranges import any_number, at_least, check_ranges

JUDGES = ("gold", "reward_model", "llm", "http")
COMPUTE_AXES = ("tokens", "strong_tokens", "seconds")
LC_DIFFICULTY = ("none", "fitted")  # or a file of instruction difficulties


class EvalConfigError(UserError, ValueError):
    """A recipe or flag that cannot be used: unknown key, wrong type, bad system."""


# an endpoint system's keys beside its name (eval/endpoint.py): an OpenAI-compatible chat API serving `model`
ENDPOINT_KEYS = ("endpoint", "model", "api_key_env", "seed", "max_tokens", "temperature", "top_p", "stop",
                 "concurrency", "timeout")  # fmt: skip


@dataclass
class System:
    """One system under evaluation: a name and the guide recipe that generates its outputs, or the endpoint that
    serves them (`{endpoint: <base URL>, model: <name>, ...}`: eval/endpoint.py)."""

    name: str
    guide: dict | None = None
    endpoint: dict | None = None

    @property
    def decoder(self) -> str:
        """What the leaderboard's decoder column says."""
        return self.guide.get("decoder", "sample") if self.guide is not None else "endpoint"


@dataclass
class EvalConfig:
    """Everything one `w2s eval` run needs."""

    # instruction set: AlpacaEval JSON/JSONL file, a folder (save_to_disk or JSON files), a hub id, or tiny:<split>
    instructions: str = "tiny:test"
    instructions_split: str = "eval"  # split of a hub id or save_to_disk folder (AlpacaEval's is "eval")
    instructions_subset: str | None = None  # hub config name (AlpacaEval's is "alpaca_eval")
    num_instructions: int | None = field(default=None, metadata=at_least(1))  # first N instructions; None: all
    # systems: [{name: ..., guide: {strong_model: ..., decoder: ..., ...}}, ...]
    systems: list = field(default_factory=list)
    # reference: a system's name, an AlpacaEval model_outputs JSON file, "dataset" (the set's `output` field), or none
    reference: str | None = None
    # judge
    judge: str = "gold"  # gold | reward_model | llm | http
    judge_model: str | None = None  # reward model / LLM judge folder or hub id; served model name for http
    judge_batch_size: int = field(default=8, metadata=at_least(1))
    judge_labels: str = "a,b"  # how the pairwise judges' prompt names the two outputs (the answer it reads)
    judge_dtype: str = "auto"  # local judges: auto | float32 | bfloat16 | float16
    judge_device: str | None = None  # local judges: e.g. cuda; None: CPU
    judge_device_map: str | None = None  # local judges: auto (or balanced, ...) spreads a judge over every device
    judge_max_length: int = field(
        default=1024, metadata=at_least(1)
    )  # tokens of a judged text kept (from the left) by local judges
    judge_base_url_env: str = "W2S_JUDGE_BASE_URL"  # environment variable holding the http judge's base URL
    judge_api_key_env: str = "W2S_JUDGE_API_KEY"  # environment variable holding its API key (never logged)
    trust_remote_code: bool = False
    # generation
    batch_size: int = field(
        default=16, metadata=at_least(1)
    )  # instructions per guide.generate call; outputs are saved after each
    # metrics and report
    bootstrap_samples: int = field(default=2000, metadata=at_least(1))
    seed: int = field(default=0, metadata=any_number())
    # LC win rate (AlpacaEval 2's GLM): instruction difficulty none | fitted (one joint fit over the compared
    # systems) | a file (CSV or JSON/JSONL: instruction, instruction_difficulty; or AlpacaEval's own
    # instruction_difficulty.csv, by index); the bootstrap resamples of its standard error (0: no SE)
    lc_difficulty: str = "none"
    lc_bootstrap_samples: int = field(default=200, metadata=at_least(0))
    compute_axis: str = "tokens"  # x axis of the reward-vs-compute plot: tokens | strong_tokens | seconds
    output_dir: str = "runs/eval"
    # alignment tax (optional, needs `pip install lm-eval`): lm-evaluation-harness tasks run on each strong model
    lm_eval_tasks: str | None = None  # comma-separated task names, e.g. "arc_easy,hellaswag"
    lm_eval_limit: int | None = field(default=None, metadata=at_least(1))  # examples per task; None: all

    def system_list(self) -> list[System]:
        return [
            System(s["name"], s["guide"]) if "guide" in s else System(s["name"], endpoint=_endpoint_of(s))
            for s in self.systems
        ]


def _endpoint_of(system: dict) -> dict:
    return {k: v for k, v in system.items() if k != "name"}


def _base_type(tp):
    """`int | None` -> (int, True); `list` -> (list, False)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return (origin or tp), False


_TYPES = typing.get_type_hints(EvalConfig)


def _check_value(key: str, value, where: str):
    tp, optional = _base_type(_TYPES[key])
    if value is None:
        if optional:
            return None
        raise EvalConfigError(f"{where}: key {key!r} cannot be empty")
    if tp is bool:
        if not isinstance(value, bool):
            raise EvalConfigError(f"{where}: key {key!r} expects true or false, got {value!r}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise EvalConfigError(f"{where}: key {key!r} expects an integer, got {value!r}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise EvalConfigError(f"{where}: key {key!r} expects a number, got {value!r}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise EvalConfigError(f"{where}: key {key!r} expects a string, got {value!r}")
        value = str(value)
    elif tp is list and not isinstance(value, list):
        raise EvalConfigError(f"{where}: key {key!r} expects a list, got {value!r}")
    return value


_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


def validate(config: EvalConfig, where: str = "eval recipe") -> EvalConfig:
    """Checks the fields that depend on each other; raises EvalConfigError naming what is wrong."""
    if config.judge not in JUDGES:
        raise EvalConfigError(f"{where}: key 'judge': {config.judge!r} is not one of {list(JUDGES)}")
    if config.compute_axis not in COMPUTE_AXES:
        raise EvalConfigError(
            f"{where}: key 'compute_axis': {config.compute_axis!r} is not one of {list(COMPUTE_AXES)}"
        )
    if not config.systems:
        raise EvalConfigError(f"{where}: key 'systems' is empty: list at least one {{name: ..., guide: {{...}}}}")
    names = set()
    for i, s in enumerate(config.systems):
        at = f"{where}: systems[{i}]"
        if not isinstance(s, dict):
            raise EvalConfigError(f"{at}: expects a mapping with 'name' and 'guide', got {s!r}")
        allowed = ("name", "guide") if "endpoint" not in s else ("name", *ENDPOINT_KEYS)
        for key in s:
            if key not in allowed:
                raise EvalConfigError(f"{at}: unknown key {key!r}{did_you_mean(key, list(allowed))}")
        if "name" not in s or ("guide" not in s and "endpoint" not in s):
            raise EvalConfigError(
                f"{at}: needs 'name' and 'guide' (a guide recipe mapping), or 'name', 'endpoint' (a base URL) and "
                "'model' (a served model's name)"
            )
        name = str(s["name"])
        if not _NAME.match(name):
            raise EvalConfigError(f"{at}: name {name!r} must be letters, digits and _ . + - (it names a folder)")
        if name in names:
            raise EvalConfigError(f"{at}: duplicate system name {name!r}")
        names.add(name)
        s["name"] = name
        if "endpoint" in s:
            if not isinstance(s["endpoint"], str) or not isinstance(s.get("model"), str):
                raise EvalConfigError(f"{at} ({name}): an endpoint system needs 'endpoint' (a base URL) and 'model'")
            continue
        if not isinstance(s["guide"], dict) or "strong_model" not in s["guide"]:
            raise EvalConfigError(f"{at} ({name}): 'guide' must be a guide recipe mapping with a 'strong_model'")
    if config.judge_dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise EvalConfigError(
            f"{where}: key 'judge_dtype': {config.judge_dtype!r} is not auto, float32, bfloat16 or float16"
        )
    if config.judge in ("reward_model", "llm", "http") and not config.judge_model:
        raise EvalConfigError(f"{where}: judge {config.judge!r} needs 'judge_model'")
    if config.judge in ("llm", "http") and config.reference is None:
        raise EvalConfigError(
            f"{where}: judge {config.judge!r} compares pairs: set 'reference' to a system's name, "
            "a model_outputs JSON file or 'dataset'"
        )
    check_ranges(config, lambda message: EvalConfigError(f"{where}: {message}"))
    difficulty = config.lc_difficulty
    if difficulty not in LC_DIFFICULTY and not Path(difficulty).expanduser().is_file():
        raise EvalConfigError(
            f"{where}: key 'lc_difficulty': {difficulty!r} is neither none, fitted, nor a file of instruction "
            "difficulties"
        )
    compared = [s["name"] for s in config.systems if s["name"] != config.reference]
    if difficulty == "fitted" and config.reference is not None and len(compared) < 2:
        raise EvalConfigError(
            f"{where}: key 'lc_difficulty': fitted needs at least two systems besides the reference "
            f"(it has {compared}): fitted on one system, the difficulty would absorb that system's results; "
            "use none or a file"
        )
    return config


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> EvalConfig:
    """An EvalConfig from a recipe YAML (optional) and overrides (flags), checked."""
    values: dict = {}
    where = "flags"
    known = {f.name for f in fields(EvalConfig)}
    if path is not None:
        where = str(path)
        loaded = read_recipe(path, EvalConfigError)
        for key, value in loaded.items():
            if key not in known:
                raise EvalConfigError(f"{where}: unknown key {key!r}{did_you_mean(key, known)}")
            values[key] = _check_value(key, value, where)
    for key, value in (overrides or {}).items():
        if key not in known:
            raise EvalConfigError(f"unknown option {key!r}{did_you_mean(key, known)}")
        if value in ("none", "null") and _base_type(_TYPES[key])[1]:
            value = None  # `--reference none` clears an optional key
        values[key] = _check_value(key, value, "flag")
    return validate(EvalConfig(**values), where)


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One `--<field>` flag per scalar field of EvalConfig (default: unset, so the recipe decides)."""
    for f in fields(EvalConfig):
        tp, _ = _base_type(_TYPES[f.name])
        if tp is list:
            continue
        default = f.default if f.default is not MISSING else None
        if tp is bool:
            parser.add_argument(f"--{f.name}", type=lambda s: s.lower() in ("1", "true", "yes"), default=None,
                                help=f"true/false (default {default})")  # fmt: skip
        else:
            parser.add_argument(f"--{f.name}", type=tp, default=None, help=f"default {default!r}")


def config_dict(config: EvalConfig) -> dict:
    """The config as plain data (for results.json)."""
    return asdict(config)
