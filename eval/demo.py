"""The main job on the tiny world: data -> SFT -> DPO -> evaluation, each stage a real w2s command.

    w2s demo                 # the full loop (about 15 minutes on 2 CPU cores; a rerun reuses finished stages)
    w2s demo --quick         # a reduced loop, as the end-to-end test runs it

Stages: the tiny world's base models (cached), a gold-judged preference set (`w2s data build`),
SFT then DPO of the weak base into a guide (`accelerate launch train/sft.py`, `train/dpo.py`), and an
evaluation (`w2s eval`) of base sampling, best-of-N, CBS, EFT, WSD and the guide alone, judged by the
gold reward. It ends with the leaderboard, the weak-to-strong search paper's findings checked on this
replica, the plots and where every artefact is.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@dataclass
class DemoSize:
    num_prompts: int  # data set prompts (4 weak-base samples each)
    num_instructions: int  # evaluation prompts
    dpo_epochs: int


FULL = DemoSize(num_prompts=2600, num_instructions=200, dpo_epochs=3)
QUICK = DemoSize(num_prompts=600, num_instructions=48, dpo_epochs=3)


def _run(cmd: list[str], stage: str) -> None:
    logger.info("[%s] %s", stage, " ".join(str(c) for c in cmd))
    result = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"w2s demo: stage {stage!r} failed (exit {result.returncode}); rerun to resume")


def _stage(run_dir: Path, name: str, work) -> Path:
    """Runs `work(out_dir)` unless the stage finished before (its marker exists)."""
    out = run_dir / name
    marker = out / ".w2s-stage-done"
    if marker.exists():
        logger.info("[%s] done before: reusing %s", name, out)
        return out
    out.mkdir(parents=True, exist_ok=True)
    work(out)
    marker.touch()
    return out


def eval_recipe(run_dir: Path, guide: Path, size: DemoSize) -> Path:
    """recipes/tiny/eval.yaml with the demo's own guide in place of tiny:guide."""
    recipe = yaml.safe_load((RECIPES / "tiny" / "eval.yaml").read_text())
    recipe.update(num_instructions=size.num_instructions, output_dir=str(run_dir / "eval"))
    for system in recipe["systems"]:
        for key, value in system["guide"].items():
            if value == "tiny:guide":
                system["guide"][key] = str(guide)
    path = run_dir / "eval.yaml"
    path.write_text("# written by w2s demo from recipes/tiny/eval.yaml\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def findings(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The weak-to-strong search paper's qualitative findings, each needing a gap over two standard errors."""
    by = {r["system"]: r for r in rows}

    def reward_gap(a: str, b: str) -> tuple[bool, str]:
        gap = by[a]["reward_mean"] - by[b]["reward_mean"]
        se = (by[a]["reward_se"] ** 2 + by[b]["reward_se"] ** 2) ** 0.5
        return (
            gap > 2 * se,
            f"{by[a]['reward_mean']:+.2f} vs {by[b]['reward_mean']:+.2f} (gap {gap:+.2f}, 2 SE = {2 * se:.2f})",
        )

    cbs_win = by["cbs-4-4-5"]
    out = [
        ("mean gold reward: CBS > best-of-16 (same number of strong-model samples)", *reward_gap("cbs-4-4-5", "bon16")),
        ("mean gold reward: best-of-16 > plain sampling", *reward_gap("bon16", "base")),
        (
            "win rate: CBS beats base sampling",
            cbs_win["win_rate"] - 50 > 2 * cbs_win["standard_error"],
            f"{cbs_win['win_rate']:.1f}% ± {cbs_win['standard_error']:.1f}",
        ),
        ("mean gold reward: CBS-steered strong model > the guide alone", *reward_gap("cbs-4-4-5", "guide-alone")),
    ]
    return out


def run_demo(run_dir: Path, size: DemoSize) -> tuple[list[dict], list[tuple[str, bool, str]]]:
    """Every stage of the main job; returns the leaderboard rows and the findings."""
    from eval.config import load_config
    from eval.run import evaluate
    from train.world import ensure_world

    run_dir = run_dir.resolve()
    w2s = [sys.executable, "-m", "w2s.cli"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              RECIPES / "accelerate_configs" / "single_device.yaml"]  # fmt: skip

    paths = ensure_world()
    from train.world import show_samples

    show_samples(paths, num_prompts=2)  # the world and its base models, with gold rewards
    data = _stage(run_dir, "data", lambda out: _run(
        [*w2s, "data", "build", "--config", RECIPES / "tiny" / "data.yaml", "--output_dir", out,
         "--num_prompts", size.num_prompts], "data"))  # fmt: skip
    sft = _stage(run_dir, "sft", lambda out: _run(
        [*launch, "train/sft.py", "--config", RECIPES / "tiny" / "sft.yaml", "--dataset_name", data / "pairs",
         "--model_name_or_path", paths["weak"], "--output_dir", out], "sft"))  # fmt: skip
    guide = _stage(run_dir, "guide", lambda out: _run(
        [*launch, "train/dpo.py", "--config", RECIPES / "tiny" / "dpo.yaml", "--dataset_name", data / "pairs",
         "--model_name_or_path", sft, "--num_train_epochs", size.dpo_epochs, "--output_dir", out], "dpo"))  # fmt: skip
    recipe = eval_recipe(run_dir, guide, size)
    result = evaluate(load_config(recipe))
    report = run_dir / "eval"
    print("\n" + (report / "leaderboard.md").read_text())
    checks = findings(result.rows)
    print("Findings of weak-to-strong search, reproduced on the tiny world (each by more than 2 standard errors):")
    for claim, ok, detail in checks:
        print(f"  [{'yes' if ok else 'NO '}] {claim}: {detail}")
    print("\nArtefacts:")
    for label, path in [
        ("base models", paths["strong"].parent),
        ("preference data (+ card)", data),
        ("SFT model", sft),
        ("DPO guide", guide),
        ("eval recipe", recipe),
        ("leaderboard", report / "leaderboard.md"),
        ("plots", report / "win_rate.png"),
        ("", report / "reward_vs_compute.png"),
        ("outputs per system", report),
    ]:
        print(f"  {label:<26} {path}")
    return result.rows, checks


def main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="w2s demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", default="runs/demo", help="where the stages write (default runs/demo)")
    parser.add_argument("--quick", action="store_true", help="reduced sizes (the end-to-end test's)")
    parser.add_argument("--fresh", action="store_true", help="forget finished stages and run everything again")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = Path(args.run_dir)
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    _, checks = run_demo(run_dir, QUICK if args.quick else FULL)
    return 0 if all(ok for _, ok, _ in checks) else 1
