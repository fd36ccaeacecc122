"""What a training run leaves behind: the model folder, its model card, and (for LoRA) a merged copy.

The card records what a reader needs to reproduce or trust the model: the base
model (the guide's untuned twin), the data, every recipe value that differs
from its default, and the final metrics.
"""

from __future__ import annotations

import dataclasses
import logging
from enum import Enum
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

CARD_NAME = "README.md"
# set by TrainingArguments.__post_init__ or irrelevant to reproducing a run
_NOISE = {
    "logging_dir",
    "local_rank",
    "world_size",
    "output_dir",
    "hub_token",
    "distributed_state",
    "accelerator_config",
}
_EMPTY = (None, "", "none", False)  # and empty containers: a default that __post_init__ normalised, not a choice


def changed_fields(obj) -> dict:
    """The fields of dataclass `obj` whose values differ from their declared defaults (secrets left out)."""
    out = {}
    for f in dataclasses.fields(obj):
        if f.name in _NOISE or "token" in f.name:
            continue
        value = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = dataclasses.MISSING
        if _empty(value) and _empty(default):
            continue
        if value != default and not callable(value):
            out[f.name] = _plain(value)
    return out


def _empty(value) -> bool:
    return (isinstance(value, (list, tuple, dict)) and not value) or any(value is e or value == e for e in _EMPTY)


def _plain(value):
    """`value` as plain YAML-safe data (enums by value, dataclasses as dicts, anything else as text)."""
    if isinstance(value, Enum):
        return value.value
    if dataclasses.is_dataclass(value):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool, type(None))):
        return value
    return str(value)


def final_metrics(log_history: list[dict]) -> dict:
    """The last value logged for each metric (training loss, eval metrics, the train summary)."""
    metrics = {}
    for entry in log_history:
        metrics.update({k: v for k, v in entry.items() if k not in ("epoch", "step")})
    if log_history:
        metrics["step"] = log_history[-1].get("step")
        metrics["epoch"] = log_history[-1].get("epoch")
    return metrics


def write_model_card(
    output_dir: str | Path,
    *,
    stage: str,
    base_model: str,
    data: str,
    recipe: dict,
    metrics: dict,
    adapter: bool = False,
) -> Path:
    """A model card (README.md with HF metadata) in `output_dir`, describing one training run."""
    output_dir = Path(output_dir)
    meta = {"base_model": base_model, "library_name": "peft" if adapter else "transformers",
            "tags": ["w2s", "guide", stage, "trl"] + (["lora"] if adapter else [])}  # fmt: skip
    if data and "/" in data and not Path(data).exists():
        meta["datasets"] = [data]
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {output_dir.name}",
        "",
        f"A guide model trained by w2s ({stage.upper()}, TRL). Its untuned twin is the base model "
        f"`{base_model}`{' (this folder holds a LoRA adapter on it)' if adapter else ''}.",
        "",
        "## Data",
        "",
        data,
        "",
        "## Recipe (values that differ from the defaults)",
        "",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=True).strip(),
        "```",
        "",
        "## Final metrics",
        "",
        "| metric | value |",
        "| --- | --- |",
        *[f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()],
        "",
    ]
    path = output_dir / CARD_NAME
    path.write_text("\n".join(lines))
    return path


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Base model + LoRA adapter in `adapter_dir`, merged into a plain HF model folder at `output_dir`."""
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(str(adapter_dir), dtype="auto")
    merged = model.merge_and_unload()
    merged.save_pretrained(str(output_dir), safe_serialization=True)
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(output_dir))
    return Path(output_dir)


def save_run(trainer, *, stage: str, base_model: str, data: str, args: tuple, merge: bool = False) -> None:
    """Saves the trained model (or adapter) with its tokenizer and model card; merges a LoRA adapter if asked."""
    out = Path(trainer.args.output_dir)
    trainer.save_model(str(out))
    trainer.accelerator.wait_for_everyone()
    if not trainer.accelerator.is_main_process:
        return
    adapter = (out / "adapter_config.json").is_file()
    recipe = {k: v for a in args for k, v in changed_fields(a).items()}
    metrics = final_metrics(trainer.state.log_history)
    write_model_card(out, stage=stage, base_model=base_model, data=data, recipe=recipe, metrics=metrics,
                     adapter=adapter)  # fmt: skip
    if merge and adapter:
        merged = merge_adapter(out, out / "merged")
        write_model_card(merged, stage=stage, base_model=base_model, data=data, recipe=recipe, metrics=metrics)
        logger.info("merged model saved to %s", merged)
    elif merge:
        logger.warning("merge_adapter is set but the run trained no adapter (use_peft is off): nothing to merge")
