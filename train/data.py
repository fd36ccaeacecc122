"""Training data for the scripts: hub ids, `save_to_disk` folders, JSON/JSONL files, and mixtures of them.

A recipe names one source (`dataset_name`) or a mixture (`datasets:`, a list of
`DatasetConfig` entries, the fields of TRL's with optional `fraction`s); either way the columns
are checked against what the trainer needs before any model is loaded.

Data in a layout of the trainer's own (TRL's `messages`, `prompt`+`completion`, `text`, ...) is
used as it is. Other layouts are read through a column mapping, `prompt_column` and
`completion_column` (on the recipe, or on one source of a mixture), whose defaults read what w2s
itself writes: AlpacaEval outputs (`instruction`/`output`: `w2s generate`, `w2s eval`'s
`model_outputs.json`) and, for a trainer of prompts alone, conversations (`messages`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from datasets import Dataset, DatasetDict, concatenate_datasets, load_from_disk
from trl import ScriptArguments

from w2s.data.prompts import to_messages
from w2s.data.world.preferences import world_preferences
from w2s.guide.files import RecipeError
from w2s.guide.ranges import at_least, between
from w2s.train.recipes import DatasetConfig
from w2s.train.world import ensure_base, ensure_prompts, ensure_teacher_outputs

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz")

# What each trainer reads: every inner tuple is one accepted set of columns.
SFT_COLUMNS = (("messages",), ("prompt", "completion"), ("text",))
DPO_COLUMNS = (("prompt", "chosen", "rejected"),)
DISTILL_COLUMNS = (("prompt",),)  # TRL's DistillationTrainer reads `prompt` alone (messages: see PROMPT_COLUMNS)

# The columns a mapping reads as the prompt and as the completion when the recipe names none, first found first:
# TRL's own, then AlpacaEval's (w2s generate, w2s eval), then a conversation up to its last user turn.
PROMPT_COLUMNS = ("prompt", "instruction", "messages")
COMPLETION_COLUMNS = ("completion", "output")


class DataError(RecipeError):
    """A data source that cannot be read, or lacks the columns a trainer needs."""


@dataclass
class TrainScriptArguments(ScriptArguments):
    """The script's own arguments: where the data comes from (`dataset_name` or a `datasets` mixture), what to save."""

    datasets: list[DatasetConfig] = field(
        default_factory=list,
        metadata={"help": "mixture: list of {path, name, data_files, split, columns, fraction} (fractions are shares)"},
    )
    test_split_size: float | None = field(
        default=None,
        metadata={"help": "hold out this share of a mixture (or of a source with no test split)",
                  **between(0, 1, low_open=True, high_open=True)},
    )  # fmt: skip
    max_train_samples: int | None = field(
        default=None, metadata={"help": "keep only the first N training rows", **at_least(1)}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "keep only the first N evaluation rows", **at_least(1)}
    )
    prompt_column: str | None = field(
        default=None,
        metadata={"help": "read this column as the prompt (a string is the user's message); default: prompt, "
                  "else instruction (AlpacaEval outputs), else messages"},
    )  # fmt: skip
    completion_column: str | None = field(
        default=None,
        metadata={"help": "SFT: read this column as the completion (a string is the assistant's reply), e.g. "
                  "'chosen' of a preference set; default: completion, else output (AlpacaEval outputs)"},
    )  # fmt: skip
    merge_adapter: bool = field(
        default=False, metadata={"help": "with use_peft: also save base+adapter merged, in <output_dir>/merged"}
    )
    bad_rows: str = field(
        default="stop",
        metadata={
            "help": "rows with a missing, None or empty field: stop (name them, train nothing) or drop (count them)"
        },
    )

    def __post_init__(self):
        self.datasets = [DatasetConfig(**d) if isinstance(d, dict) else d for d in self.datasets]


TINY_PREFIX = "tiny:"


def _tiny_preferences(base: str, reward: str = "gold") -> Path:

    return world_preferences(ensure_base(base), reward=reward)


def _tiny_teacher_outputs() -> Path:

    return ensure_teacher_outputs()


def _tiny_prompts() -> Path:

    return ensure_prompts()


# Tiny-world data sets that recipes name as `tiny:<name>`, built on first use and cached.
TINY_DATA = {
    "preferences": lambda: _tiny_preferences("weak"),  # gold-judged pairs of the weak base's samples
    "preferences_b": lambda: _tiny_preferences("weak_b"),  # the same for weak base B (family B tokenizer)
    "preferences_sentiment": lambda: _tiny_preferences("weak", "sentiment"),  # judged by one attribute: experts
    "preferences_topic": lambda: _tiny_preferences("weak", "topic"),
    "teacher_outputs": _tiny_teacher_outputs,  # the strong base's samples, prompt/completion (JSONL)
    "prompts": _tiny_prompts,  # world prompts alone (train/test), for on-policy token-level distillation
}


def resolve_data_path(spec: str) -> str:
    """A data source; `tiny:<name>` names a tiny-world data set, built on first use."""
    if not spec.startswith(TINY_PREFIX):
        return spec
    name = spec[len(TINY_PREFIX) :]
    if name not in TINY_DATA:
        raise DataError(f"unknown tiny-world data set {spec!r}: choose one of {['tiny:' + n for n in TINY_DATA]}")
    return str(TINY_DATA[name]())


def _looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or path.endswith(JSON_SUFFIXES) or Path(path).exists()


# The sets `w2s data build` writes in its output folder (data/build.py), each a save_to_disk DatasetDict; card.json
# marks a finished build. A recipe naming the folder reads the first set its trainer can read, or `dataset_config`.
BUILD_SETS = ("sft", "pairs")


def _build_sets(folder: Path) -> list[str]:
    if not (folder / "card.json").is_file():
        return []
    return [name for name in BUILD_SETS if (folder / name / "dataset_dict.json").is_file()]


def _generate_side_file(path: Path) -> str | None:
    """What to say when `path` is one of the files `w2s generate` writes beside its outputs, not the outputs."""
    if path.name.endswith(".details.json"):
        outputs = path.name.removesuffix(".details.json") + ".json"
        return f"the per-item scores and costs w2s generate writes beside its outputs: train on {outputs!r}"
    if path.name.endswith(".partial.jsonl"):
        return f"the log of an unfinished w2s generate run: run it again to finish (it resumes), then train on " \
               f"{path.name.removesuffix('.partial.jsonl')!r}"  # fmt: skip
    return None


def load_source(
    path: str,
    *,
    name: str | None = None,
    data_files=None,
    split: str | None = None,
    readable: Callable[[list[str]], bool] | None = None,
) -> Dataset | DatasetDict:
    """A `Dataset` (with `split`) or `DatasetDict` from a save_to_disk folder, a `w2s data build` folder (its set
    `name`, else the first of BUILD_SETS whose columns `readable(columns)` accepts), a JSON/JSONL file or a hub id."""
    path = resolve_data_path(path)
    local = Path(path).expanduser()
    if _looks_local(path):
        if not local.exists():
            raise DataError(f"data source {path!r}: no such file or folder")
        if side_file := _generate_side_file(local):
            raise DataError(f"data source {path!r}: {side_file}")
        sets = _build_sets(local) if local.is_dir() else []
        if sets:
            if name is not None and name not in sets:
                raise DataError(f"data source {path!r}: a w2s data build folder with the sets {sets}, not {name!r}: "
                                "set dataset_config to one of them")  # fmt: skip
            columns = {s: load_from_disk(str(local / s))["train"].column_names for s in sets}
            chosen = name or next((s for s in sets if readable is None or readable(columns[s])), sets[0])
            logger.info("data source %s: reading the %r set of a w2s data build (its sets: %s)", path, chosen, sets)
            data = load_from_disk(str(local / chosen))
        elif local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
            data = load_from_disk(str(local))
        elif local.is_file() and path.endswith(JSON_SUFFIXES):
            try:
                data = datasets.load_dataset("json", data_files=str(local))
            except Exception as e:  # datasets raises several types for malformed JSON
                raise DataError(f"data source {path!r}: not readable as JSON/JSONL ({e})") from e
        elif local.is_dir():
            data = datasets.load_dataset(str(local), name=name, data_files=data_files)
        else:
            raise DataError(f"data source {path!r}: expected a save_to_disk folder or a .json/.jsonl file")
    else:
        data = datasets.load_dataset(path, name=name, data_files=data_files)
    if split is None:
        return data if isinstance(data, DatasetDict) else DatasetDict({"train": data})
    if isinstance(data, Dataset):
        return data
    if split not in data:
        raise DataError(f"data source {path!r}: no split {split!r} (it has {sorted(data)})")
    return data[split]


def column_mapping(
    have: list[str],
    accepted: tuple[tuple[str, ...], ...] = (),
    prompt_column: str | None = None,
    completion_column: str | None = None,
    where: str = "data",
) -> dict[str, str]:
    """The columns of `have` the trainer reads as `prompt` (and `completion`), e.g. {"prompt": "instruction",
    "completion": "output"}, or {} to read them as they are. Columns the recipe names win; else a layout of the
    trainer's (`accepted`) is read as it is, and another through the first found of PROMPT_COLUMNS (and of
    COMPLETION_COLUMNS, if the trainer reads completions) when that makes one of the trainer's."""
    for key, column in (("prompt_column", prompt_column), ("completion_column", completion_column)):
        if column is not None and column not in have:
            raise DataError(f"{where}: {key} {column!r} is not one of its columns {sorted(have)}")
    reads_completions = not accepted or any("completion" in cols for cols in accepted)
    if completion_column is not None and not reads_completions:
        options = " or ".join("+".join(cols) for cols in accepted)
        raise DataError(f"{where}: completion_column {completion_column!r} is set, but the trainer reads {options}")
    named = prompt_column is not None or completion_column is not None
    if not named and (not accepted or _fits(have, accepted)):
        return {}
    mapping = {}
    prompt = prompt_column or next((c for c in PROMPT_COLUMNS if c in have), None)
    if prompt is not None:
        mapping["prompt"] = prompt
    elif completion_column is not None:
        raise DataError(f"{where}: no prompt column to go with completion_column {completion_column!r}: set "
                        f"prompt_column to one of its columns {sorted(have)}")  # fmt: skip
    completion = completion_column or next((c for c in COMPLETION_COLUMNS if c in have), None)
    if reads_completions and completion is not None:
        mapping["completion"] = completion
    if not named and not _fits(mapping, accepted):
        return {}  # no default reading makes a layout the trainer reads: check_columns names what is missing
    return mapping


def _fits(have, accepted: tuple[tuple[str, ...], ...]) -> bool:
    return any(set(cols) <= set(have) for cols in accepted)


def _readable(accepted: tuple, prompt_column: str | None, completion_column: str | None):
    """Whether the trainer (`accepted`) reads data of some columns through this mapping: picks a data build's set."""

    def readable(have: list[str]) -> bool:
        try:
            mapping = column_mapping(have, accepted, prompt_column, completion_column)
        except DataError:
            return False
        return not accepted or _fits(set(have) - set(mapping.values()) | set(mapping), accepted)

    return readable


def map_columns(data: Dataset, mapping: dict[str, str], where: str = "data") -> Dataset:
    """`data` with the mapped columns as `prompt` (a string becomes the user's message; messages are kept up to
    the last user turn) and `completion` (a string becomes the assistant's reply), so the model's chat template
    applies as it does when w2s generates for these prompts; the other columns are kept."""
    if not mapping:
        return data

    def convert(row: dict, i: int) -> dict:
        out = {}
        if "prompt" in mapping:
            value = row[mapping["prompt"]]
            out["prompt"] = None if value is None else to_messages(value, f"{where}: row {i + 1}, {mapping['prompt']}")
        if "completion" in mapping:
            value = row[mapping["completion"]]
            out["completion"] = [{"role": "assistant", "content": value}] if isinstance(value, str) else value
        return out

    replaced = [c for c in data.column_names if c in mapping.values() or c in mapping]
    # in memory: no cache files written into the source's folder (a data build's, the tiny world's cache)
    return data.map(convert, with_indices=True, remove_columns=replaced, keep_in_memory=True, desc="reading columns")


def _mix(args: TrainScriptArguments, accepted: tuple[tuple[str, ...], ...]) -> Dataset:
    parts = []
    for cfg in args.datasets:
        readable = _readable(accepted, cfg.prompt_column or args.prompt_column,
                             cfg.completion_column or args.completion_column)  # fmt: skip
        part = load_source(cfg.path, name=cfg.name, data_files=cfg.data_files, split=cfg.split or "train",
                           readable=readable)  # fmt: skip
        if cfg.columns is not None:
            missing = [c for c in cfg.columns if c not in part.column_names]
            if missing:
                raise DataError(f"data source {cfg.path!r}: no column(s) {missing} (it has {part.column_names})")
            part = part.select_columns(cfg.columns)
        parts.append(part)
    fractions = [cfg.fraction for cfg in args.datasets]
    if any(f is not None for f in fractions):
        if any(f is None for f in fractions):
            raise DataError("datasets: set 'fraction' on every source of the mixture or on none")
        weights = [f / sum(fractions) for f in fractions]
        # the largest mixture in which no source has to repeat rows
        total = min(len(p) / w for p, w in zip(parts, weights, strict=True))
        parts = [p.select(range(round(w * total))) for p, w in zip(parts, weights, strict=True)]
    parts = [
        _read(part, cfg.path, accepted, cfg.prompt_column or args.prompt_column,
              cfg.completion_column or args.completion_column)  # each source's own mapping, else the recipe's
        for part, cfg in zip(parts, args.datasets, strict=True)
    ]  # fmt: skip
    names = [set(p.column_names) for p in parts]
    if any(n != names[0] for n in names):
        common = set.intersection(*names)
        parts = [p.select_columns(sorted(common)) for p in parts]
    return concatenate_datasets(parts)


def _read(data: Dataset, source: str, accepted: tuple, prompt_column: str | None, completion_column: str | None):
    where = f"data source {source!r}"
    return map_columns(
        data, column_mapping(data.column_names, accepted, prompt_column, completion_column, where), where
    )


def load_training_data(
    args: TrainScriptArguments, seed: int = 0, accepted: tuple[tuple[str, ...], ...] = ()
) -> tuple[Dataset, Dataset | None]:
    """(train, eval or None) as the recipe describes them, read through its column mapping; with the trainer's
    `accepted` column sets, a layout that is not the trainer's is read through the default mapping."""
    if args.datasets:
        if args.dataset_name:
            logger.warning("both 'datasets' and 'dataset_name' are set: using the mixture in 'datasets'")
        data = DatasetDict({"train": _mix(args, accepted)})
    elif args.dataset_name:
        readable = _readable(accepted, args.prompt_column, args.completion_column)
        data = load_source(args.dataset_name, name=args.dataset_config, readable=readable)
    else:
        raise DataError("no training data: set 'dataset_name' or a 'datasets' mixture in the recipe")
    if args.dataset_train_split not in data:
        raise DataError(f"data {args.dataset_name!r}: no split {args.dataset_train_split!r} (it has {sorted(data)})")
    train = data[args.dataset_train_split]
    evaluation = data.get(args.dataset_test_split)
    if args.test_split_size is not None and evaluation is None:
        split = train.train_test_split(test_size=args.test_split_size, seed=seed)
        train, evaluation = split["train"], split["test"]
    if args.max_train_samples is not None:
        train = train.select(range(min(args.max_train_samples, len(train))))
    if evaluation is not None and args.max_eval_samples is not None:
        evaluation = evaluation.select(range(min(args.max_eval_samples, len(evaluation))))
    if not args.datasets:  # a mixture read each source through its mapping
        train, evaluation = (
            None if d is None else _read(d, args.dataset_name, accepted, args.prompt_column, args.completion_column)
            for d in (train, evaluation)
        )
    return train, evaluation


def load_checked_data(
    args: TrainScriptArguments, accepted: tuple[tuple[str, ...], ...], what: str, seed: int = 0
) -> tuple[Dataset, Dataset | None]:
    """(train, eval or None) as the recipe describes them, each checked to have one of the `accepted` column sets."""
    if args.bad_rows not in ("stop", "drop"):
        raise DataError(f"bad_rows {args.bad_rows!r}: choose stop or drop")
    train, evaluation = load_training_data(args, seed=seed, accepted=accepted)
    source = args.dataset_name or "the datasets mixture"
    checked = []
    for split, data in (("train", train), ("eval", evaluation)):
        if data is not None:
            columns = check_columns(data, accepted, f"{what} {split} data ({source})")
            data = check_rows(data, columns, f"{what} {split} data ({source})", args.bad_rows)
        checked.append(data)
    if not len(checked[0]):  # TRL would stop deep inside its data loader (StopIteration)
        dropped = " (bad_rows: drop dropped every row)" if args.bad_rows == "drop" else ""
        raise DataError(f"{what} train data ({source}): no row left to train on{dropped}")
    return checked[0], checked[1]


def check_pairs(data: Dataset, what: str) -> None:
    """Preference rows whose chosen equals their rejected teach nothing (DPO's loss is log 2 whatever the
    weights): a DataError when every row is one, a warning with their count when some are."""
    same = sum(row["chosen"] == row["rejected"] for row in data.select_columns(["chosen", "rejected"]))
    if same == len(data):
        raise DataError(f"{what}: chosen equals rejected in all {same} rows: nothing to learn from these pairs")
    if same:
        logger.warning("%s: chosen equals rejected in %d of %d rows (they teach nothing)", what, same, len(data))


def check_chat_template(model: str, data: Dataset, key: str = "model_name_or_path", trust_remote_code: bool = False):
    """Conversational data (lists of messages) needs the model's chat template: a DataError naming the model
    and the way out if it has none (text data trains without one)."""
    from transformers import AutoTokenizer

    first = data[0] if len(data) else {}
    if not any(isinstance(v, list) and v and isinstance(v[0], dict) for v in first.values()):
        return
    tokenizer = AutoTokenizer.from_pretrained(model, trust_remote_code=trust_remote_code)
    if tokenizer.chat_template is None:
        raise DataError(
            f"{key} {model!r} has no chat template, but the data is conversational (lists of messages): set a "
            "chat_template in its tokenizer_config.json, or give the data as text (prompt/completion strings)"
        )


def _empty(value) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list):
        return not value or any(isinstance(m, dict) and _empty(m.get("content")) for m in value)
    return False


def check_rows(dataset: Dataset, columns: tuple[str, ...], what: str, policy: str = "stop") -> Dataset:
    """Every row must fill `columns` (no None, empty text or empty message): a DataError naming the first
    bad rows (1-based) and their fields, or, with policy "drop", the rows dropped and counted in the log."""
    bad: dict[int, str] = {}
    for i, row in enumerate(dataset.select_columns(list(columns))):
        empty = [c for c in columns if _empty(row[c])]
        if empty:
            bad[i] = "/".join(empty)
    if not bad:
        return dataset
    shown = ", ".join(f"row {i + 1} ({fields})" for i, fields in list(bad.items())[:5])
    more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
    if policy == "stop":
        raise DataError(
            f"{what}: {len(bad)} row(s) with a missing or empty field: {shown}{more}; fix them, or set "
            "bad_rows: drop to train without them"
        )
    logger.warning(
        "%s: dropped %d of %d rows with a missing or empty field: %s%s", what, len(bad), len(dataset), shown, more
    )
    return dataset.select([i for i in range(len(dataset)) if i not in bad])


def check_columns(dataset: Dataset, accepted: tuple[tuple[str, ...], ...], what: str) -> tuple[str, ...]:
    """The first of the `accepted` column sets `dataset` has; a DataError naming the missing columns if none."""
    have = set(dataset.column_names)
    for cols in accepted:
        if set(cols) <= have:
            return cols
    closest = min(accepted, key=lambda cols: len(set(cols) - have))
    missing = [c for c in closest if c not in have]
    options = " or ".join("+".join(cols) for cols in accepted)
    raise DataError(
        f"{what}: missing column(s) {missing} (needs {options}, or prompt_column/completion_column naming the "
        f"columns to read as them; it has {sorted(have)})"
    )
