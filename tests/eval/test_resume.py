"""A run killed (SIGKILL) during generation or judging resumes without redoing finished items or duplicating any."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.processes import kill_when
from w2s.eval.config import load_config
from w2s.eval.run import evaluate

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = {"decoder": "sample", "temperature": 1.0, "top_k": 0, "seed": 0}


def _complete_lines(path: Path) -> list[dict]:
    """The whole records of a log so far (a line cut by a kill left out, and a log of generations' header)."""
    if not path.exists():
        return []
    data = path.read_bytes()
    lines = [json.loads(line) for line in data[: data.rfind(b"\n") + 1].splitlines() if line.strip()]
    return lines[1:] if lines and "sampler" in lines[0] else lines


def _run_and_kill(recipe: Path, watched: Path, at_least: int, total: int) -> int:
    """Starts `w2s eval` in a subprocess, SIGKILLs it once `watched` holds `at_least` records; returns how many it held."""
    args = ["-m", "w2s.cli", "eval", "--config", str(recipe), "--quiet"]
    kill_when(args, ROOT, lambda: len(_complete_lines(watched)) >= at_least, f"{at_least} records in {watched}")
    done = len(_complete_lines(watched))
    assert at_least <= done < total, f"killed too late: {done} of {total} already done"
    return done


@pytest.mark.slow
def test_killed_during_generation_resumes_without_redoing_or_duplicating(tmp_path, world_paths):
    n = 24
    out = tmp_path / "out"
    recipe = tmp_path / "eval.yaml"
    settings = {
        "num_instructions": n,
        "reference": None,
        "judge": "gold",
        "batch_size": 2,
        "bootstrap_samples": 100,
        "output_dir": str(out),
        "systems": [
            {"name": "base", "guide": {"strong_model": "tiny:strong", "max_new_tokens": 40, "batch_size": 2, **SAMPLE}}
        ],
    }
    recipe.write_text(yaml.safe_dump(settings))
    log = out / "base" / "generations.jsonl"
    done = _run_and_kill(recipe, log, at_least=4, total=n)
    before = _complete_lines(log)

    # the rerun may save in larger batches: only the systems' guide recipes must stay the same
    result = evaluate(load_config(recipe, {"batch_size": n}), progress=False)
    assert result.generation["base"] == {"reused": done, "generated": n - done}  # finished items were not redone
    after = _complete_lines(log)
    assert len(after) == n and sorted(r["index"] for r in after) == list(range(n))  # no duplicates, none missing
    assert after[:done] == before  # the killed run's records are kept as they were
    assert len({r["attempt"] for r in after[:done]}) == 1
    assert {r["attempt"] for r in after[done:]}.isdisjoint({r["attempt"] for r in after[:done]})
    outputs = json.loads((out / "base" / "model_outputs.json").read_text())
    assert [o["output"] for o in outputs] == [r["text"] for r in sorted(after, key=lambda r: r["index"])]


@pytest.mark.slow
def test_killed_and_resumed_runs_write_what_an_uninterrupted_run_writes(tmp_path, world_paths):
    """Killed twice (in the first system's generation, then in the second's) and resumed with other batch
    sizes: model_outputs.json and annotations.json are byte-identical to one uninterrupted run's."""
    n = 12
    guides = {
        "base": {"strong_model": "tiny:strong", "max_new_tokens": 24, **SAMPLE},
        "cbs": {"strong_model": "tiny:strong", "tuned": "tiny:guide", "untuned": "tiny:weak", "decoder": "cbs",
                "width": 2, "successors": 2, "chunk_len": 4, "max_new_tokens": 24, "temperature": 1.0, "top_k": 0},
    }  # fmt: skip

    def recipe(name: str, batch_size: int) -> Path:
        settings = {
            "num_instructions": n, "reference": "base", "judge": "gold", "batch_size": batch_size,
            "bootstrap_samples": 100, "output_dir": str(tmp_path / name),
            "systems": [{"name": k, "guide": {**g, "batch_size": batch_size}} for k, g in guides.items()],
        }  # fmt: skip
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(settings))
        return path

    evaluate(load_config(recipe("whole", 8)), progress=False)
    killed = recipe("killed", 1)
    _run_and_kill(killed, tmp_path / "killed" / "base" / "generations.jsonl", at_least=3, total=n)
    _run_and_kill(killed, tmp_path / "killed" / "cbs" / "generations.jsonl", at_least=2, total=n)
    evaluate(load_config(recipe("killed", 3)), progress=False)  # resumed with another batch size
    for system, name in (("base", "model_outputs.json"), ("cbs", "model_outputs.json"), ("cbs", "annotations.json")):
        whole, resumed = (tmp_path / run / system / name for run in ("whole", "killed"))
        assert resumed.read_bytes() == whole.read_bytes(), (system, name)


@pytest.mark.slow
def test_killed_during_judging_resumes_without_judging_twice(tmp_path, world_paths):
    n = 16
    out = tmp_path / "out"
    recipe = tmp_path / "eval.yaml"
    gen = {"max_new_tokens": 16, "batch_size": 16, **SAMPLE}
    settings = {
        "num_instructions": n,
        "reference": "base",
        "judge": "llm",
        "judge_model": "tiny:strong",
        "judge_batch_size": 1,
        "batch_size": 16,
        "bootstrap_samples": 100,
        "output_dir": str(out),
        "systems": [
            {"name": "base", "guide": {"strong_model": "tiny:strong", **gen}},
            {"name": "weak", "guide": {"strong_model": "tiny:weak", **gen}},
        ],
    }
    recipe.write_text(yaml.safe_dump(settings))
    config = load_config(recipe)
    # the outputs first (uninterrupted), so the kill below lands in judging
    evaluate(load_config(None, {**settings, "judge": "gold"}), progress=False)
    weak = [r["text"] for r in sorted(_complete_lines(out / "weak" / "generations.jsonl"), key=lambda r: r["index"])]
    base = [r["text"] for r in sorted(_complete_lines(out / "base" / "generations.jsonl"), key=lambda r: r["index"])]
    pairs = sum(a != b for a, b in zip(base, weak, strict=True))  # identical outputs tie without a judge

    from w2s.data.judges import LocalLLMJudge
    from w2s.eval.annotate import judgement_log

    cache = judgement_log(LocalLLMJudge("tiny:strong"), out).path
    done = _run_and_kill(recipe, cache, at_least=3, total=pairs)

    result = evaluate(config, progress=False)
    assert result.generation["weak"] == {"reused": n, "generated": 0}
    assert result.judging["judged"] == pairs - done  # only what the killed run had not judged
    assert result.judging["cached"] == done  # judged + cached = the pairs to judge
    lines = _complete_lines(cache)
    assert len(lines) == pairs == len({r["key"] for r in lines})  # every pair judged exactly once
    ann = json.loads((out / "weak" / "annotations.json").read_text())
    assert len(ann) == n and all(1 <= a["preference"] <= 2 for a in ann)


def test_outputs_sampled_by_another_release_are_not_mixed_in(tmp_path, world_paths):
    guide = {"strong_model": "tiny:strong", "max_new_tokens": 8, **SAMPLE}
    settings = {"num_instructions": 2, "reference": None, "judge": "gold", "output_dir": str(tmp_path / "out"),
                "systems": [{"name": "base", "guide": guide}]}  # fmt: skip
    evaluate(load_config(None, settings), progress=False)
    log = tmp_path / "out" / "base" / "generations.jsonl"
    assert evaluate(load_config(None, settings), progress=False).generation["base"]["reused"] == 2
    header, *records = log.read_text().splitlines(keepends=True)
    log.write_text(json.dumps({**json.loads(header), "sampler": "an older sampler"}) + "\n" + "".join(records))
    from w2s.eval.generate import GenerationError

    with pytest.raises(GenerationError, match="sampled by another release"):
        evaluate(load_config(None, settings), progress=False)
    log.write_text("".join(records))  # a log of a release whose logs had no header: not mixed in either
    with pytest.raises(GenerationError, match="written by an older w2s"):
        evaluate(load_config(None, settings), progress=False)


def test_a_line_cut_by_a_kill_is_dropped_and_the_log_stays_valid(tmp_path):
    from w2s.guide.logs import ResumableLog

    path = tmp_path / "log.jsonl"
    path.write_text('{"index": 0, "text": "a"}\n{"index": 1, "text": "b"}\n{"index": 2, "te')  # killed mid-write
    log = ResumableLog(path, "index")
    assert sorted(log.records) == [0, 1]
    log.append([{"index": 1, "text": "again"}, {"index": 2, "text": "c"}])  # 1 is already there: not written twice
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"index": 0, "text": "a"},
        {"index": 1, "text": "b"},
        {"index": 2, "text": "c"},
    ]
