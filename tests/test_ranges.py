"""Every numeric key of every recipe kind declares its allowed range (guide/ranges.py), the recipe readers
refuse a value outside it naming the key, and docs/recipes.md lists them all.

`python -m tests.test_ranges` rewrites the table of docs/recipes.md from the dataclasses."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
import yaml

from w2s.data.binarize import BinarizeConfig
from w2s.data.recipe import DataRecipe, GeneratorConfig, JudgeConfig, MatchConfig, recipe_from_dict
from w2s.eval.config import EvalConfig, EvalConfigError, load_config
from w2s.guide.commands import UserError
from w2s.guide.config import GuideConfig
from w2s.guide.decoders import BUILTIN_MODULES, registered
from w2s.guide.ranges import field_range, range_rows
from w2s.train.data import TrainScriptArguments
from w2s.train.pretrain import PretrainArguments
from w2s.train.recipes import DatasetConfig, parse_recipe

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "recipes.md"
BEGIN, END = "<!-- ranges: begin (python -m tests.test_ranges) -->", "<!-- ranges: end -->"
SYSTEMS = [{"name": "base", "guide": {"strong_model": "tiny:strong"}}]
GENERATOR, JUDGE = {"name": "g", "model": "tiny:weak"}, {"name": "j", "kind": "rule"}


def builtin_decoders() -> dict[str, type]:
    """w2s's own decoders (not those other tests register)."""
    own = [(name, cls) for name, cls in registered().items() if cls.__module__ in BUILTIN_MODULES]
    # module by module, each in its definition order: registration order follows whichever module a process
    # imported first (w2s calibrate imports guide/draft.py before the registry loads the rest)
    return dict(sorted(own, key=lambda item: BUILTIN_MODULES.index(item[1].__module__)))


def sections() -> list[tuple[str, type]]:
    """(where the keys are written, dataclass) of every recipe kind, each decoder's own keys apart."""
    return [
        ("guide recipe (`w2s generate`, each eval system's `guide`)", GuideConfig),
        *((f"guide recipe, `decoder: {name}`", cls) for name, cls in builtin_decoders().items()),
        ("eval recipe (`w2s eval`)", EvalConfig),
        ("data recipe (`w2s data build`)", DataRecipe),
        ("data recipe, each of `generators`", GeneratorConfig),
        ("data recipe, each of `judges`", JudgeConfig),
        ("data recipe, each of `match` (matched pairing's control judges)", MatchConfig),
        ("`w2s data binarize` flags", BinarizeConfig),
        ("training recipes (`train/sft.py`, `dpo.py`, `distill.py`): the scripts' own keys", TrainScriptArguments),
        ("training recipes, each of `datasets`", DatasetConfig),
        ("tiny-world pretraining recipes (`train/pretrain.py`): its own keys", PretrainArguments),
    ]


def range_table() -> str:
    out = []
    for title, cls in sections():
        rows = range_rows(cls)
        if not rows:
            continue
        out += [f"**{title}**", "", "| key | type | default | allowed |", "| --- | --- | --- | --- |"]
        for key, tp, default, allowed in rows:  # a | inside a table cell, even in code, ends the cell
            out.append(f"| `{key}` | `{tp.replace('|', chr(92) + '|')}` | `{default}` | {allowed} |")
        out.append("")
    return "\n".join(out)


def numeric_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of `cls` itself (not of a library's base class) typed int or float (or either | None)."""
    own, hints = vars(cls).get("__annotations__", {}), typing.get_type_hints(cls)
    numeric = []
    for f in dataclasses.fields(cls):
        options = set(typing.get_args(hints[f.name]) or (hints[f.name],)) - {type(None)}
        if f.name in own and options and options <= {int, float}:
            numeric.append(f)
    return numeric


def test_every_numeric_key_declares_its_range():
    missing = [f"{cls.__name__}.{f.name}" for _, cls in sections() for f in numeric_fields(cls) if not field_range(f)]
    assert missing == []


def test_the_docs_table_is_the_dataclasses_ranges():
    text = DOC.read_text()
    assert text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip() == range_table().strip(), (
        "docs/recipes.md is out of date: python -m tests.test_ranges"
    )


def read_through_its_reader(cls: type, key: str, value, tmp_path: Path) -> None:
    """Reads a recipe that sets `key` to `value` through the reader of `cls`'s recipe kind."""
    if cls is GuideConfig or cls in builtin_decoders().values():
        decoder = "sample" if cls is GuideConfig else cls.name
        GuideConfig.from_dict({"decoder": decoder, key: value}, "guide.yaml")
    elif cls is EvalConfig:
        path = tmp_path / "eval.yaml"
        path.write_text(yaml.safe_dump({"systems": SYSTEMS, key: value}))
        load_config(path)
    elif cls in (DataRecipe, GeneratorConfig, JudgeConfig, MatchConfig):
        values = {"generators": [GENERATOR], "judges": [JUDGE]}
        if cls is DataRecipe:
            values[key] = value
        elif cls is MatchConfig:  # a control beside the judge pairs are made on
            values["judges"] = [JUDGE, {**JUDGE, "name": "control"}]
            values["match"] = [{"judge": "control", key: value}]
        else:
            place = "generators" if cls is GeneratorConfig else "judges"
            values[place] = [{**values[place][0], key: value}]
        recipe_from_dict(values, "data.yaml")
    elif cls is BinarizeConfig:
        BinarizeConfig(**{key: value})
    else:
        from trl import SFTConfig

        from w2s.train.dpo import DATACLASSES

        pretrain = cls is PretrainArguments
        values = yaml.safe_load((ROOT / "recipes/tiny" / ("base_weak.yaml" if pretrain else "dpo.yaml")).read_text())
        values |= {"datasets": [{"path": "x.jsonl", key: value}]} if cls is DatasetConfig else {key: value}
        path = tmp_path / "train.yaml"
        path.write_text(yaml.safe_dump(values))
        types = (PretrainArguments, SFTConfig) if pretrain else DATACLASSES
        parse_recipe(types, ["--config", str(path), "--output_dir", str(tmp_path / "out"), "--report_to", "none"])


CASES = [
    pytest.param(cls, f.name, value, id=f"{cls.__name__}.{f.name}={value}")
    for _, cls in sections()
    for f in dataclasses.fields(cls)
    if field_range(f) is not None
    for value in field_range(f).outside()
]


@pytest.mark.parametrize(("cls", "key", "value"), CASES)
def test_a_value_outside_its_range_is_refused_naming_the_key(cls, key, value, tmp_path):
    with pytest.raises((UserError, EvalConfigError)) as e:
        read_through_its_reader(cls, key, value, tmp_path)
    assert f"{key} must be {field_range(next(f for f in dataclasses.fields(cls) if f.name == key))}" in str(e.value)
    assert f"got {value!r}" in str(e.value) or f"got {float(value)!r}" in str(e.value)


def test_every_bounded_range_is_tried():
    assert len(CASES) >= 40  # the walk above found the keys (a refactor that hid them would try nothing)


if __name__ == "__main__":
    text = DOC.read_text()
    DOC.write_text(text[: text.index(BEGIN) + len(BEGIN)] + "\n\n" + range_table() + "\n" + text[text.index(END) :])
    print(f"wrote {DOC}")
