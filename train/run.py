"""Running a training script from its recipe: parse, build the `tiny:` models and data it names, train,
save; resuming from checkpoints; the model path check every script does first."""

from __future__ import annotations

import sys
from pathlib import Path

from w2s.guide.commands import run_command
from w2s.guide.files import RecipeError
from w2s.guide.models import resolve_model_path
from w2s.guide.preflight import check_weights
from w2s.train.cards import save_run
from w2s.train.data import resolve_data_path
from w2s.train.recipes import parse_recipe


def build_tiny_references(parsed: tuple) -> bool:
    """Builds (or finds in the cache) every `tiny:` model and data set the parsed arguments name."""

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
    """Parses the recipe and flags, calls `main(*dataclasses)`; a user's mistake (a recipe, a flag, a model,
    the data) is one line and exit status 2, `--debug` shows the traceback (guide/commands.py)."""

    def parse_and_run(argv: list[str]) -> None:
        parsed = parse_recipe(dataclass_types, argv, prog)
        if build_tiny_references(parsed):  # building trains in this process: parse again for a fresh state
            parsed = parse_recipe(dataclass_types, argv, prog)
        main(*parsed)

    return run_command(prog or Path(sys.argv[0]).name, parse_and_run, sys.argv[1:] if args is None else list(args))


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

    if not spec:
        raise RecipeError(f"{key}: no model given; set it in the recipe or with --{key}")
    path = resolve_model_path(spec)
    local = Path(path).expanduser()
    looks_local = path.startswith((".", "/", "~")) or local.exists() or path.count("/") > 1
    is_model = (local / "config.json").is_file() or (local / "adapter_config.json").is_file()
    if looks_local and not is_model:
        raise RecipeError(f"{key}: {spec!r} is not a model folder (no config.json there); a hub id or a folder")
    if looks_local:
        check_weights(path, key)  # safetensors only: a pickle-only folder is named, not unpickled
    return path
