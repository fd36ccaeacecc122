"""The main job on the tiny world: data -> DPO -> calibration -> evaluation, each stage a real w2s command.

    w2s demo                 # the full loop on world $W2S_WORLD_SEED (default 0); a rerun reuses finished stages
    w2s demo --worlds 0 1 2  # the loop on three worlds (stand-ins for three machines), then the summary across them
    w2s demo --quick         # a reduced loop, as the end-to-end test runs it

Stages: the tiny world's base models (cached); one set of the weak base's samples judged three ways
(`w2s data build`: the gold reward, and each of its two attributes, sentiment and topic, sharing one
work folder); DPO of the weak base into the guide and into one expert per attribute
(`accelerate launch train/dpo.py`); WSD's threshold calibrated on held-out prompts (`w2s calibrate`);
and an evaluation (`w2s eval`) of every decoder judged by the gold reward: sampling, best-of-16, CBS,
EFT, dynamic fusion with one expert and with two, two-guide CBS, WSD and the guide alone. It ends with
the leaderboard, the seed papers' findings checked on this replica, the plots and where every artefact is.
"""

from __future__ import annotations

import argparse
import hashlib
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

from w2s.data.world import score_review
from w2s.data.world.cache import WORLD_VERSION, world_seed
from w2s.eval.config import load_config
from w2s.eval.generate import stale_streams
from w2s.eval.run import evaluate
from w2s.guide.files import leaves
from w2s.train.tiny import BASES
from w2s.train.world import base_path, ensure_world, seed_flags, show_samples

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


@dataclass
class DemoSize:
    num_prompts: int  # data set prompts (4 weak-base samples each)
    num_instructions: int  # evaluation prompts
    calibration_prompts: int  # held-out prompts WSD's threshold is calibrated on
    distill_prompts: int  # training prompts whose CBS outputs the strong base is fine-tuned on


FULL = DemoSize(num_prompts=2600, num_instructions=200, calibration_prompts=64, distill_prompts=1000)
QUICK = DemoSize(num_prompts=600, num_instructions=48, calibration_prompts=32, distill_prompts=200)

# the data sets: one set of samples judged by the gold reward and by each of its attributes
# (the experts' pairs are matched: chosen and rejected have as many malformed sentences, so an expert learns
# its attribute and not "write more" or "stop early", which fusion would add to the base token by token)
DATA_SETS = [
    ("data", "tiny_gold", "gold-judged preference pairs"),
    ("data-sentiment", "tiny_sentiment", "the same samples judged by sentiment alone, matched pairs"),
    ("data-topic", "tiny_topic", "the same samples judged by topic alone, matched pairs"),
]
CONTROL = "{name: malformed, kind: rule, rule: tiny_malformed}"  # the experts' control judge
# the guide and the two experts: DPO of the weak base on one data set each
GUIDES = [
    ("guide", "data", "DPO of the weak base into the guide"),
    ("guide_sentiment", "data-sentiment", "DPO of the weak base into the sentiment expert"),
    ("guide_topic", "data-topic", "DPO of the weak base into the topic expert"),
]
EXPERTS = ("tiny:guide_sentiment", "tiny:guide_topic")  # the attribute experts, trained and fused their own way
DPO_FLAGS = ["--beta", "0.5", "--learning_rate", "5e-4", "--num_train_epochs", "2"]
# the experts: DPO plus the SFT loss on the chosen responses (TRL's loss_type [sigmoid, sft], RPO), at beta 0.25.
# Plain DPO lowers the chosen and the rejected likelihoods alike and moves the mass to tokens neither has (split
# words: "thethe", "effectsy"); fusion adds that drift to the base token by token, and the pair fused kept 46-66%
# of responses well formed (base 90-92%), so in worlds 1 and 2 it only tied the stronger expert alone. The SFT
# term anchors each expert on its own well-formed text, so its delta carries the attribute, not the drift (fused
# pair 86-93% well formed); the lower beta then gives the anchored experts their strength back (issue #28).
EXPERT_DPO_FLAGS = ["--beta", "0.25", "--learning_rate", "5e-4", "--num_train_epochs", "2",
                    "--loss_type", "sigmoid", "sft"]  # fmt: skip
# the experts' fusion systems (each expert alone, and both) pick alpha from 0..1 step 0.1, not 0..2: with the
# anchored experts, measured on worlds 0, 1 and 2, it lifts fusion-2 above each expert alone by more than 2 SE in
# all three (with 0..2, world 0 fell short). The guide's own fusion keeps the default 0..2: capped at 1, its one
# expert's alpha sat at 1 on every step of world 0 and fusion wrote EFT's 200 responses to the letter.
EXPERTS_ALPHA_MAX = 1.0


def data_flags(rule: str) -> list[str]:
    """`w2s data build`'s judges for one data set: the gold reward alone, or an attribute with the control."""
    judge = f"{{name: {rule.removeprefix('tiny_')}, kind: rule, rule: {rule}}}"
    if rule == "tiny_gold":
        return ["--judges", f"[{judge}]"]
    return ["--judges", f"[{judge}, {CONTROL}]", "--match", "[{judge: malformed}]"]


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


def _world() -> str:
    """What every marker of a finished stage starts with: the world its models belong to."""
    return f"tiny world version {WORLD_VERSION}, seed {world_seed()}\n"


def _inputs(run_dir: Path, values, own: Path | None = None) -> str:
    """A fingerprint of what a stage is made from: its arguments (the run folder written as `<run>` and this
    checkout as `<w2s>`, so a moved folder still resumes), the text of the recipe files it reads, and the markers
    of the earlier stages whose folders it names (a stage redone redoes what was made from it); `own`, the
    stage's own folder, is skipped."""
    digest = hashlib.sha256()
    for value in leaves(values, keys=True):
        if value == sys.executable:
            continue
        text = str(value)
        digest.update(text.replace(str(run_dir), "<run>").replace(str(ROOT), "<w2s>").encode() + b"\0")
        path = Path(text)
        if path.suffix == ".yaml" and path.is_file():
            digest.update(path.read_bytes())
        if path.is_relative_to(run_dir) and path != run_dir:
            upstream = run_dir / path.relative_to(run_dir).parts[0]
            if upstream != own:
                digest.update((upstream / MARKER).read_bytes() if (upstream / MARKER).is_file() else b"")
    return f"{_world()}inputs {digest.hexdigest()[:16]}\n"


def _current(folder: Path, marker: Path, mark: str) -> bool:
    """Whether `marker` says `folder` was made in this world from the same inputs (`mark`); a folder without that
    mark (left by another world, made with other flags or models, by a release before marks, or unfinished) is
    removed."""
    if marker.exists() and marker.read_text() == mark:
        return True
    if folder.exists():
        shutil.rmtree(folder)
    return False


MARKER = ".w2s-stage-done"


def _stage(run_dir: Path, name: str, what: str, command, log: str) -> Path:
    """Runs the stage's `command(out_dir)` (its output in logs/`log`.log) unless it finished before in this world
    from the same inputs; one console line for it."""
    out = run_dir / name
    cmd = command(out)
    mark = _inputs(run_dir, cmd, own=out)
    if _current(out, out / MARKER, mark):
        _say(f"{name:<16} {what}: done before, reusing {out}")
        return out
    out.mkdir(parents=True)
    _say(f"{name:<16} {what} ...", end="")
    start = time.perf_counter()
    _run(cmd, log, run_dir / "logs" / f"{log}.log")
    (out / MARKER).write_text(mark)
    _say(f" done in {time.perf_counter() - start:.0f} s")
    return out


def _say(line: str, end: str = "\n") -> None:
    print(line, end=end, flush=True)


def eval_recipe(run_dir: Path, models: dict[str, Path], threshold: float, size: DemoSize) -> Path:
    """recipes/tiny/eval.yaml with the demo's own guides in place of `tiny:guide*` (`models`: name -> folder),
    WSD's calibrated threshold, and the strong base distilled from CBS's outputs as one more system."""
    recipe = yaml.safe_load((RECIPES / "tiny" / "eval.yaml").read_text())
    recipe.update(num_instructions=size.num_instructions, output_dir=str(run_dir / "eval"))

    def own(spec: dict) -> dict:
        return {k: str(models.get(v, v)) if isinstance(v, str) and v in models else v for k, v in spec.items()}

    for system in recipe["systems"]:
        guide = own(system["guide"])
        if "extra_guides" in guide:
            guide["extra_guides"] = [own(g) for g in guide["extra_guides"]]
        if guide.get("decoder") == "wsd":
            guide["threshold"] = threshold
        if guide.get("decoder") == "fusion" and system["guide"]["tuned"] in EXPERTS:
            guide["alpha_max"] = EXPERTS_ALPHA_MAX
        system["guide"] = guide
    if "tiny:cbs_distilled" in models:  # weak-to-strong search distilled into the strong base, sampled plainly
        base = next(s["guide"] for s in recipe["systems"] if s["name"] == "base")
        distilled = {"strong_model": str(models["tiny:cbs_distilled"])}
        recipe["systems"].append({"name": "cbs-distilled", "guide": base | distilled})
    path = run_dir / "eval.yaml"
    path.write_text("# written by w2s demo from recipes/tiny/eval.yaml\n" + yaml.safe_dump(recipe, sort_keys=False))
    return path


def findings(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The seed papers' qualitative findings, each needing a gap of more than two standard errors."""
    by = {r["system"]: r for r in rows}

    def mean(a: str) -> str:
        return f"{by[a]['reward_mean']:+.2f}"

    def gap(a: str, b: str) -> tuple[float, float, str]:
        g = by[a]["reward_mean"] - by[b]["reward_mean"]
        se = (by[a]["reward_se"] ** 2 + by[b]["reward_se"] ** 2) ** 0.5
        return g, se, f"{mean(a)} vs {mean(b)} (gap {g:+.2f}, 2 SE = {2 * se:.2f})"

    def above(a: str, b: str) -> tuple[bool, str]:
        g, se, detail = gap(a, b)
        return g > 2 * se, detail

    def not_below(a: str, b: str) -> tuple[bool, str]:
        g, se, detail = gap(a, b)
        return g > -2 * se, detail

    def above_each(a: str, *others: str) -> tuple[bool, str]:
        checks = [above(a, b) for b in others]
        return all(ok for ok, _ in checks), "; ".join(detail for _, detail in checks)

    cbs = by["cbs"]
    gain = cbs["reward_mean"] - by["base"]["reward_mean"]
    kept = (by["cbs-distilled"]["reward_mean"] - by["base"]["reward_mean"]) / gain if gain else float("nan")
    strong = {name: by[name]["strong_tokens_per_item"] for name in ("wsd", "base")}
    return [
        ("weak-to-strong search: CBS > best-of-16 (same number of strong-model samples)", *above("cbs", "bon16")),
        ("weak-to-strong search: best-of-16 > plain sampling", *above("bon16", "base")),
        ("weak-to-strong search: CBS > EFT (logit arithmetic with the same guide)", *above("cbs", "eft")),
        ("weak-to-strong search: CBS > the guide alone", *above("cbs", "guide-alone")),
        (
            "weak-to-strong search: CBS wins against base sampling",
            cbs["win_rate"] - 50 > 2 * cbs["standard_error"],
            f"{cbs['win_rate']:.1f}% ± {cbs['standard_error']:.1f}",
        ),
        ("draft-switch decoding: WSD > base sampling", *above("wsd", "base")),
        ("draft-switch decoding: WSD > the pilot alone", *above("wsd", "guide-alone")),
        (
            "draft-switch decoding: WSD's strong-model tokens per item within 1.2x the base's",
            strong["wsd"] <= 1.2 * strong["base"],
            f"{strong['wsd']:.1f} vs {strong['base']:.1f} (+ {by['wsd']['tokens_per_item'] - strong['wsd']:.1f} pilot tokens)",
        ),
        ("logit fusion: fusion no worse than EFT with the same expert (within 2 SE)", *not_below("fusion", "eft")),
        ("logit fusion: fusion > base sampling", *above("fusion", "base")),
        (
            "logit fusion: two experts fused > each expert alone",
            *above_each("fusion-2", "fusion-sentiment", "fusion-topic"),
        ),
        ("weak-to-strong search: two guides > each guide alone", *above_each("cbs-2", "cbs-sentiment", "cbs-topic")),
        ("distillation: CBS distilled into the strong base > base sampling", *above("cbs-distilled", "base")),
        (
            "distillation: the distilled model's strong-model tokens per item within 1.2x the base's",
            by["cbs-distilled"]["strong_tokens_per_item"] <= 1.2 * by["base"]["strong_tokens_per_item"],
            f"{by['cbs-distilled']['strong_tokens_per_item']:.1f} vs {by['base']['strong_tokens_per_item']:.1f}; "
            f"it keeps {kept:.0%} of CBS's gain over the base",
        ),
    ]


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
        _say("world            the tiny world's tokenizers and base models (cached after the first build) ...", end="")
        if not all(base_path(name).is_dir() for name in BASES):  # pretraining's log goes to the stage's log
            _run([*w2s, "world", "build"], "world", logs / "world.log")
        paths = ensure_world()
        _say(f" ready in {time.perf_counter() - start:.0f} s")
        show_samples(paths, num_prompts=2)  # the world and its base models, with gold rewards
        work = run_dir / "data-work"  # one set of samples, judged three ways
        data = {}
        for name, rule, what in DATA_SETS:
            data[name] = _stage(run_dir, name, f"{what} from {size.num_prompts} prompts", lambda out, rule=rule:
                [*w2s, "data", "build", "--config", RECIPES / "tiny" / "data.yaml", "--output_dir", out,
                 "--num_prompts", size.num_prompts, "--work_dir", work, *data_flags(rule)], "data")  # fmt: skip
        models = {}
        for name, data_set, what in GUIDES:
            models[f"tiny:{name}"] = _stage(run_dir, name, what, lambda out, name=name, data_set=data_set:
                [*launch, "train/dpo.py", "--config", RECIPES / "tiny" / "dpo.yaml", "--dataset_name",
                 data[data_set] / "pairs", "--model_name_or_path", paths["weak"], "--output_dir", out,
                 *(EXPERT_DPO_FLAGS if f"tiny:{name}" in EXPERTS else DPO_FLAGS),
                 *seed_flags(RECIPES / "tiny" / "dpo.yaml")], "dpo")  # fmt: skip
        models["tiny:weak"] = paths["weak"]
        calibration = _stage(run_dir, "wsd", "WSD's threshold calibrated on held-out prompts", lambda out:
            [*w2s, "calibrate", "--config", RECIPES / "tiny" / "guide.yaml", "--decoder", "wsd", "--pilot",
             models["tiny:guide"], "--prompts", "tiny:train", "--num_prompts", size.calibration_prompts,
             "--json", out / "calibration.json"], "calibrate")  # fmt: skip
        threshold = json.loads((calibration / "calibration.json").read_text())["threshold"]
        searched = _stage(run_dir, "cbs-train", f"CBS over {size.distill_prompts} training prompts", lambda out:
            [*w2s, "generate", "--config", RECIPES / "tiny" / "guide.yaml", "--tuned", models["tiny:guide"],
             "--untuned", paths["weak"], "--prompts", "tiny:train", "--num_prompts", size.distill_prompts,
             "--output", out / "cbs-train.json"], "distill")  # fmt: skip
        models["tiny:cbs_distilled"] = _stage(run_dir, "cbs-distilled", "SFT of the strong base on CBS's outputs",
            lambda out:
            [*launch, "train/sft.py", "--config", RECIPES / "tiny" / "distill_cbs.yaml", "--dataset_name",
             searched / "cbs-train.json", "--model_name_or_path", paths["strong"], "--output_dir", out,
             *seed_flags(RECIPES / "tiny" / "distill_cbs.yaml")], "distill")  # fmt: skip
        recipe = eval_recipe(run_dir, models, threshold, size)
        _say(f"eval             {size.num_instructions} held-out prompts, every system judged by the gold reward:")
        config = load_config(recipe)
        # a system's outputs made in another world, or from models a stage has since redone, or sampled by an
        # older release, are generated again; the others, even unfinished, are resumed
        out = Path(config.output_dir)
        if not _current(out, out / MARKER, _world()):
            out.mkdir(parents=True)
            (out / MARKER).write_text(_world())
        for system in config.system_list():
            folder = out / system.name
            if stale_streams(folder):
                logging.getLogger(__name__).info("%s: sampled by another release of w2s, generating again", folder)
                shutil.rmtree(folder)
            mark = _inputs(run_dir, system.guide)
            if not _current(folder, folder / MARKER, mark):
                folder.mkdir(parents=True)
                (folder / MARKER).write_text(mark)
        result = evaluate(config, progress=True)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    report = run_dir / "eval"
    print("\n" + (report / "leaderboard.md").read_text())
    for row in result.rows:  # how each system writes the world's language, beside its reward
        outputs = json.loads((report / row["system"] / "model_outputs.json").read_text())
        row["well_formed"] = sum(score_review(o["instruction"], o["output"]).well_formed for o in outputs) / len(
            outputs
        )
    print("Well-formed responses (every sentence parses and agrees): " + ", ".join(
        f"{row['system']} {row['well_formed']:.0%}" for row in result.rows) + "\n")  # fmt: skip
    checks = findings(result.rows)
    print("Findings of the seed papers, reproduced on the tiny world (each by more than 2 standard errors):")
    for claim, ok, detail in checks:
        print(f"  [{'yes' if ok else 'NO '}] {claim}: {detail}")
    summary = {"world": world_seed(), "rows": result.rows, "findings": [list(c) for c in checks]}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (run_dir / "summary.md").write_text(f"`w2s demo`, world {world_seed()}\n\n" + world_table(result.rows))
    print("\nArtefacts:")
    for label, path in [
        ("base models", paths["strong"].parent),
        ("preference data (+ cards)", ", ".join(str(d) for d in data.values())),
        ("guide, experts (DPO)", ", ".join(str(models[f"tiny:{n}"]) for n, _, _ in GUIDES)),
        ("CBS's outputs, distilled", f"{searched / 'cbs-train.json'}, {models['tiny:cbs_distilled']}"),
        ("WSD calibration", calibration / "calibration.json"),
        ("leaderboard, plots", report / "leaderboard.md"),
        ("", f"{report / 'win_rate.png'}, {report / 'reward_vs_compute.png'}"),
        ("the README's table", run_dir / "summary.md"),
        ("logs of every stage", logs),
    ]:
        print(f"  {label:<26} {path}")
    return result.rows, checks


def world_table(rows: list[dict]) -> str:
    """One world's results as the README shows them (`summary.md` in the run folder)."""
    lines = ["| system | decoder | win rate % vs base | ± SE | LC win rate % | gold reward | ± SE | well-formed | "
             "tokens / item | strong-model tokens / item |", "| --- |" + " --- |" * 9]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['decoder']} | {r['win_rate']:.1f} | {r['standard_error']:.1f} | "
            f"{r['lc_win_rate']:.1f} | {r['reward_mean']:+.2f} | {r['reward_se']:.2f} | {r['well_formed']:.0%} | "
            f"{r['tokens_per_item']:.0f} | {r['strong_tokens_per_item']:.1f} |"
        )
    return "\n".join(lines) + "\n"


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
             "| system | win rate % vs base | gold reward | well-formed | tokens / item |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in [r["system"] for r in summaries[0]["rows"]]:
        rows = [next(r for r in s["rows"] if r["system"] == name) for s in summaries]
        lines.append(
            f"| {name} | {spread([r['win_rate'] for r in rows], 1).lstrip('+')} | "
            f"{spread([r['reward_mean'] for r in rows], 2)} | "
            f"{statistics.mean(r.get('well_formed', float('nan')) for r in rows):.0%} | "
            f"{statistics.mean(r['tokens_per_item'] for r in rows):.0f} |"
        )
    lines += ["", "| finding | " + " | ".join(f"world {w}" for w in worlds) + " |",
              "| --- |" + " --- |" * len(worlds)]  # fmt: skip
    for i, (claim, _, _) in enumerate(summaries[0]["findings"]):
        lines.append(f"| {claim} | " + " | ".join("yes" if s["findings"][i][1] else "NO" for s in summaries) + " |")
    return "\n".join(lines) + "\n"


def run_worlds(worlds: list[int], argv: list[str], *, strict: bool = False) -> int:
    """The demo on each world in turn (each in its own process, its console output in its run folder's log),
    then the across-worlds summary, written to `runs/demo-worlds.md`."""
    summaries = []
    for world in worlds:
        run_dir = default_run_dir(world)
        if "--fresh" in argv and run_dir.exists():
            shutil.rmtree(run_dir)  # here, not in the world's own run: it would delete the console log below
        run_dir.mkdir(parents=True, exist_ok=True)
        console = run_dir / "demo-console.log"
        _say(f"world {world}: w2s demo --world {world} {' '.join(argv)} (console: {console}) ...", end="")
        start = time.perf_counter()
        child = [a for a in argv if a != "--fresh"]
        with open(console, "w") as f:
            code = subprocess.run([sys.executable, "-m", "w2s.cli", "demo", "--world", str(world), *child],
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
    return 1 if strict and not all(ok for s in summaries for _, ok, _ in s["findings"]) else 0


def main(args: argparse.Namespace) -> int:
    """`w2s demo`, its flags parsed and checked by eval/cli.py."""
    logging.basicConfig(format="%(message)s")
    for handler in logging.getLogger().handlers:  # the console: warnings, or everything with --verbose
        handler.setLevel(logging.INFO if args.verbose else logging.WARNING)
    logging.getLogger().setLevel(logging.INFO)  # everything reaches the run's log file
    if args.worlds:
        passed = [f for f, on in (("--quick", args.quick), ("--fresh", args.fresh), ("--strict", args.strict)) if on]
        return run_worlds(args.worlds, passed, strict=args.strict)
    if args.world is not None:
        os.environ["W2S_WORLD_SEED"] = str(args.world)  # read by every stage, in this process and the ones it starts
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(world_seed())
    if args.fresh and run_dir.exists():
        shutil.rmtree(run_dir)
    _, checks = run_demo(run_dir, QUICK if args.quick else FULL, verbose=args.verbose)
    return 1 if args.strict and not all(ok for _, ok, _ in checks) else 0
