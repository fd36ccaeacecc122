"""`w2s eval` end to end on the tiny world: AlpacaEval files, leaderboard, plots, reruns that redo nothing."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from w2s.data.world import gold_reward
from w2s.eval.cli import main as eval_main
from w2s.eval.config import load_config
from w2s.eval.generate import GenerationError
from w2s.eval.metrics import instruction_difficulty, length_controlled_win_rates
from w2s.eval.run import evaluate
from w2s.guide.streams import STREAMS
from w2s.guide.types import Generation

N = 12
pytestmark = pytest.mark.slow  # the module's shared run generates with two models (tens of seconds on 2 cores)


def _systems(max_new_tokens=24):
    sample = {"decoder": "sample", "max_new_tokens": max_new_tokens, "temperature": 1.0, "top_k": 0, "seed": 0}
    return [
        {"name": "base", "guide": {"strong_model": "tiny:strong", **sample}},
        {"name": "weak", "guide": {"strong_model": "tiny:weak", **sample}},
    ]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, world_paths):
    out = tmp_path_factory.mktemp("eval")
    config = load_config(
        None,
        {"systems": _systems(), "num_instructions": N, "reference": "base", "judge": "gold", "output_dir": str(out),
         "batch_size": 5, "bootstrap_samples": 200},
    )  # fmt: skip
    first = evaluate(config, progress=False)
    second = evaluate(config, progress=False)
    return out, config, first, second


def test_outputs_are_alpacaeval_files_and_the_leaderboard_recomputes(run_dir):
    out, _, first, _ = run_dir
    rows = {r["system"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    assert set(rows) == {"base", "weak"}
    for name in ("base", "weak"):
        outputs = json.loads((out / name / "model_outputs.json").read_text())
        assert len(outputs) == N
        assert set(outputs[0]) == {"instruction", "output", "generator", "dataset"}
        assert {o["generator"] for o in outputs} == {name}
        ann = json.loads((out / name / "annotations.json").read_text())
        assert len(ann) == N
        assert {"instruction", "output_1", "generator_1", "output_2", "generator_2", "annotator", "preference"} <= set(
            ann[0]
        )
        base = json.loads((out / "base" / "model_outputs.json").read_text())
        assert [a["output_1"] for a in ann] == [o["output"] for o in base]
        # recompute the gold reward and the preferences from the written outputs
        instr = [o["instruction"] for o in outputs]
        mine, ref = gold_reward(instr, [o["output"] for o in outputs]), gold_reward(instr, [o["output"] for o in base])
        prefs = [2.0 if m > r else 1.0 if m < r else 1.5 for m, r in zip(mine, ref, strict=True)]
        assert [a["preference"] for a in ann] == prefs
        assert float(rows[name]["win_rate"]) == pytest.approx(100 * sum(p - 1 for p in prefs) / N)
        assert float(rows[name]["reward_mean"]) == pytest.approx(sum(mine) / N)
        assert float(rows[name]["avg_length"]) == pytest.approx(sum(len(o["output"]) for o in outputs) / N)
        assert float(rows[name]["tokens_per_item"]) > 0
    assert float(rows["base"]["win_rate"]) == 50.0  # the reference against itself: all ties
    md = (out / "leaderboard.md").read_text()
    assert "| base |" in md and "| weak |" in md and "LC win rate" in md
    for png in ("win_rate.png", "reward_vs_compute.png"):
        data = (out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert first.generation == {"base": {"reused": 0, "generated": N}, "weak": {"reused": 0, "generated": N}}


def test_a_rerun_generates_and_judges_nothing(run_dir):
    out, _, first, second = run_dir
    assert second.generation == {"base": {"reused": N, "generated": 0}, "weak": {"reused": N, "generated": 0}}
    assert second.judging["judged"] == 0 and first.judging["judged"] > 0
    assert second.rows == first.rows
    for name, model in (("base", "tiny:strong"), ("weak", "tiny:weak")):
        header, *records = (json.loads(line) for line in (out / name / "generations.jsonl").read_text().splitlines())
        assert header["sampler"] == STREAMS and header["recipe"]["strong_model"] == model
        assert sorted(r["index"] for r in records) == list(range(N))
        # each item's own tokens, its batch's wall time, why it stopped: its whole Generation
        assert all(isinstance(r["tokens"]["strong"], int) and r["batch_seconds"] >= r["seconds"] > 0 for r in records)
        assert all(r["stop"] in ("eos", "stop_string", "max_new_tokens", "context") for r in records)
        assert {f.name for f in dataclasses.fields(Generation)} <= set(records[0])


def test_the_judging_and_generation_counts_add_up_fresh_and_resumed(run_dir):
    out, _, first, second = run_dir
    outputs = {name: json.loads((out / name / "model_outputs.json").read_text()) for name in ("base", "weak")}
    # the gold judge's verdicts: one reward per distinct (instruction, output), the reference's read once
    total = len({(o["instruction"], o["output"]) for rows in outputs.values() for o in rows})
    assert (first.judging["judged"], first.judging["cached"]) == (total, 0)  # a new evaluation judges everything
    assert (second.judging["judged"], second.judging["cached"]) == (0, total)  # its rerun finds it all cached
    for result in (first, second):
        assert all(g["generated"] + g["reused"] == N for g in result.generation.values())


def test_reference_from_a_file_and_from_the_dataset(run_dir, tmp_path):
    out, config, _, _ = run_dir
    base = json.loads((out / "base" / "model_outputs.json").read_text())
    ref_file = tmp_path / "reference.json"
    ref_file.write_text(json.dumps([{**o, "generator": "ref"} for o in base]))
    # a copy of the run folder resumes everything and only judges the new reference
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = load_config(None, {**{k: getattr(config, k) for k in ("systems", "num_instructions", "batch_size")},
                             "reference": str(ref_file), "output_dir": str(copy), "bootstrap_samples": 200})  # fmt: skip
    res = evaluate(cfg, progress=False)
    by_name = {r["system"]: r for r in res.rows}
    assert by_name["base"]["win_rate"] == 50.0
    ann = json.loads((copy / "weak" / "annotations.json").read_text())
    assert {a["generator_1"] for a in ann} == {"ref"}
    assert res.judging["judged"] == 0  # same texts, same judge: all from the cache

    instr = tmp_path / "set.jsonl"
    instr.write_text("".join(json.dumps({"instruction": o["instruction"]}) + "\n" for o in base))
    with pytest.raises(Exception, match=r"instruction 1 .* has no 'output' field"):
        evaluate(load_config(None, {"systems": _systems(), "instructions": str(instr), "reference": "dataset",
                                    "output_dir": str(copy)}), progress=False)  # fmt: skip


def test_lc_win_rates_and_their_standard_errors_are_reported(run_dir):
    out, config, _, _ = run_dir
    table = {r["system"]: r for r in csv.DictReader((out / "leaderboard.csv").open())}
    saved = {r["system"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    ann = json.loads((out / "weak" / "annotations.json").read_text())
    lc = length_controlled_win_rates(
        {"weak": {"preferences": [a["preference"] for a in ann], "len_system": [len(a["output_2"]) for a in ann],
                  "len_reference": [len(a["output_1"]) for a in ann], "instruction_ids": range(N)}},
        bootstrap_samples=config.lc_bootstrap_samples, seed=config.seed,
    )["weak"]  # fmt: skip
    assert float(table["weak"]["lc_win_rate"]) == pytest.approx(lc["lc_win_rate"])
    assert float(table["weak"]["lc_standard_error"]) == pytest.approx(lc["lc_standard_error"])
    assert saved["weak"]["lc_standard_error"] == pytest.approx(lc["lc_standard_error"]) and lc["lc_standard_error"] > 0
    assert (table["base"]["lc_win_rate"], table["base"]["lc_standard_error"]) == ("50.0", "0.0")  # the reference
    assert table["weak"]["n_missing"] == "0" and "| missing |" not in (out / "leaderboard.md").read_text()


def _lc_by_hand(folder, difficulty):
    """The LC win rates recomputed from the written annotations (the reference file's base is a compared system)."""
    tables = {}
    for name in ("base", "weak"):
        ann = json.loads((folder / name / "annotations.json").read_text())
        tables[name] = {"preferences": [a["preference"] for a in ann], "len_system": [len(a["output_2"]) for a in ann],
                        "len_reference": [len(a["output_1"]) for a in ann], "instruction_ids": range(len(ann))}  # fmt: skip
    if difficulty == "fitted":
        difficulty = instruction_difficulty(tables)
    return {k: v["lc_win_rate"] for k, v in length_controlled_win_rates(tables, difficulty=difficulty).items()}


def test_lc_difficulty_none_fitted_or_from_a_file(run_dir, tmp_path):
    import shutil

    out, config, _, _ = run_dir
    base = json.loads((out / "base" / "model_outputs.json").read_text())
    ref_file = tmp_path / "reference.json"
    ref_file.write_text(json.dumps([{**o, "generator": "ref"} for o in base]))  # two systems to compare with it
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    keys = {k: getattr(config, k) for k in ("systems", "num_instructions", "batch_size")}

    def run(difficulty):
        cfg = load_config(None, {**keys, "reference": str(ref_file), "output_dir": str(copy), "lc_difficulty": difficulty,
                                 "lc_bootstrap_samples": 20})  # fmt: skip
        res = evaluate(cfg, progress=False)
        assert res.judging["judged"] == 0 and all(g["generated"] == 0 for g in res.generation.values())
        table = {r["system"]: r for r in csv.DictReader((copy / "leaderboard.csv").open())}
        saved = {r["system"]: r for r in json.loads((copy / "results.json").read_text())["rows"]}
        for name, row in table.items():
            assert float(row["lc_standard_error"]) == pytest.approx(saved[name]["lc_standard_error"])
            assert row["n_missing"] == "0" and int(row["n_total"]) == N
        assert float(table["weak"]["lc_standard_error"]) > 0
        assert float(table["base"]["lc_standard_error"]) == 0  # the reference's own outputs: all ties, LC 50
        return {k: float(r["lc_win_rate"]) for k, r in table.items()}, res

    fitted, res = run("fitted")
    difficulty_file = copy / "instruction_difficulty.csv"
    assert str(difficulty_file) in res.files
    rows = list(csv.DictReader(difficulty_file.open()))
    assert [r["instruction"] for r in rows] == [o["instruction"] for o in base]
    assert fitted == pytest.approx(_lc_by_hand(copy, "fitted"))
    shutil.copy(difficulty_file, tmp_path / "difficulty.csv")
    assert run(str(tmp_path / "difficulty.csv"))[0] == fitted  # the file written reads back as the same difficulty
    none, _ = run("none")
    assert none == pytest.approx(_lc_by_hand(copy, None))
    assert not difficulty_file.exists()  # no stale difficulty


def test_duplicate_instructions_are_dropped_so_alpaca_eval_pairs_exactly(run_dir, tmp_path):
    import shutil

    out, config, _, _ = run_dir
    base = json.loads((out / "base" / "model_outputs.json").read_text())
    instr = tmp_path / "set.json"
    records = [{"instruction": o["instruction"]} for o in base]
    instr.write_text(json.dumps(records + records[2:5]))  # three repeated: the run's own instructions kept, in order
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = load_config(None, {"systems": config.systems, "instructions": str(instr), "reference": "base",
                             "output_dir": str(copy), "batch_size": config.batch_size})  # fmt: skip
    res = evaluate(cfg, progress=False)
    assert json.loads((copy / "results.json").read_text())["instructions"] == {"n": N, "duplicates_dropped": 3}
    # alpaca_eval merges the system's and the reference's model_outputs on the instruction text
    system = json.loads((copy / "weak" / "model_outputs.json").read_text())
    reference = {o["instruction"]: o["output"] for o in json.loads((copy / "base" / "model_outputs.json").read_text())}
    assert len(reference) == len(system) == N
    pairs = [(o["instruction"], reference[o["instruction"]], o["output"]) for o in system]
    ann = json.loads((copy / "weak" / "annotations.json").read_text())
    assert pairs == [(a["instruction"], a["output_1"], a["output_2"]) for a in ann]
    assert res.generation["weak"] == {"reused": N, "generated": 0}


def test_a_changed_system_is_refused_not_mixed(run_dir, tmp_path):
    out, _, _, _ = run_dir
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = load_config(None, {"systems": _systems(max_new_tokens=30), "num_instructions": N, "output_dir": str(copy)})
    with pytest.raises(GenerationError, match="system 'base': its guide recipe changed"):
        evaluate(cfg, progress=False)


def test_cli_bad_recipe_exits_non_zero_and_writes_nothing(tmp_path, capsys):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        f"output_dir: {tmp_path / 'out'}\nsystems:\n  - name: base\n    guide: {{strong_model: tiny:strong, decodr: sample}}\n"
    )
    assert eval_main(["--config", str(recipe), "--quiet"]) == 2
    assert "unknown key 'decodr' (did you mean 'decoder'?)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    assert eval_main(["--config", str(recipe), "--judge", "oracle"]) == 2
    assert "'oracle' is not one of" in capsys.readouterr().err


def test_without_a_reference_rewards_only_and_one_writer_at_a_time(run_dir, tmp_path):
    import shutil

    from filelock import FileLock

    from w2s.eval.config import EvalConfigError

    out, _, first, _ = run_dir
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    cfg = load_config(
        None, {"systems": _systems(), "num_instructions": N, "output_dir": str(copy), "reference": "none"}
    )
    res = evaluate(cfg, progress=False)
    assert res.judging["judged"] == 0  # the gold rewards of these outputs are all in the cache
    rows = {r["system"]: r for r in res.rows}
    assert "win_rate" not in rows["weak"] and "lc_win_rate" not in rows["weak"]
    assert rows["weak"]["reward_mean"] == pytest.approx({r["system"]: r for r in first.rows}["weak"]["reward_mean"])
    ann = json.loads((copy / "weak" / "annotations.json").read_text())
    assert "preference" not in ann[0] and "output_1" not in ann[0] and "reward_2" in ann[0]

    with FileLock(str(copy / ".w2s-eval.lock")), pytest.raises(EvalConfigError, match="another `w2s eval` is writing"):
        evaluate(cfg, progress=False)
