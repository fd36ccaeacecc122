"""Instruction sets: AlpacaEval JSON/JSONL files, folders, hub ids, and the tiny world's held-out prompts.

Every source becomes a list of :class:`Instruction` (the instruction, its optional
reference output and the sub-dataset it came from), in the source's order, each
instruction text once: alpaca_eval pairs a system's outputs with the reference's by
instruction text, so two records with one text would pair each output with both.
Later copies are dropped and counted (`Instruction.duplicates`), with a warning.

Also here: the instruction difficulties a user gives the LC win rate (`load_difficulty`).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

from w2s.data.world import world_prompts
from w2s.guide.commands import UserError

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
TINY_SIZE = 300  # instructions in the tiny world's set unless num_instructions asks for fewer or more


class InstructionSetError(UserError, ValueError):
    """An instruction set that cannot be read: missing file, bad JSON, missing field."""


@dataclass
class Instruction:
    """One instruction; `reference` is the set's own reference output when it has one."""

    instruction: str
    reference: str | None = None
    dataset: str = "unknown"
    position: int = 0  # place in the source, from 0
    duplicates: int = 0  # later records of the source with the same instruction (dropped)


def _from_records(records, where: str | list[str], default_dataset: str) -> list[Instruction]:
    """Instructions from records; `where` names record i in errors (a list: one name per record)."""
    out = []
    for i, rec in enumerate(records):
        at = where[i] if isinstance(where, list) else f"{where} {i + 1}"
        if not isinstance(rec, dict):
            raise InstructionSetError(f"{at}: expected an object with an 'instruction' field, got {type(rec).__name__}")
        if "instruction" not in rec:
            raise InstructionSetError(f"{at}: missing field 'instruction' (fields: {sorted(rec)})")
        if not isinstance(rec["instruction"], str):
            raise InstructionSetError(f"{at}: field 'instruction' must be a string")
        if not rec["instruction"].strip():
            raise InstructionSetError(f"{at}: the instruction is empty")
        ref = rec.get("output")
        if ref is not None and not isinstance(ref, str):
            raise InstructionSetError(f"{at}: field 'output' must be a string")
        out.append(Instruction(rec["instruction"], ref, str(rec.get("dataset") or default_dataset)))
    return out


def read_json_records(path: Path) -> tuple[list, list[str]]:
    """The records of a JSON list or JSONL file, and each record's place for errors ("<file> line 7" for
    JSONL, counting blank lines; "<file> record 3" in a JSON list). A UTF-8 byte-order mark is not text."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix == ".jsonl":
        records, places = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise InstructionSetError(f"{path} line {n}: not valid JSON ({e.msg})") from e
            places.append(f"{path} line {n}")
        return records, places
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise InstructionSetError(f"{path} line {e.lineno} column {e.colno}: not valid JSON ({e.msg})") from e
    if not isinstance(data, list):
        raise InstructionSetError(
            f"{path}: expected a JSON list of records (AlpacaEval format), got {type(data).__name__}"
        )
    return data, [f"{path} record {i}" for i in range(1, len(data) + 1)]


def _from_file(path: Path) -> list[Instruction]:
    records, where = read_json_records(path)
    return _from_records(records, where, path.stem)


def _from_dataset(ds, where: str) -> list[Instruction]:
    if "instruction" not in ds.column_names:
        raise InstructionSetError(f"{where}: no 'instruction' column (columns: {ds.column_names})")
    return _from_records(ds, f"{where} row", where)


def _from_folder(path: Path, split: str) -> list[Instruction]:
    if (path / "dataset_dict.json").is_file() or (path / "dataset_info.json").is_file():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise InstructionSetError(f"{path}: no split {split!r} (splits: {sorted(ds)}); set instructions_split")
            ds = ds[split]
        return _from_dataset(ds, str(path))
    files = sorted([*path.glob("*.json"), *path.glob("*.jsonl")])
    if not files:
        raise InstructionSetError(f"{path}: neither a save_to_disk data set nor a folder of JSON/JSONL files")
    return [ins for f in files for ins in _from_file(f)]


def load_instructions(
    source: str, *, split: str = "eval", subset: str | None = None, limit: int | None = None
) -> list[Instruction]:
    """The instructions of `source`: a JSON/JSONL file, a folder, a hub id, or `tiny:<split>` (the tiny world)."""
    if source.startswith(TINY_PREFIX):
        world_split = source[len(TINY_PREFIX) :] or "test"
        prompts = world_prompts(world_split, limit or TINY_SIZE)
        return _first_of_each([Instruction(p, None, f"tiny-{world_split}") for p in prompts], source)
    path = Path(source).expanduser()
    if path.is_file():
        items = _from_file(path)
    elif path.is_dir():
        items = _from_folder(path, split)
    elif source.startswith((".", "/", "~")) or source.endswith((".json", ".jsonl")):
        raise InstructionSetError(f"instruction set {source!r}: no such file or folder")
    else:
        from datasets import load_dataset

        try:
            ds = load_dataset(source, subset, split=split)
        except Exception as e:
            raise InstructionSetError(
                f"instruction set {source!r}: not a local file or folder, and the hub did not serve it "
                f"(subset {subset!r}, split {split!r}): {e.__class__.__name__}: {e}"
            ) from e
        items = _from_dataset(ds, source)
    if not items:
        raise InstructionSetError(f"instruction set {source!r} is empty")
    return _first_of_each(items[:limit] if limit else items, source)


def _first_of_each(items: list[Instruction], source: str) -> list[Instruction]:
    """The first record of each instruction text, with its place in the source and its later copies counted."""
    kept: dict[str, Instruction] = {}
    for position, ins in enumerate(items):
        ins.position = position
        if ins.instruction in kept:
            kept[ins.instruction].duplicates += 1
        else:
            kept[ins.instruction] = ins
    if len(kept) < len(items):
        first = next(ins for ins in kept.values() if ins.duplicates)
        logger.warning(
            "instruction set %r: %d duplicate instruction(s) dropped, the first record of each kept (e.g. record %d, "
            "%r, repeated %d time(s))",
            source, len(items) - len(kept), first.position + 1, first.instruction[:60], first.duplicates,
        )  # fmt: skip
    return list(kept.values())


DIFFICULTY = "instruction_difficulty"


def _difficulty_records(path: Path) -> tuple[list[dict], list[str]]:
    if path.suffix in (".json", ".jsonl"):
        records, places = read_json_records(path)
        for place, rec in zip(places, records, strict=True):
            if not isinstance(rec, dict):
                raise InstructionSetError(f"{place}: expected an object with 'instruction' and {DIFFICULTY!r}")
        return records, places
    with path.open(newline="", encoding="utf-8-sig") as f:  # -sig: a spreadsheet's byte-order mark is no field
        rows = list(csv.DictReader(f))
    return rows, [f"{path} row {n}" for n in range(1, len(rows) + 1)]  # rows, not lines: texts may hold newlines


def load_difficulty(path: str | Path, instructions: list[Instruction]) -> list[float]:
    """Each instruction's difficulty for the LC win rate, read from `path`: a CSV (or JSON/JSONL records) with the
    fields `instruction` and `instruction_difficulty`, or AlpacaEval's own `instruction_difficulty.csv`, whose
    first column `index` is each instruction's place in its eval set (matched to `Instruction.position`)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InstructionSetError(f"lc_difficulty {str(path)!r}: no such file")
    records, places = _difficulty_records(path)
    if not records:
        raise InstructionSetError(f"{path}: no instruction difficulties")
    fields = list(records[0])
    if DIFFICULTY not in fields:
        raise InstructionSetError(f"{path}: no field {DIFFICULTY!r} (fields: {fields})")
    by_position = "instruction" not in fields
    if by_position and fields[0] not in ("index", ""):
        raise InstructionSetError(
            f"{path}: needs an 'instruction' field, or AlpacaEval's first column 'index' (fields: {fields})"
        )
    key_field = fields[0] if by_position else "instruction"
    values: dict = {}
    for place, rec in zip(places, records, strict=True):
        key, value = rec.get(key_field), rec.get(DIFFICULTY)
        try:
            key, value = (int(key) if by_position else key), float(value)
        except (TypeError, ValueError):
            value = math.nan
        if not isinstance(key, (str, int)) or not math.isfinite(value):
            raise InstructionSetError(
                f"{place}: {key_field} {rec.get(key_field)!r} with {DIFFICULTY} {rec.get(DIFFICULTY)!r}: expected "
                f"{'an integer' if by_position else 'a text'} and a number"
            )
        if key in values:
            raise InstructionSetError(f"{place}: {key_field} {key!r} is given twice")
        values[key] = value
    keys = [ins.position if by_position else ins.instruction for ins in instructions]
    missing = [n for n, k in enumerate(keys) if k not in values]
    if missing:
        n = missing[0]
        raise InstructionSetError(
            f"{path}: no difficulty for instruction {n + 1} ({instructions[n].instruction[:60]!r}"
            + (f", index {keys[n]}" if by_position else "")
            + f"); {len(missing)} of the {len(keys)} instructions have none"
        )
    return [values[k] for k in keys]
