"""Each bad input, through every command that accepts it: exit status 2, one line naming the culprit, no
traceback, and the output left as it was (found before any model is trained, loaded or generated from)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.guide.test_formats import without_template
from w2s.guide.models import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bad(world_paths, tmp_path_factory):
    """The bad inputs: models, prompt files, data, and a file where an output folder should go."""
    root = tmp_path_factory.mktemp("bad")
    weak = Path(resolve_model_path("tiny:weak"))
    pickled = root / "pickle-only"  # weights as a pickle only: w2s never unpickles them
    shutil.copytree(weak, pickled, ignore=shutil.ignore_patterns("*.safetensors"))
    torch.save(load_file(weak / "model.safetensors"), pickled / "pytorch_model.bin")
    custom = root / "custom-code"  # a model type transformers does not know, with code of its own
    shutil.copytree(weak, custom)
    config = json.loads((custom / "config.json").read_text())
    config |= {"model_type": "w2s_custom", "auto_map": {"AutoConfig": "configuration_custom.CustomConfig"}}
    (custom / "config.json").write_text(json.dumps(config))
    blocked = str(root / "blocked")
    Path(blocked).write_text("")  # a file where the output's folder should be
    long_prompt = "the film was good and the songs were fun . " * 60  # ~600 tokens, the models take 128
    files = {
        "blank.json": [{"instruction": "the film"}, {"instruction": "   "}],
        "numbers.json": [1, 2],
        "long.json": [{"instruction": "the film"}, {"instruction": long_prompt}],
        "long.jsonl": [{"prompt": "the film"}, {"prompt": long_prompt}],
        "reference.json": [{"instruction": "another instruction", "output": "it was good ."}],
        "dpo_chat.jsonl": [
            {
                "prompt": [{"role": "user", "content": "the film"}],
                "chosen": [{"role": "assistant", "content": "ok ."}],
                "rejected": [{"role": "assistant", "content": "it were ."}],
            }
        ],
        "dpo.jsonl": [
            {"prompt": "the film", "chosen": "it was good .", "rejected": "it were bad ."},
            {"prompt": "the songs", "chosen": "they were fun ."},
        ],
    }
    for name, records in files.items():
        text = "\n".join(map(json.dumps, records)) if name.endswith(".jsonl") else json.dumps(records)
        (root / name).write_text(text)
    return {
        "root": root, "pickled": str(pickled), "custom": str(custom), "blocked": blocked,
        "no_template": without_template("tiny:weak", root), **{k.replace(".", "_"): str(root / k) for k in files},
    }  # fmt: skip


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def check_failure(result: subprocess.CompletedProcess, culprit: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in lines if ": error: " in line]
    assert len(errors) == 1 and culprit in errors[0], lines[-5:]


GENERATE = [
    ("blank instruction", ["--prompts", "{blank_json}"], "item 2: the instruction is empty"),
    ("not records", ["--prompts", "{numbers_json}"], "item 1: not an object with an 'instruction' field"),
    ("prompt past the context", ["--prompts", "{long_json}"], "prompt 2 is"),
    ("two vocabularies under EFT", ["--decoder", "eft", "--tuned", "tiny:guide_b", "--untuned", "tiny:weak_b"],
     "one shared vocabulary"),
    ("no chat template", ["--strong_model", "{no_template}"], "strong_prompt_format: raw"),
    ("pickle-only weights", ["--strong_model", "{pickled}"], "no safetensors weights (only pickle files"),
    ("custom code", ["--strong_model", "{custom}"], "needs its own code"),
    ("output under a file", ["--output", "{blocked}/out/model_outputs.json"], "cannot write"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "flags", "culprit"), GENERATE, ids=[c[0] for c in GENERATE])
def test_w2s_generate(bad, tmp_path, case, flags, culprit):
    flags = [f.format(**{k: v for k, v in bad.items() if isinstance(v, str)}) for f in flags]
    out = tmp_path / "out" / "outputs.json"
    if "--output" not in flags:
        flags += ["--output", str(out)]
    args = ["-m", "w2s.cli", "generate", "--config", str(ROOT / "recipes/tiny/guide.yaml"), "--num_prompts", "2",
            "--max_new_tokens", "4", *flags]  # fmt: skip
    check_failure(run(args, tmp_path), culprit)
    assert not (tmp_path / "out").exists()


def fill(value, bad: dict):
    """`value` with every "{name}" in its strings replaced by that bad input's path."""
    if isinstance(value, str):
        return value.format(**{k: v for k, v in bad.items() if isinstance(v, str)})
    if isinstance(value, dict):
        return {k: fill(v, bad) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, bad) for v in value]
    return value


def eval_recipe(tmp_path: Path, bad: dict, **change) -> Path:
    settings = {
        "instructions": "tiny:test", "num_instructions": 4, "reference": "base", "judge": "gold",
        "output_dir": str(tmp_path / "out"),
        "systems": [
            {"name": "base", "guide": {"strong_model": "tiny:strong", "max_new_tokens": 4}},
            {"name": "other", "guide": {"strong_model": "tiny:weak", "max_new_tokens": 4}},
        ],
    }  # fmt: skip
    settings |= change
    path = tmp_path / "eval.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


EVAL = [
    ("blank instruction", {"instructions": "{blank_json}", "num_instructions": None}, "record 2: the instruction is empty"),
    ("prompt past the context", {"instructions": "{long_json}", "num_instructions": None}, "prompt 2 is"),
    ("pickle-only weights (second system)", {"systems": [{"name": "base", "guide": {"strong_model": "tiny:strong"}},
                                                          {"name": "bad", "guide": {"strong_model": "{pickled}"}}]},
     "system 'bad'"),
    ("no chat template", {"systems": [{"name": "base", "guide": {"strong_model": "{no_template}"}}]},
     "strong_prompt_format: raw"),
    ("reference that does not pair", {"reference": "{reference_json}"}, "no reference output for instruction 1"),
    ("output under a file", {"output_dir": "{blocked}/out"}, "cannot write"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "culprit"), EVAL, ids=[c[0] for c in EVAL])
def test_w2s_eval(bad, tmp_path, case, change, culprit):
    recipe = eval_recipe(tmp_path, bad, **fill(change, bad))
    check_failure(run(["-m", "w2s.cli", "eval", "--config", str(recipe), "--quiet"], tmp_path), culprit)
    assert not (tmp_path / "out").exists()


DATA = [
    ("prompt past the context", ["--prompt_source", "{long_jsonl}", "--num_prompts", "2"], "prompt 2 is"),
    ("no chat template", ["--generators", '[{{name: g, model: "{no_template}"}}]'], "generators[0] (g).prompt_format"),
    ("pickle-only weights", ["--generators", '[{{name: g, model: "{pickled}"}}]'], "no safetensors weights"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "flags", "culprit"), DATA, ids=[c[0] for c in DATA])
def test_w2s_data_build(bad, tmp_path, case, flags, culprit):
    flags = [f.format(**{k: v for k, v in bad.items() if isinstance(v, str)}) for f in flags]
    args = ["-m", "w2s.cli", "data", "build", "--config", str(ROOT / "recipes/tiny/data.yaml"), "--num_prompts", "8",
            "--output_dir", str(tmp_path / "out"), *flags]  # fmt: skip
    check_failure(run(args, tmp_path), culprit)
    assert not (tmp_path / "out").exists()


def test_w2s_data_build_into_a_file(bad, tmp_path):
    args = ["-m", "w2s.cli", "data", "build", "--config", str(ROOT / "recipes/tiny/data.yaml"),
            "--output_dir", f"{bad['blocked']}/out"]  # fmt: skip
    check_failure(run(args, tmp_path), "cannot write")


TRAIN = [
    ("a record without 'rejected'", ["--dataset_name", "{dpo_jsonl}"], "row 2 (rejected)"),
    ("pickle-only weights", ["--model_name_or_path", "{pickled}"], "no safetensors weights"),
    ("no chat template, conversational data", ["--model_name_or_path", "{no_template}", "--dataset_name",
                                               "{dpo_chat_jsonl}"], "has no chat template"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "flags", "culprit"), TRAIN, ids=[c[0] for c in TRAIN])
def test_train_dpo(bad, tmp_path, case, flags, culprit):
    flags = [f.format(**{k: v for k, v in bad.items() if isinstance(v, str)}) for f in flags]
    defaults = {"--dataset_name": bad["dpo_jsonl"], "--model_name_or_path": "tiny:weak"}
    for key, value in defaults.items():
        if key not in flags:
            flags += [key, value]
    args = [str(ROOT / "train/dpo.py"), "--config", str(ROOT / "recipes/tiny/dpo.yaml"),
            "--output_dir", str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none", *flags]  # fmt: skip
    check_failure(run(args, tmp_path), culprit)
    assert not (tmp_path / "out").exists()


def test_debug_shows_the_traceback(bad, tmp_path):
    args = ["-m", "w2s.cli", "generate", "--config", str(ROOT / "recipes/tiny/guide.yaml"), "--prompts",
            bad["numbers_json"], "--debug"]  # fmt: skip
    result = run(args, tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "GuideError" in result.stderr
