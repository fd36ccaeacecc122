"""A decoder from an outside package, found by the entry-point group `w2s.decoders`, works by name in
`w2s generate`, `w2s eval` and `w2s data build` (kind guide), with its cost filled in by the decode context."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.state import track_states

PROMPTS = world_prompts("test", 6)

# A package w2s has never seen: one decoder with one knob of its own and a model role (the pilot).
PACKAGE = '''
"""Longer-of-two: one response from the strong model, one from the pilot; the one with more words wins."""

from dataclasses import dataclass

from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.types import Output


@register_decoder("longer")
@dataclass
class LongerOfTwo(Decoder):
    min_words: int = 1  # a response with fewer words never wins

    needs = ("pilot",)

    def check(self):
        if self.min_words < 0:
            raise ValueError(f"min_words must be >= 0, got {self.min_words}")

    def run(self, ctx):
        strong, pilot = ctx.start(), ctx.start("pilot")
        strong.sample(ctx.max_new_tokens)
        pilot.sample(ctx.max_new_tokens)
        out = []
        for a, b in zip(strong.rows, pilot.rows):
            ta, tb = strong.text(a), pilot.text(b)
            wa, wb = len(ta.split()), len(tb.split())
            take_pilot = wb >= self.min_words and (wb > wa or wa < self.min_words)
            out.append(Output(tb, b.stop, float(wb)) if take_pilot else Output(ta, a.stop, float(wa)))
        return out
'''

GUIDE = {"strong_model": "tiny:strong", "pilot": "tiny:weak", "decoder": "longer", "min_words": 3,
         "max_new_tokens": 24, "temperature": 1.0, "top_k": 0, "seed": 0}  # fmt: skip


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder holding the package and its distribution metadata, as `pip install` leaves them."""
    site = tmp_path_factory.mktemp("site")
    (site / "w2s_outside").mkdir()
    (site / "w2s_outside" / "__init__.py").write_text(PACKAGE)
    meta = site / "w2s_outside-0.1.dist-info"
    meta.mkdir()
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: w2s-outside\nVersion: 0.1\n")
    (meta / "entry_points.txt").write_text("[w2s.decoders]\nlonger = w2s_outside\n")
    return site


def w2s(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, "-m", "w2s.cli", *args], capture_output=True, text=True, env=env)


def write_yaml(path: Path, values: dict) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


@pytest.mark.slow
def test_an_outside_decoder_runs_from_generate_eval_and_data_build(outside, tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": p} for p in PROMPTS]))

    # w2s generate, in two batch sizes: the same outputs and the same cost per item
    runs = []
    for size in (2, 6):
        out = tmp_path / f"out{size}.json"
        recipe = write_yaml(tmp_path / f"guide{size}.yaml", {**GUIDE, "prompts": str(prompts), "output": str(out),
                                                             "batch_size": size})  # fmt: skip
        run = w2s(outside, "generate", "--config", str(recipe))
        assert run.returncode == 0, run.stderr
        details = json.loads(out.with_name(out.stem + ".details.json").read_text())["items"]
        runs.append((json.loads(out.read_text()), details))
    (items, details), (items6, details6) = runs
    assert [i["output"] for i in items] == [i["output"] for i in items6]
    assert all(i["generator"] == "longer" for i in items)
    assert [d["tokens"] for d in details] == [d["tokens"] for d in details6]
    assert all(set(d["tokens"]) == {"strong", "pilot"} and min(d["tokens"].values()) > 0 for d in details)
    assert len({d["tokens"]["strong"] for d in details}) > 1  # each item's own, not the batch's total
    for d in details:  # the context timed each batch and gave each item its share
        assert d["batch_seconds"] > 0 and d["seconds"] == pytest.approx(d["batch_seconds"] / 2)
    assert [d["score"] for d in details] == [len(i["output"].split()) for i in items]

    # a bad value of its knob: one line, exit 2, nothing written
    bad = w2s(outside, "generate", "--config", str(tmp_path / "guide2.yaml"), "--min_words", "-1", "--output",
              str(tmp_path / "bad.json"))  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [bad.stderr.strip()]
    assert "decoder longer: min_words must be >= 0, got -1" in bad.stderr
    assert not list(tmp_path.glob("bad*"))

    # w2s eval: the same system beside the base, the same outputs as w2s generate wrote
    eval_recipe = write_yaml(tmp_path / "eval.yaml", {
        "instructions": "tiny:test", "num_instructions": len(PROMPTS), "reference": "base", "judge": "gold",
        "batch_size": 4, "bootstrap_samples": 50, "output_dir": str(tmp_path / "eval"),
        "systems": [{"name": "base", "guide": {**GUIDE, "decoder": "sample"}}, {"name": "longer", "guide": GUIDE}],
    })  # fmt: skip
    run = w2s(outside, "eval", "--config", str(eval_recipe))
    assert run.returncode == 0, run.stderr
    evaluated = json.loads((tmp_path / "eval" / "longer" / "model_outputs.json").read_text())
    assert [o["output"] for o in evaluated] == [i["output"] for i in items]

    # w2s data build: the decoder as a generator (kind guide)
    data_recipe = write_yaml(tmp_path / "data.yaml", {
        "seed": 0, "prompt_source": "tiny:train", "prompt_field": "prompt", "num_prompts": 6, "shard_size": 3,
        "generators": [{"name": "longer", "kind": "guide", "num_samples": 2, "guide": GUIDE}],
        "judges": [{"name": "gold", "kind": "rule", "rule": "tiny_gold"}],
        "output_dir": str(tmp_path / "data"),
    })  # fmt: skip
    run = w2s(outside, "data", "build", "--config", str(data_recipe))
    assert run.returncode == 0, run.stderr
    card = json.loads((tmp_path / "data" / "card.json").read_text())
    assert card["counts"]["responses"]["generated"] == 2 * card["counts"]["prompts"]["kept"] > 0


def test_an_outside_decoders_tokens_per_item_sum_to_each_models_total(outside, monkeypatch):
    monkeypatch.syspath_prepend(str(outside))
    importlib.import_module("w2s_outside")  # registers "longer", as the entry point does in a command
    guide = Guide(GuideConfig.from_dict(dict(GUIDE)))
    with track_states() as states:
        batch = guide.decode(PROMPTS)
    for name, model in (("strong", guide.engine.model), ("pilot", guide.pilot[0])):
        assert sum(g.tokens[name] for g in batch) == sum(s.tokens_run for s in states if s.model is model) > 0


def test_without_the_package_the_name_is_unknown(tmp_path):
    recipe = write_yaml(tmp_path / "guide.yaml", GUIDE)
    run = subprocess.run(
        [sys.executable, "-m", "w2s.cli", "generate", "--config", str(recipe)], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "decoder 'longer': choose one of" in run.stderr and "w2s.decoders" in run.stderr
    assert run.stderr.count("\n") == 1  # the decoder's name is the error, not the keys it would have read
