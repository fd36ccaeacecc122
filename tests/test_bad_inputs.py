"""Each bad input, through every command that accepts it: exit status 2, one line naming the culprit, no
traceback, and the output left as it was (found before any model is trained, loaded or generated from)."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
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
        "dpo_same.jsonl": [
            {"prompt": "the film", "chosen": "it was good .", "rejected": "it was good ."},
            {"prompt": "the songs", "chosen": "they were fun .", "rejected": "they were fun ."},
        ],
        "sft_empty.jsonl": [{"prompt": "the film", "completion": ""}, {"prompt": "the songs", "completion": " "}],
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
    ("no prompts", ["--num_prompts", "0"], "num_prompts must be >= 1, got 0"),
    ("a negative number of prompts", ["--num_prompts", "-1"], "num_prompts must be >= 1, got -1"),
    ("batches of none", ["--batch_size", "0"], "batch_size must be >= 1, got 0"),
    ("batches of a negative size", ["--batch_size", "-1"], "batch_size must be >= 1, got -1"),
    ("no new tokens", ["--max_new_tokens", "0"], "max_new_tokens must be >= 1, got 0"),
    ("no beams", ["--decoder", "cbs", "--width", "0"], "decoder cbs: width must be >= 1, got 0"),
    ("CBS at temperature 0", ["--decoder", "cbs", "--temperature", "0"], "temperature 0 with decoder cbs"),
    ("best-of-N at temperature 0", ["--decoder", "bon", "--temperature", "0"], "temperature 0 with decoder bon"),
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
    ("no instructions", {"num_instructions": 0}, "num_instructions must be >= 1, got 0"),
    ("batches of a negative size", {"batch_size": -1}, "batch_size must be >= 1, got -1"),
    ("judging batches of none", {"judge_batch_size": 0}, "judge_batch_size must be >= 1, got 0"),
    ("a system with no new tokens", {"systems": [{"name": "base", "guide": {"strong_model": "tiny:strong",
                                                                          "max_new_tokens": 0}}]},
     "max_new_tokens must be >= 1, got 0"),
    ("a system's CBS at temperature 0", {"systems": [{"name": "base", "guide": {
        "strong_model": "tiny:strong", "tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs",
        "temperature": 0}}]}, "temperature 0 with decoder cbs"),
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
    ("no prompts", ["--num_prompts", "0"], "num_prompts must be >= 1, got 0"),
    ("shards of none", ["--shard_size", "0"], "shard_size must be >= 1, got 0"),
    ("no samples", ["--generators", "[{{name: g, model: tiny:weak, num_samples: 0}}]"],
     "generators[0].num_samples must be >= 1, got 0"),
    ("no new tokens", ["--generators", "[{{name: g, model: tiny:weak, max_new_tokens: -1}}]"],
     "generators[0].max_new_tokens must be >= 1, got -1"),
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
    ("no training rows", ["--max_train_samples", "0"], "max_train_samples must be >= 1, got 0"),
    ("every chosen equals its rejected", ["--dataset_name", "{dpo_same_jsonl}"], "chosen equals rejected in all 2 rows"),
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


def test_train_dpo_mixture_with_a_share_of_none(bad, tmp_path):
    recipe = yaml.safe_load((ROOT / "recipes/tiny/dpo.yaml").read_text())
    del recipe["dataset_name"]
    recipe["datasets"] = [{"path": bad["dpo_jsonl"]}, {"path": bad["dpo_same_jsonl"], "fraction": 0}]
    path = tmp_path / "dpo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    args = [str(ROOT / "train/dpo.py"), "--config", str(path), "--output_dir", str(tmp_path / "out")]
    check_failure(run(args, tmp_path), "datasets[1].fraction must be > 0, got 0")
    assert not (tmp_path / "out").exists()


def test_train_sft_with_every_row_dropped(bad, tmp_path):
    args = [str(ROOT / "train/sft.py"), "--config", str(ROOT / "recipes/tiny/sft.yaml"), "--output_dir",
            str(tmp_path / "out"), "--max_steps", "1", "--report_to", "none", "--model_name_or_path", "tiny:weak",
            "--dataset_name", bad["sft_empty_jsonl"], "--completion_column", "completion", "--bad_rows", "drop"]  # fmt: skip
    check_failure(run(args, tmp_path), "no row left to train on (bad_rows: drop dropped every row)")
    assert not (tmp_path / "out").exists()


def written_twice(recipe: Path, key: str, folder: Path) -> tuple[Path, str]:
    """A copy of `recipe` with its top-level `key` written again at the end, and the error naming both lines."""
    lines = recipe.read_text().splitlines()
    first = next(n for n, line in enumerate(lines, 1) if line.startswith(f"{key}:"))
    path = folder / recipe.name
    path.write_text("\n".join([*lines, lines[first - 1]]) + "\n")
    return path, f"{path}: key {key!r} written twice (lines {first} and {len(lines) + 1})"


TWICE = [
    ("w2s generate", "guide.yaml", "decoder", ["-m", "w2s.cli", "generate"], ["--output", "{out}/outputs.json"]),
    ("w2s calibrate", "guide.yaml", "threshold", ["-m", "w2s.cli", "calibrate"], ["--json", "{out}/calibration.json"]),
    ("w2s eval", "eval.yaml", "num_instructions", ["-m", "w2s.cli", "eval"], ["--output_dir", "{out}"]),
    ("w2s data build", "data.yaml", "num_prompts", ["-m", "w2s.cli", "data", "build"], ["--output_dir", "{out}"]),
    ("train/dpo.py", "dpo.yaml", "beta", ["train/dpo.py"], ["--output_dir", "{out}"]),
    ("w2s train sft", "sft.yaml", "learning_rate", ["-m", "w2s.cli", "train", "sft"], ["--output_dir", "{out}"]),
    ("train/distill.py", "distill.yaml", "temperature", ["train/distill.py"], ["--output_dir", "{out}"]),
    ("train/pretrain.py", "base_weak.yaml", "hidden_size", ["train/pretrain.py"], ["--output_dir", "{out}"]),
]  # fmt: skip


@pytest.mark.parametrize(("command", "recipe", "key", "args", "output"), TWICE, ids=[c[0] for c in TWICE])
def test_a_key_written_twice(tmp_path, command, recipe, key, args, output):
    path, culprit = written_twice(ROOT / "recipes/tiny" / recipe, key, tmp_path)
    args = [str(ROOT / a) if a.endswith(".py") else a for a in args]
    output = [o.format(out=tmp_path / "out") for o in output]
    check_failure(run([*args, "--config", str(path), *output], tmp_path), culprit)
    assert not (tmp_path / "out").exists()


def test_a_key_written_twice_inside_one_eval_system(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"""output_dir: {tmp_path / "out"}
num_instructions: 2
systems:
  - name: cbs
    guide:
      strong_model: tiny:strong
      decoder: cbs
      max_new_tokens: 4
      decoder: bon
""")
    result = run(["-m", "w2s.cli", "eval", "--config", str(recipe)], tmp_path)
    check_failure(result, f"{recipe}: key 'decoder' written twice (lines 7 and 9)")
    assert not (tmp_path / "out").exists()


def test_a_file_saved_with_a_byte_order_mark_works(bad, tmp_path):
    """Prompt and instruction files as Windows editors and spreadsheets save them: the mark is not text."""
    rows = [{"instruction": "the film"}, {"instruction": "the songs"}]
    for name in ("bom.jsonl", "bom.json"):
        text = "\n".join(map(json.dumps, rows)) if name.endswith(".jsonl") else json.dumps(rows)
        (tmp_path / name).write_text(text, encoding="utf-8-sig")
    out = tmp_path / "out" / "outputs.json"
    args = ["-m", "w2s.cli", "generate", "--config", str(ROOT / "recipes/tiny/guide.yaml"), "--decoder", "sample",
            "--max_new_tokens", "4", "--prompts", str(tmp_path / "bom.jsonl"), "--output", str(out)]  # fmt: skip
    result = run(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert [o["instruction"] for o in json.loads(out.read_text())] == ["the film", "the songs"]
    recipe = eval_recipe(tmp_path, bad, instructions=str(tmp_path / "bom.json"), num_instructions=None)
    result = run(["-m", "w2s.cli", "eval", "--config", str(recipe), "--quiet"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = json.loads((tmp_path / "out" / "other" / "model_outputs.json").read_text())
    assert [o["instruction"] for o in outputs] == ["the film", "the songs"]


def test_a_full_disk_names_the_file_being_written(tmp_path):
    """Past its file-size limit a write fails (EFBIG) the way it does on a full disk (ENOSPC): neither error
    carries a file name of its own."""
    out = tmp_path / "out" / "outputs.json"
    args = ["-m", "w2s.cli", "generate", "--config", str(ROOT / "recipes/tiny/guide.yaml"), "--decoder", "sample",
            "--num_prompts", "8", "--max_new_tokens", "16", "--output", str(out)]  # fmt: skip

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (512, 512))

    # PYTHONDONTWRITEBYTECODE: a .pyc cut at the limit would break later imports
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore", "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=300, preexec_fn=limit)  # fmt: skip
    check_failure(result, f"File too large: {out}.partial.jsonl")  # the log of finished batches, written first
