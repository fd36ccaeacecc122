"""One evaluation, end to end: instructions → each system's outputs → judgements → metrics → report.

Layout of `output_dir`:

    <system>/generations.jsonl   outputs as they are generated, with cost per item (resumable)
    <system>/model_outputs.json  AlpacaEval format: instruction, output, generator, dataset
    <system>/annotations.json    AlpacaEval format: output_1 (reference), output_2 (system), preference, rewards
    judgements/<judge>.jsonl     the judge's verdict cache (a rerun never judges twice)
    leaderboard.csv, leaderboard.md, win_rate.png, reward_vs_compute.png, results.json
    instruction_difficulty.csv   with `lc_difficulty: fitted`: the difficulties fitted (a file lc_difficulty reads)

Pairing: the n-th output of every system answers the n-th instruction of the set (each instruction text once,
eval/instructions.py), and so does the reference when it is a system or the set's own outputs; reference outputs
from a file pair by instruction text, as alpaca_eval pairs them.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from filelock import FileLock, Timeout

from w2s.eval.alignment_tax import check_lm_eval
from w2s.eval.annotate import JudgeCounts, annotate, judgement_log
from w2s.eval.config import EvalConfig, EvalConfigError
from w2s.eval.endpoint import Endpoint
from w2s.eval.generate import GenerationError, check_system, generate_outputs
from w2s.eval.instructions import (
    Instruction,
    InstructionSetError,
    load_difficulty,
    load_instructions,
    read_json_records,
)
from w2s.eval.judges import check_judge, make_judge
from w2s.eval.metrics import cost, instruction_difficulty, length_controlled_win_rates, mean_and_se, win_rate
from w2s.eval.report import plot_reward_vs_compute, plot_win_rates, write_tables
from w2s.eval.store import write_json
from w2s.guide import GuideConfig
from w2s.guide.commands import UserError
from w2s.guide.files import check_writable, remove_stale_temps, write_atomic
from w2s.guide.preflight import check_guide
from w2s.guide.shards import Shard, ShardedJob

logger = logging.getLogger(__name__)

RESERVED = {"judgements"}
SHARD_MARKS = ".w2s-shards-done"  # <i>-of-<n>: shard i of n generated and judged its share
DIFFICULTY_FILE = "instruction_difficulty.csv"


@dataclass
class EvalResult:
    """What a run produced and how much of it was reused from an earlier (interrupted) run."""

    rows: list[dict]
    instructions: dict = field(default_factory=dict)  # {n, duplicates_dropped}
    generation: dict[str, dict] = field(default_factory=dict)  # system -> {reused, generated}
    judging: dict = field(default_factory=dict)  # {judged, cached}
    files: list[str] = field(default_factory=list)
    complete: bool = True  # False: one shard's share was done, the results are written by the last shard


def _reference_outputs(config: EvalConfig, instructions: list[Instruction], outputs: dict[str, list[str]]):
    ref = config.reference
    if ref is None:
        return None, None
    if ref in outputs:
        return ref, outputs[ref]
    if ref == "dataset":
        missing = [n for n, ins in enumerate(instructions) if ins.reference is None]
        if missing:
            raise InstructionSetError(
                f"reference 'dataset': instruction {missing[0] + 1} of {config.instructions!r} has no 'output' field"
            )
        return "dataset", [ins.reference for ins in instructions]
    path = Path(ref)
    if not path.is_file():
        raise EvalConfigError(
            f"reference {ref!r}: neither a system of this recipe ({sorted(outputs)}), 'dataset', nor a JSON/JSONL file"
        )
    records, places = read_json_records(path)
    by_instruction: dict[str, str] = {}
    generator = path.stem
    for place, rec in zip(places, records, strict=True):
        if not isinstance(rec, dict) or "instruction" not in rec or "output" not in rec:
            raise InstructionSetError(f"{place}: a reference output needs 'instruction' and 'output' fields")
        by_instruction.setdefault(rec["instruction"], rec["output"])
        generator = rec.get("generator", generator)
    refs = []
    for n, ins in enumerate(instructions):
        if ins.instruction not in by_instruction:
            raise InstructionSetError(f"{path}: no reference output for instruction {n + 1} ({ins.instruction[:60]!r})")
        refs.append(by_instruction[ins.instruction])
    return str(generator), refs


def evaluate(config: EvalConfig, *, progress: bool = True, shard: Shard = (0, 1)) -> EvalResult:
    """Runs (or resumes) the evaluation a config describes and writes its outputs, report and plots.

    As shard (i, n) of n processes (guide/shards.py), it generates and judges instructions i, i+n, ... of every
    system; the last shard to finish then writes what one process writes (`complete` says whether this one did)."""
    out = Path(config.output_dir)
    systems = config.system_list()
    for s in systems:  # every check that can fail comes before anything is written
        if s.name in RESERVED:
            raise EvalConfigError(f"system name {s.name!r} is reserved (it names a folder of the output): rename it")
        check_system(s)
    ref = config.reference
    if ref is not None and ref != "dataset" and ref not in {s.name for s in systems} and not Path(ref).is_file():
        raise EvalConfigError(
            f"reference {ref!r}: neither a system of this recipe ({[s.name for s in systems]}), 'dataset', "
            "nor a JSON/JSONL file of reference outputs"
        )
    check_judge(config)
    if config.lm_eval_tasks:
        check_lm_eval()
    instructions = load_instructions(
        config.instructions,
        split=config.instructions_split,
        subset=config.instructions_subset,
        limit=config.num_instructions,
    )
    logger.info("%d instructions from %s, %d systems", len(instructions), config.instructions, len(systems))
    # before anything is written or generated: the reference pairs with the instructions, every instruction
    # has its difficulty, every system's models load (weights, code, prompt format, vocabulary) and hold every
    # instruction, the output is writable
    if ref is not None and ref not in {s.name for s in systems}:
        _reference_outputs(config, instructions, {})
    difficulty = None
    if ref is not None and config.lc_difficulty not in ("none", "fitted"):
        difficulty = load_difficulty(config.lc_difficulty, instructions)
    texts = [ins.instruction for ins in instructions]
    for s in systems:
        try:
            if s.endpoint is not None:
                Endpoint.of(s.name, s.endpoint).check(s.name)
            else:
                check_guide(GuideConfig.from_dict(dict(s.guide)), texts)
        except UserError as e:
            raise GenerationError(f"system {s.name!r}: {e}") from None
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    i, n = shard
    lock = FileLock(str(out / (".w2s-eval.lock" if n == 1 else f".w2s-eval.{i}-of-{n}.lock")))  # the OS releases it
    try:
        lock.acquire(timeout=0)
    except Timeout:
        which = "another `w2s eval`" if n == 1 else f"another process of shard {i}/{n}"
        raise EvalConfigError(f"{out}: {which} is writing there; wait for it or use another output_dir") from None
    try:
        remove_stale_temps(out)  # what a killed run was writing
        if n == 1:
            return _evaluate(config, systems, instructions, difficulty, out, progress=progress)
        job = ShardedJob(out / SHARD_MARKS, shard)
        job.begin()
        result = _evaluate_shard(config, systems, instructions, out, job, progress=progress)
        with job.finish() as last:  # the last shard to finish writes the results
            if last:
                result = _evaluate(config, systems, instructions, difficulty, out, progress=progress, shard=shard)
            return result
    finally:
        lock.release()


def _evaluate_shard(
    config: EvalConfig, systems, instructions: list[Instruction], out: Path, job: ShardedJob, *, progress
):
    """A shard's share of an evaluation (`job`: shard (i, n)): every system's outputs of instructions i, i+n, ...,
    and their judgements (a system's reference outputs of those instructions are this shard's too); nothing merged."""
    shard, mine = job.shard, job.items(len(instructions))
    result = EvalResult(rows=[], instructions={"n": len(instructions), "shard": list(shard)}, complete=False)
    outputs = {}
    for s in systems:
        recs, result.generation[s.name] = generate_outputs(
            s, instructions, out / s.name, batch_size=config.batch_size, progress=progress, shard=shard, items=mine,
        )  # fmt: skip
        outputs[s.name] = [recs[k]["text"] for k in mine]
    subset = [instructions[k] for k in mine]
    ref_name, references = _reference_outputs(config, subset, outputs)
    judge = make_judge(config)
    log, counts = judgement_log(judge, out, shard), JudgeCounts()
    for s in systems:
        annotate(judge, log, s.name, [ins.instruction for ins in subset], outputs[s.name], ref_name, references,
                 batch_size=config.judge_batch_size, counts=counts)  # fmt: skip
    result.judging = {"judged": counts.judged, "cached": counts.cached, "judge": judge.name}
    return result


def _evaluate(
    config: EvalConfig,
    systems,
    instructions: list[Instruction],
    difficulty,
    out: Path,
    *,
    progress: bool,
    shard: Shard = (0, 1),
) -> EvalResult:
    dropped = sum(ins.duplicates for ins in instructions)
    result = EvalResult(rows=[], instructions={"n": len(instructions), "duplicates_dropped": dropped})

    records: dict[str, list[dict]] = {}
    for s in systems:
        recs, counts = generate_outputs(
            s, instructions, out / s.name, batch_size=config.batch_size, progress=progress, shard=shard
        )
        records[s.name], result.generation[s.name] = recs, counts
        write_json(
            out / s.name / "model_outputs.json",
            [
                {"instruction": ins.instruction, "output": r["text"], "generator": s.name, "dataset": ins.dataset}
                for ins, r in zip(instructions, recs, strict=True)
            ],
        )
    outputs = {name: [r["text"] for r in recs] for name, recs in records.items()}
    ref_name, references = _reference_outputs(config, instructions, outputs)

    judge = make_judge(config)
    log = judgement_log(judge, out, shard)
    counts = JudgeCounts()
    texts = [ins.instruction for ins in instructions]
    annotations = {}
    for s in systems:
        annotations[s.name] = annotate(
            judge,
            log,
            s.name,
            texts,
            outputs[s.name],
            ref_name,
            references,
            batch_size=config.judge_batch_size,
            counts=counts,
        )
        write_json(out / s.name / "annotations.json", annotations[s.name])
    result.judging = {"judged": counts.judged, "cached": counts.cached, "judge": judge.name}

    tables = lc_tables(systems, annotations, outputs, ref_name, references) if references is not None else {}
    lc = _length_controlled(config, instructions, difficulty, tables, out, workers=shard[1])
    result.rows = rows = leaderboard_rows(config, systems, records, annotations, ref_name, references, lc)

    write_tables(rows, out, reference=ref_name, judge=judge.name)
    files = [str(out / "leaderboard.csv"), str(out / "leaderboard.md")]
    if config.lc_difficulty == "fitted" and tables:
        files.append(str(out / DIFFICULTY_FILE))
    plots = {
        "win_rate.png": lambda path: plot_win_rates(rows, path, reference=ref_name, judge=judge.name),
        "reward_vs_compute.png": lambda path: plot_reward_vs_compute(
            rows, path, compute_axis=config.compute_axis, judge=judge.name
        ),
    }
    for name, plot in plots.items():
        if plot(out / name):
            files.append(str(out / name))
        else:  # nothing to draw (e.g. no reference): leave no stale plot of an earlier run
            (out / name).unlink(missing_ok=True)
    result.files = files
    write_json(out / "results.json", {"config": asdict(config), "reference": ref_name, **asdict(result)})
    return result


def _length_controlled(
    config: EvalConfig, instructions, difficulty: list | None, tables: dict, out: Path, *, workers: int = 1
) -> dict:
    """Each compared system's LC win rate and SE under `lc_difficulty` (a file's `difficulty` was read up front);
    a fitted difficulty is written to instruction_difficulty.csv, a file `lc_difficulty` reads back. The last
    shard of n bootstraps the systems' SEs in n processes (the other shards' processes have ended)."""
    path = out / DIFFICULTY_FILE
    if config.lc_difficulty == "fitted" and tables:
        fitted = instruction_difficulty(tables)
        difficulty = [fitted[n] for n in range(len(instructions))]
        write_difficulty(path, instructions, difficulty)
    elif Path(config.lc_difficulty).expanduser().resolve() != path.resolve():  # unless it is this run's input
        path.unlink(missing_ok=True)  # no stale difficulties of an earlier run
    return length_controlled_win_rates(
        tables,
        difficulty=None if difficulty is None else dict(enumerate(difficulty)),
        bootstrap_samples=config.lc_bootstrap_samples,
        seed=config.seed,
        workers=workers,
    )


def lc_tables(systems, annotations: dict, outputs: dict, ref_name: str | None, references: list[str]) -> dict:
    """The LC GLM's inputs for each system compared with the reference (instruction ids: places in the set)."""
    return {
        s.name: {
            "preferences": [a.get("preference") for a in annotations[s.name]],
            "len_system": [len(o) for o in outputs[s.name]],
            "len_reference": [len(o) for o in references],
            "instruction_ids": list(range(len(references))),
        }
        for s in systems
        if s.name != ref_name
    }


def write_difficulty(path: Path, instructions: list[Instruction], difficulty: list[float]) -> None:
    """Instruction difficulties as a CSV that `lc_difficulty` reads back (instruction, instruction_difficulty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["instruction", "instruction_difficulty"])
    writer.writerows([ins.instruction, d] for ins, d in zip(instructions, difficulty, strict=True))
    write_atomic(path, buf.getvalue())


def leaderboard_rows(
    config: EvalConfig,
    systems,
    records: dict[str, list[dict]],
    annotations: dict[str, list[dict]],
    ref_name: str | None,
    references: list[str] | None,
    lc: dict[str, dict],
) -> list[dict]:
    """One row per system: win rate with SE and interval, LC win rate and SE (`lc`: length_controlled_win_rates),
    missing preferences, reward, length, cost."""
    outputs = {name: [r["text"] for r in recs] for name, recs in records.items()}
    rows = []
    for s in systems:
        ann = annotations[s.name]
        row: dict = {"system": s.name, "decoder": s.decoder, "n_total": len(ann)}
        if references is not None:
            prefs = [a.get("preference") for a in ann]
            missing = sum(p is None or p != p for p in prefs)  # p != p: NaN
            row.update(n_total=len(ann) - missing, n_missing=missing)
            if missing < len(ann):
                row.update(win_rate(prefs, bootstrap_samples=config.bootstrap_samples, seed=config.seed).as_dict())
            if s.name == ref_name:
                row.update(lc_win_rate=50.0, lc_standard_error=0.0)
            else:
                row.update(lc[s.name])
        if "reward_2" in ann[0]:
            row["reward_mean"], row["reward_se"] = mean_and_se(a["reward_2"] for a in ann)
        row["avg_length"] = sum(len(o) for o in outputs[s.name]) / len(ann)
        c = cost(records[s.name])
        row.update({k: c[k] for k in ("tokens_per_item", "strong_tokens_per_item", "seconds_per_item")})
        row["tokens"] = c["tokens"]
        rows.append(row)
    return rows
