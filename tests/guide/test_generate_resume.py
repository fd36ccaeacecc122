"""`w2s generate` killed (SIGKILL) mid-run and resumed, with other batch sizes, writes the bytes an
uninterrupted run writes."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from tests.processes import kill_when
from w2s.cli import main
from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig, outputs_recipe
from w2s.guide.outputs import generate_to
from w2s.guide.streams import STREAMS
from w2s.guide.types import Generation

ROOT = Path(__file__).resolve().parents[2]
FLAGS = ["--config", str(ROOT / "recipes/tiny/guide.yaml"), "--num_prompts", "12", "--decoder", "cbs", "--width", "2",
         "--successors", "2", "--chunk_len", "4", "--max_new_tokens", "24"]  # fmt: skip


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def run_and_kill(out: Path, at_least: int) -> None:
    """Starts `w2s generate` (one prompt per batch) and SIGKILLs it once its log holds `at_least` items."""
    partial = out.with_name(out.name + ".partial.jsonl")
    args = ["-m", "w2s.cli", "generate", *FLAGS, "--batch_size", "1", "--output", str(out)]
    kill_when(args, ROOT, lambda: lines(partial) >= at_least + 1, f"{at_least} items in {partial}")  # + the recipe
    assert lines(partial) - 1 < 12 and not out.exists(), "killed too late"


@pytest.mark.slow
def test_killed_and_resumed_generate_writes_what_an_uninterrupted_run_writes(tmp_path, world_paths):
    whole, resumed = tmp_path / "not" / "made" / "whole.json", tmp_path / "resumed.json"  # its folders: made
    assert main(["generate", *FLAGS, "--batch_size", "8", "--output", str(whole)]) == 0
    run_and_kill(resumed, at_least=3)
    run_and_kill(resumed, at_least=7)  # the second run resumed from the first's items before it was killed
    assert main(["generate", *FLAGS, "--batch_size", "3", "--output", str(resumed)]) == 0
    assert resumed.read_bytes() == whole.read_bytes()
    assert not resumed.with_name(resumed.name + ".partial.jsonl").exists()
    assert resumed.with_name("resumed.details.json").exists()


def test_a_partial_run_of_another_recipe_is_not_mixed_in(tmp_path, world_paths, capsys):
    out = tmp_path / "out.json"
    out.with_name(out.name + ".partial.jsonl").write_text('{"recipe": {"decoder": "sample"}}\n')
    assert main(["generate", *FLAGS, "--output", str(out)]) == 2
    assert "left by a run of another recipe" in capsys.readouterr().err
    assert not out.exists()


def test_the_log_is_headed_by_the_recipe_and_the_sampler_and_holds_each_whole_generation(tmp_path, world_paths):
    out = tmp_path / "out.json"
    flags = [*FLAGS, "--num_prompts", "2", "--max_new_tokens", "4", "--output", str(out)]
    assert main(["generate", *flags, "--shard", "1/2"]) == 0  # shard 1 of 2: its log stays, no outputs yet
    header, record = (
        json.loads(line) for line in (tmp_path / "out.json.partial.1-of-2.jsonl").read_text().splitlines()
    )
    config = GuideConfig.from_yaml(flags[1], flags[2:])
    # tiny: names are not local folders: no fingerprints
    assert header == {"recipe": outputs_recipe(dataclasses.asdict(config)), "sampler": STREAMS, "models": {}}
    assert record["index"] == 1 and {f.name for f in dataclasses.fields(Generation)} <= set(record)
    assert record["stop"] in ("eos", "stop_string", "max_new_tokens", "context")
    assert main(["generate", *flags, "--shard", "0/2"]) == 0  # the last shard writes every item's stop
    assert [o["stop"] for o in json.loads(out.read_text())][1] == record["stop"]


def test_outputs_of_a_model_folder_retrained_since_are_refused_and_an_older_log_resumes(tmp_path, world_paths):
    untuned = tmp_path / "weak"
    shutil.copytree(world_paths["weak"], untuned)
    out = tmp_path / "out.json"
    flags = [*FLAGS, "--num_prompts", "2", "--max_new_tokens", "4", "--untuned", str(untuned), "--output", str(out)]
    assert main(["generate", *flags, "--shard", "1/2"]) == 0  # shard 1's log stays, headed by the fingerprint
    log = tmp_path / "out.json.partial.1-of-2.jsonl"
    header, record = (json.loads(line) for line in log.read_text().splitlines())
    assert list(header["models"]) == [str(untuned)]
    weights = load_file(untuned / "model.safetensors")  # "retrained": every weight moved a little
    save_file({k: v + 1e-3 for k, v in weights.items()}, untuned / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(GuideError, match=r"the model folder '.*weak' changed since these outputs were generated"):
        generate_to(GuideConfig.from_yaml(flags[1], flags[2:-2]), ["a", "b"], out)
    assert not out.exists() and log.read_text().count("\n") == 2  # nothing written, nothing mixed in
    header.pop("models")  # a log of a release before fingerprints: resumed, its record reused (marked to tell)
    log.write_text(json.dumps(header) + "\n" + json.dumps(record | {"text": "reused"}) + "\n")
    assert main(["generate", *flags, "--shard", "0/2"]) == 0
    assert json.loads(out.read_text())[1]["output"] == "reused"
