"""Reading a recipe: a flat YAML whose keys are fields of the script's dataclasses, overridable by flags.

TRL's `TrlParser` sets YAML values as argparse defaults without checking them,
so a typo'd key or a string where a number belongs would slip through or fail
deep inside a trainer. :func:`parse_recipe` checks every key and value first
and names the file and key that are wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from dataclasses import fields
from pathlib import Path

from trl import TrlParser

from data.files import did_you_mean, read_recipe


class RecipeError(ValueError):
    """A recipe or a flag that cannot be used: unknown key, wrong type, missing file or column."""


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


def _check_mixture(entries, where: str) -> None:
    from trl.scripts.utils import DatasetConfig

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


def recipe_parser(dataclass_types: tuple[type, ...], prog: str | None = None) -> TrlParser:
    """TRL's parser whose flag errors are a RecipeError (one line naming the flag and value), not usage then exit."""
    parser = TrlParser(dataclass_types, **({"prog": prog} if prog else {}))
    parser.error = _raise_recipe_error  # argparse calls it for a bad value, a missing value, a bad choice
    return parser


def parse_recipe(dataclass_types: tuple[type, ...], args: list[str] | None = None, prog: str | None = None) -> tuple:
    """Dataclass instances from `--config recipe.yaml` (optional) and flags; flags win over the recipe.

    `--help` prints the options and exits 0 (SystemExit) before anything is loaded or built.
    """
    parser = recipe_parser(dataclass_types, prog)
    args = list(sys.argv[1:] if args is None else args)
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
    return tuple(parsed)


def build_tiny_references(parsed: tuple) -> bool:
    """Builds (or finds in the cache) every `tiny:` model and data set the parsed arguments name."""
    from guide.models import resolve_model_path
    from train.data import resolve_data_path

    found = False
    for obj in parsed:
        for name in ("model_name_or_path", "teacher_model_name_or_path"):
            if str(getattr(obj, name, None) or "").startswith("tiny:"):
                resolve_model_path(getattr(obj, name))
                found = True
        sources = [getattr(obj, "dataset_name", None)] + [d.path for d in getattr(obj, "datasets", None) or []]
        for source in sources:
            if str(source or "").startswith("tiny:"):
                resolve_data_path(source)
                found = True
    return found


def run(main, dataclass_types: tuple[type, ...], args: list[str] | None = None, prog: str | None = None) -> int:
    """Parses the recipe and flags, calls `main(*dataclasses)`; a RecipeError exits non-zero with its message."""
    try:
        parsed = parse_recipe(dataclass_types, args, prog)
        if build_tiny_references(parsed):  # building trains in this process: parse again for a fresh state
            parsed = parse_recipe(dataclass_types, args, prog)
        main(*parsed)
    except RecipeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def last_checkpoint(output_dir: str | Path) -> str | None:
    """The latest complete `checkpoint-<step>` in `output_dir`: one whose trainer state was written whole.

    A run killed while saving leaves a partial checkpoint; resuming skips it rather than crash on it.
    """
    import json
    import re

    steps = []
    for path in Path(output_dir).glob("checkpoint-*"):
        match = re.fullmatch(r"checkpoint-(\d+)", path.name)
        if match and path.is_dir():
            try:
                json.loads((path / "trainer_state.json").read_text())
            except (OSError, ValueError):
                continue
            steps.append((int(match.group(1)), str(path)))
    return max(steps)[1] if steps else None


def resume_checkpoint(value: str | None, output_dir: str) -> str | None:
    """`resume_from_checkpoint` as the Trainer takes it: a checkpoint folder; `true`/`last`: the latest complete
    checkpoint in output_dir (an error if there is none); `auto`: the same, or a fresh start if there is none."""
    if value is None or value.lower() in ("false", "none", ""):
        return None
    if value.lower() in ("true", "last", "auto"):
        found = last_checkpoint(output_dir)
        if found is None and value.lower() != "auto":
            raise RecipeError(f"resume_from_checkpoint: no complete checkpoint in {output_dir!r} to resume from")
        return found
    if not Path(value).is_dir():
        raise RecipeError(f"resume_from_checkpoint: no checkpoint folder {value!r}")
    return value


def train_and_save(trainer, stage: str, script_args, training_args, model_args, *, evaluate: bool = True) -> None:
    """Trains (resuming as the recipe says), evaluates, saves the model with its card, pushes if asked."""
    from train.cards import save_run

    trainer.train(
        resume_from_checkpoint=resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    if evaluate and trainer.eval_dataset is not None:
        trainer.evaluate()
    data = script_args.dataset_name or ", ".join(d.path for d in script_args.datasets)
    save_run(trainer, stage=stage, base_model=model_args.model_name_or_path, data=data,
             args=(script_args, training_args, model_args), merge=script_args.merge_adapter)  # fmt: skip
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()


def check_model(spec: str | None, key: str = "model_name_or_path") -> str:
    """`spec` as a loadable model (a `tiny:` name built first); a RecipeError if it names a folder that is not one."""
    from guide.models import resolve_model_path

    if not spec:
        raise RecipeError(f"{key}: no model given; set it in the recipe or with --{key}")
    path = resolve_model_path(spec)
    local = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or local.exists() or path.count("/") > 1
    is_model = (local / "config.json").is_file() or (local / "adapter_config.json").is_file()
    if looks_local and not is_model:
        raise RecipeError(f"{key}: {spec!r} is not a model folder (no config.json there); a hub id or a folder")
    return path
