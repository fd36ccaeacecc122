"""Launching with accelerate (DeepSpeed ZeRO-2, DDP over gloo, ZeRO-3/FSDP configs), logging, and resuming."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from accelerate.commands.config.config_args import load_config_from_file

from w2s.train import sft
from w2s.train.recipes import parse_recipe

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "recipes" / "accelerate_configs"
ACCELERATE = str(Path(sys.executable).with_name("accelerate"))
SFT = ["train/sft.py", "--config", "recipes/tiny/sft.yaml", "--per_device_train_batch_size", "4"]


def env(tmp_path: Path) -> dict:
    # a free port per test: two launches never share a rendezvous
    return {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(20000 + os.getpid() % 20000),
            "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip


def launch(tmp_path: Path, accelerate_args: list[str], script_args: list[str]) -> subprocess.CompletedProcess:
    cmd = [ACCELERATE, "launch", *accelerate_args, *script_args]
    done = subprocess.run(cmd, cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def train_rows() -> int:
    from datasets import load_from_disk

    from w2s.data.world.preferences import world_preferences
    from w2s.train.world import ensure_base

    return load_from_disk(str(world_preferences(ensure_base("weak"))))["train"].num_rows


def card_metrics(out: Path) -> dict:
    table = (out / "README.md").read_text().split("## Final metrics")[1]
    return {cells[1].strip(): cells[2].strip() for line in table.splitlines() if (cells := line.split("|"))[1:3]}


def sft_three_steps(tmp_path: Path, config: str, processes: int = 1, script_args: tuple = ()) -> tuple[Path, dict]:
    """SFT launched for 3 steps under an accelerate config; the output folder and its card's final metrics."""
    out = tmp_path / Path(config).stem
    launch(tmp_path, ["--config_file", str(CONFIGS / config), "--num_processes", str(processes),
                      "--mixed_precision", "no"],
           [*SFT, "--max_steps", "3", "--output_dir", str(out), *script_args])  # fmt: skip
    metrics = card_metrics(out)
    assert metrics["step"] == "3"
    return out, metrics


@pytest.mark.slow
def test_deepspeed_zero2_single_process_on_cpu(tmp_path):
    out, _ = sft_three_steps(tmp_path, "zero2.yaml")
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_ddp_two_processes_over_gloo(tmp_path):
    # --use_cpu: accelerate picks gloo when the processes are told to run on CPU
    _, metrics = sft_three_steps(tmp_path, "multi_gpu.yaml", processes=2, script_args=("--use_cpu",))
    # an epoch is ceil(rows / (4 rows x 2 processes)) steps, twice as many with one process
    assert float(metrics["epoch"]) == pytest.approx(3 / math.ceil(train_rows() / (4 * 2)), rel=1e-3)


@pytest.mark.slow
def test_deepspeed_zero3_single_process_on_cpu_saves_a_whole_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from w2s.train.world import ensure_base

    out, _ = sft_three_steps(tmp_path, "zero3.yaml")
    trained = AutoModelForCausalLM.from_pretrained(str(out))  # gathered from the ZeRO-3 shards, not empty
    base = AutoModelForCausalLM.from_pretrained(str(ensure_base("weak")))
    assert [p.shape for p in trained.parameters()] == [p.shape for p in base.parameters()]


@pytest.mark.slow
def test_fsdp_two_processes_on_cpu(tmp_path):
    out, metrics = sft_three_steps(tmp_path, "fsdp.yaml", processes=2, script_args=("--use_cpu",))
    assert float(metrics["epoch"]) == pytest.approx(3 / math.ceil(train_rows() / (4 * 2)), rel=1e-3)
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("name", ["single_device", "multi_gpu", "zero2", "zero3", "fsdp"])
def test_accelerate_configs_load(name):
    config = load_config_from_file(str(CONFIGS / f"{name}.yaml"))
    expected = {"single_device": "NO", "multi_gpu": "MULTI_GPU", "zero2": "DEEPSPEED", "zero3": "DEEPSPEED",
                "fsdp": "FSDP"}  # fmt: skip
    assert str(config.distributed_type).split(".")[-1] == expected[name]
    raw = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "fsdp":
        assert raw["fsdp_config"]["fsdp_version"] == 2


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    out = tmp_path / "resume"
    args = [sys.executable, *SFT, "--output_dir", str(out), "--max_steps", "300", "--save_strategy", "steps",
            "--save_steps", "5", "--logging_steps", "5", "--resume_from_checkpoint", "auto"]  # fmt: skip
    first = subprocess.Popen(args, cwd=ROOT, env=env(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (out / "checkpoint-10" / "trainer_state.json").is_file():
            assert first.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
    finally:
        first.wait()
    assert first.returncode == -signal.SIGKILL
    kept = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    last = int(kept[-1].name.split("-")[1])
    assert last < 300  # killed mid-run
    stamps = {
        p.name: (p / "trainer_state.json").stat().st_mtime_ns for p in kept if (p / "trainer_state.json").exists()
    }

    done = subprocess.run(args, cwd=ROOT, env=env(tmp_path), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert card_metrics(out)["step"] == "300"
    # resumed, not restarted: the checkpoints written before the kill were left as they were
    for name, stamp in stamps.items():
        assert (out / name / "trainer_state.json").stat().st_mtime_ns == stamp
    history = json.loads((out / "checkpoint-300" / "trainer_state.json").read_text())["log_history"]
    steps = [h["step"] for h in history if "loss" in h]
    assert steps == list(range(5, 301, 5))  # every logged step once: nothing lost, nothing repeated


@pytest.mark.slow
def test_wandb_offline_and_tensorboard_logging(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_PROJECT", "w2s-test")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))
    out = tmp_path / "logged"
    recipe = tmp_path / "sft.yaml"
    text = (ROOT / "recipes" / "tiny" / "sft.yaml").read_text()
    recipe.write_text(text.replace("report_to: none", "report_to: [wandb, tensorboard]"))
    sft.main(*parse_recipe(sft.DATACLASSES, ["--config", str(recipe), "--output_dir", str(out), "--max_steps", "4",
                                             "--logging_steps", "2"]))  # fmt: skip
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("*.wandb"))  # the run's record, to `wandb sync` later
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))
