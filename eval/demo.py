"""The main job on the tiny world: data -> SFT -> DPO -> evaluation, each stage a real w2s command.

    w2s demo                 # the full loop on world $W2S_WORLD_SEED (default 0); a rerun reuses finished stages
    w2s demo --worlds 0 1 2  # the loop on three worlds (stand-ins for three machines), then the summary across them
    w2s demo --quick         # a reduced loop, as the end-to-end test runs it

Stages: the tiny world's base models (cached), a gold-judged preference set (`w2s data build`),
SFT then DPO of the weak base into a guide (`accelerate launch train/sft.py`, `train/dpo.py`), and an
evaluation (`w2s eval`) of base sampling, best-of-N, CBS, EFT, WSD and the guide alone, judged by the
gold reward. It ends with the leaderboard, the weak-to-strong search paper's findings checked on this
replica, the plots and where every artefact is.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from w2s.data.world.cache import world_seed
from w2s.eval.config import load_config
from w2s.eval.generate import stale_streams
from w2s.eval.run import evaluate
from w2s.train.tiny import BASES
from w2s.train.world import base_path, ensure_world, seed_flags, show_samples

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


def _run(cmd: list[str], stage: str, log: Path) -> None:
    """Runs one stage's command with its output in `log`; a failure names the stage and its log."""
    logger.info("[%s] %s", stage, " ".join(str(c) for c in cmd))
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(str(c) for c in cmd)}\n")
        f.flush()
        result = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(
            f"{tail}\nw2s demo: stage {stage!r} failed (exit {result.returncode}); its log: {log}; rerun to resume"
        )


def _stage(run_dir: Path, name: str, what: str, work) -> Path:
    """Runs `work(out_dir)` unless the stage finished before (its marker exists); one console line for it."""
    out = run_dir / name
    marker = out / ".w2s-stage-done"
    if marker.exists():
        _say(f"{name:<6} {what}: done before, reusing {out}")
        return out
    out.mkdir(parents=True, exist_ok=True)
    _say(f"{name:<6} {what} ...", end="")
    start = time.perf_counter()
    work(out)
    marker.touch()
    _say(f" done in {time.perf_counter() - start:.0f} s")
    return out


def _say(line: str, end: str = "\n") -> None:
    print(line, end=end, flush=True)


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


def _quiet_libraries() -> None:
    """Details go to the run's log: no per-model loading bars or library chatter on the console."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def run_demo(run_dir: Path, size: DemoSize, *, verbose: bool = False) -> tuple[list[dict], list[tuple[str, bool, str]]]:
    """Every stage of the main job in the current world; returns the leaderboard rows and the findings.

    Each stage prints one line; its details (every command's output, the evaluation's log) are in
    `<run_dir>/logs/`. A finished stage is reused by the next run.
    """

    run_dir = run_dir.resolve()
    logs = run_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(logs / "demo.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    if not verbose:
        _quiet_libraries()
    w2s = [sys.executable, "-m", "w2s.cli"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
              RECIPES / "accelerate_configs" / "single_device.yaml"]  # fmt: skip
    try:
        _say(f"w2s demo: world {world_seed()} (W2S_WORLD_SEED), run folder {run_dir}, logs in {logs}")
        start = time.perf_counter()
        _say("world  the tiny world's tokenizers and base models (cached after the first build) ...", end="")
        if not all(base_path(name).is_dir() for name in BASES):  # pretraining's log goes to the stage's log
            _run([*w2s, "world", "build"], "world", logs / "world.log")
        paths = ensure_world()
        _say(f" ready in {time.perf_counter() - start:.0f} s")
        show_samples(paths, num_prompts=2)  # the world and its base models, with gold rewards
        data = _stage(run_dir, "data", f"gold-judged preference pairs from {size.num_prompts} prompts", lambda out: _run(
            [*w2s, "data", "build", "--config", RECIPES / "tiny" / "data.yaml", "--output_dir", out,
             "--num_prompts", size.num_prompts], "data", logs / "data.log"))  # fmt: skip
        sft = _stage(run_dir, "sft", "SFT of the weak base on the chosen responses", lambda out: _run(
            [*launch, "train/sft.py", "--config", RECIPES / "tiny" / "sft.yaml", "--dataset_name", data / "pairs",
             "--model_name_or_path", paths["weak"], "--output_dir", out, *seed_flags(RECIPES / "tiny" / "sft.yaml")],
            "sft", logs / "sft.log"))  # fmt: skip
        guide = _stage(run_dir, "guide", "DPO of the SFT model into the guide", lambda out: _run(
            [*launch, "train/dpo.py", "--config", RECIPES / "tiny" / "dpo.yaml", "--dataset_name", data / "pairs",
             "--model_name_or_path", sft, "--num_train_epochs", size.dpo_epochs, "--output_dir", out,
             *seed_flags(RECIPES / "tiny" / "dpo.yaml")], "dpo", logs / "dpo.log"))  # fmt: skip
        recipe = eval_recipe(run_dir, guide, size)
        _say(f"eval   {size.num_instructions} held-out prompts, every system judged by the gold reward:")
        config = load_config(recipe)
        for system in config.system_list():  # the demo's own outputs, sampled by an older release: redo them
            folder = Path(config.output_dir) / system.name
            if stale_streams(folder):
                logging.getLogger(__name__).info("%s: sampled by another release of w2s, generating again", folder)
                shutil.rmtree(folder)
        result = evaluate(config, progress=True)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    report = run_dir / "eval"
    print("\n" + (report / "leaderboard.md").read_text())
    checks = findings(result.rows)
    print("Findings of weak-to-strong search, reproduced on the tiny world (each by more than 2 standard errors):")
    for claim, ok, detail in checks:
        print(f"  [{'yes' if ok else 'NO '}] {claim}: {detail}")
    summary = {"world": world_seed(), "rows": result.rows, "findings": [list(c) for c in checks]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print("\nArtefacts:")
    for label, path in [
        ("base models", paths["strong"].parent),
        ("preference data (+ card)", data),
        ("SFT model, DPO guide", f"{sft}, {guide}"),
        ("leaderboard, plots", report / "leaderboard.md"),
        ("", f"{report / 'win_rate.png'}, {report / 'reward_vs_compute.png'}"),
        ("logs of every stage", logs),
    ]:
        print(f"  {label:<26} {path}")
    return result.rows, checks


def default_run_dir(world: int) -> Path:
    """`runs/demo` for the default world 0, `runs/demo-world<N>` for another."""
    return Path("runs/demo" if world == 0 else f"runs/demo-world{world}")


def across_worlds(summaries: list[dict]) -> str:
    """A Markdown summary of several worlds' demos: mean ± sd over worlds per system, and each finding per world."""
    import statistics

    worlds = [s["world"] for s in summaries]

    def spread(values: list[float], digits: int) -> str:
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):+.{digits}f} ± {sd:.{digits}f}"

    lines = [f"Across worlds {', '.join(map(str, worlds))} (mean ± sd over worlds):", "",
             "| system | win rate % vs base | gold reward | tokens / item |", "| --- | --- | --- | --- |"]  # fmt: skip
    for name in [r["system"] for r in summaries[0]["rows"]]:
        rows = [next(r for r in s["rows"] if r["system"] == name) for s in summaries]
        lines.append(
            f"| {name} | {spread([r['win_rate'] for r in rows], 1).lstrip('+')} | "
            f"{spread([r['reward_mean'] for r in rows], 2)} | {statistics.mean(r['tokens_per_item'] for r in rows):.0f} |"
        )
    lines += ["", "| finding | " + " | ".join(f"world {w}" for w in worlds) + " |",
              "| --- |" + " --- |" * len(worlds)]  # fmt: skip
    for i, (claim, _, _) in enumerate(summaries[0]["findings"]):
        lines.append(f"| {claim} | " + " | ".join("yes" if s["findings"][i][1] else "NO" for s in summaries) + " |")
    return "\n".join(lines) + "\n"


def run_worlds(worlds: list[int], argv: list[str]) -> int:
    """The demo on each world in turn (each in its own process, its console output in its run folder's log),
    then the across-worlds summary, written to `runs/demo-worlds.md`."""
    summaries = []
    for world in worlds:
        run_dir = default_run_dir(world)
        run_dir.mkdir(parents=True, exist_ok=True)
        console = run_dir / "demo-console.log"
        _say(f"world {world}: w2s demo --world {world} {' '.join(argv)} (console: {console}) ...", end="")
        start = time.perf_counter()
        with open(console, "w") as f:
            code = subprocess.run([sys.executable, "-m", "w2s.cli", "demo", "--world", str(world), *argv],
                                  stdout=f, stderr=subprocess.STDOUT).returncode  # fmt: skip
        summary_file = run_dir / "summary.json"
        if not summary_file.is_file():
            _say(f" failed (exit {code}); see {console}")
            return 2
        summaries.append(json.loads(summary_file.read_text()))
        held = sum(ok for _, ok, _ in summaries[-1]["findings"])
        _say(f" {held}/{len(summaries[-1]['findings'])} findings held, {time.perf_counter() - start:.0f} s")
    text = across_worlds(summaries)
    out = Path("runs/demo-worlds.md")
    out.write_text(f"`w2s demo --worlds {' '.join(map(str, worlds))}`\n\n" + text)
    print("\n" + text + f"\n(written to {out})")
    return 0 if all(ok for s in summaries for _, ok, _ in s["findings"]) else 1


def main(args: argparse.Namespace) -> int:
    """`w2s demo`, its flags parsed and checked by eval/cli.py."""
    logging.basicConfig(format="%(message)s")
    for handler in logging.getLogger().handlers:  # the console: warnings, or everything with --verbose
        handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger().setLevel(logging.INFO)  # everything reaches the run's log file
    if args.worlds:
        passed = [f for f, on in (("--quick", args.quick), ("--fresh", args.fresh)) if on]
        return run_worlds(args.worlds, passed)
    if args.world is not None:
        os.environ["W2S_WORLD_SEED"] = str(args.world)  # read by every stage, in this process and the ones it starts
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(world_seed())
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    _, checks = run_demo(run_dir, QUICK if args.quick else FULL, verbose=args.verbose)
    return 0 if all(ok for _, ok, _ in checks) else 1
