"""Reading a recipe: a flat YAML whose keys are fields of the script's dataclasses, overridable by flags.

TRL's `TrlParser` sets YAML values as argparse defaults without checking them,
so a typo'd key or a string where a number belongs would slip through or fail
deep inside a trainer. :func:`parse_recipe` checks every key and value first
and names the file and key that are wrong.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType

from transformers import HfArgumentParser
from trl import TrlParser

from w2s.guide.files import RecipeError, did_you_mean, read_recipe
from w2s.guide.ranges import RANGE, above, check_ranges


def _convert(action: argparse.Action, value, where: str, takes_list: bool = False):
    """`value` converted the way the command line would convert it, or a RecipeError naming `where`."""
    if value is None or action.type is None or isinstance(value, dict):
        return value
    if isinstance(value, list):
        if action.nargs not in ("+", "*") and not takes_list:
            if all(isinstance(v, dict) for v in value):  # e.g. a list of dataset mixture entries
                return value
            raise RecipeError(f"{where}: expects a single value, got the list {value!r}")
        return [_convert(argparse.Action([], action.dest, type=action.type, choices=action.choices), v, where)
                for v in value]  # fmt: skip
    if isinstance(value, str) or not isinstance(value, (int, float, bool)):
        text = str(value)
    else:
        text = str(value).lower() if isinstance(value, bool) else repr(value)
    expected = getattr(action.type, "__name__", str(action.type))
    if action.type in (int, float) and isinstance(value, bool):
        raise RecipeError(f"{where}: expects {expected}, got {value!r}")
    try:
        converted = action.type(text)
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise RecipeError(f"{where}: expects {expected}, got {value!r}") from e
    if action.choices is not None and converted not in action.choices:
        raise RecipeError(f"{where}: {value!r} is not one of {list(action.choices)}")
    return converted


@dataclass
class DatasetConfig:
    """One source of a `datasets:` mixture (the fields of TRL's own mixture entries, kept here so that a TRL
    release that moves its private `trl.scripts.utils` does not break recipes)."""

    path: str  # a hub id, a save_to_disk folder, a JSON/JSONL file or tiny:<name>
    name: str | None = None
    data_dir: str | None = None
    data_files: str | list[str] | dict[str, str] | None = None
    split: str = "train"
    columns: list[str] | None = None
    fraction: float | None = field(default=None, metadata=above(0))  # this source's share of the mixture
    prompt_column: str | None = None  # this source's column mapping (train/data.py), else the recipe's
    completion_column: str | None = None


def _check_mixture(entries, where: str) -> None:
    if not isinstance(entries, list):
        raise RecipeError(f"{where}: expects a list of data sources (each with a 'path'), got {entries!r}")
    known = {f.name for f in fields(DatasetConfig)}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise RecipeError(f"{where}[{i}]: expects a mapping with a 'path', got {entry!r}")
        for key in entry:
            if key not in known:
                raise RecipeError(
                    f"{where}[{i}]: unknown key {key!r}{did_you_mean(key, known)}; known: {sorted(known)}"
                )
        if "path" not in entry:
            raise RecipeError(
                f"{where}[{i}]: missing key 'path' (a hub id, a save_to_disk folder or a JSON/JSONL file)"
            )
        if entry.get("fraction") is not None and not isinstance(entry["fraction"], (int, float)):
            raise RecipeError(f"{where}[{i}].fraction: expects a number, got {entry['fraction']!r}")


def load_recipe(path: str | Path, parser: argparse.ArgumentParser, list_fields: frozenset[str] = frozenset()) -> dict:
    """The recipe at `path` as a dict of checked, converted values (its `env:` mapping applied to os.environ)."""
    path = Path(path)
    config = read_recipe(path, RecipeError)
    actions: dict[str, argparse.Action] = {}
    for a in parser._actions:  # `--no_<flag>` shares its dest with `--<flag>`: keep the one that converts
        if a.dest != "help" and (a.dest not in actions or actions[a.dest].type is None):
            actions[a.dest] = a
    env = config.pop("env", {})
    if not isinstance(env, dict):
        raise RecipeError(f"{path}: 'env' must be a mapping of VARIABLE: value")
    checked = {}
    for key, value in config.items():
        if key not in actions:
            raise RecipeError(f"{path}: unknown key {key!r}{did_you_mean(key, actions)}")
        where = f"{path}: key {key!r}"
        if key == "datasets":
            _check_mixture(value, where)
            checked[key] = value
        else:
            checked[key] = _convert(actions[key], value, where, takes_list=key in list_fields)
    for name, value in env.items():
        os.environ[str(name)] = str(value)
    return checked


def _raise_recipe_error(message: str):
    raise RecipeError(message)


class _RangedParser(TrlParser):
    """TRL's parser, for dataclasses whose fields may declare a range (guide/ranges.py): HF's parser passes a
    field's metadata to argparse, which knows no range, so it gets the range in the help text instead."""

    @staticmethod
    def _parse_dataclass_field(parser, field):
        if RANGE in field.metadata:
            meta = dict(field.metadata)
            allowed = meta.pop(RANGE)
            meta["help"] = f"{meta.get('help', '')} ({allowed})".lstrip()
            field = copy.copy(field)
            field.metadata = MappingProxyType(meta)
        HfArgumentParser._parse_dataclass_field(parser, field)


def recipe_parser(dataclass_types: tuple[type, ...], prog: str | None = None) -> TrlParser:
    """TRL's parser whose flag errors are a RecipeError (one line naming the flag and value), not usage then exit."""
    parser = _RangedParser(dataclass_types, **({"prog": prog} if prog else {}))
    parser.error = _raise_recipe_error  # argparse calls it for a bad value, a missing value, a bad choice
    return parser


def parse_recipe(dataclass_types: tuple[type, ...], args: list[str] | None = None, prog: str | None = None) -> tuple:
    """Dataclass instances from `--config recipe.yaml` (optional) and flags; flags win over the recipe.

    `--help` prints the options and exits 0 (SystemExit) before anything is loaded or built.
    """
    parser = recipe_parser(dataclass_types, prog)
    args = list(sys.argv[1:] if args is None else args)
    config_path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise RecipeError("--config needs a recipe file")
        config_path = args[i + 1]
        del args[i : i + 2]
        # fields typed `X | list[X]` take one value as a flag but a list in YAML (e.g. report_to: [wandb, tensorboard])
        # (annotations, not dataclass fields: the HF parser narrows field types in place)
        list_fields = frozenset(
            name for t in dataclass_types for name, hint in typing.get_type_hints(t).items() if "list" in str(hint)
        )
        parser.set_defaults_with_config(**load_recipe(config_path, parser, list_fields))
    known = {opt for a in parser._actions for opt in a.option_strings}
    for arg in args:
        flag = arg.split("=", 1)[0]
        if flag.startswith("--") and flag not in known:
            names = [o[2:] for o in known if o.startswith("--")]
            raise RecipeError(f"unknown flag {flag!r}{did_you_mean(flag[2:], names)}")
    *parsed, unused = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
    if unused:
        raise RecipeError(f"unexpected argument(s) {unused}: flags are --<field> value")
    for obj in parsed:  # the script's own keys declare their ranges (guide/ranges.py); TRL's keys are TRL's to check
        check_ranges(obj, lambda message: RecipeError(f"{config_path or 'flags'}: {message}"))
    return tuple(parsed)
