"""Prompt sources, bad input that fails clearly, pairing, filters and binarising rated sets."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest
import yaml
from datasets import Dataset, DatasetDict, load_from_disk

from w2s.cli import main as w2s_main
from w2s.data.binarize import BinarizeConfig, binarize_rows, binarize_to_disk
from w2s.data.cli import main
from w2s.data.filters import contaminated, degenerate, exact_duplicates, length_ratio
from w2s.data.pairing import Candidate, make_pairs
from w2s.data.prompts import PromptError, load_prompts
from w2s.guide.shards import parse_shard

ROOT = Path(__file__).resolve().parents[2]


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_prompts_from_jsonl_json_disk_and_messages(tmp_path):
    rows = [{"q": "a b ."}, {"q": [{"role": "system", "content": "s"}, {"role": "user", "content": "c d ."},
                                   {"role": "assistant", "content": "e"}]}, {"q": "  "}]  # fmt: skip
    prompts, empty = load_prompts(str(_jsonl(tmp_path / "p.jsonl", rows)), field="q")
    assert prompts == [[{"role": "user", "content": "a b ."}],
                       [{"role": "system", "content": "s"}, {"role": "user", "content": "c d ."}]]  # fmt: skip
    assert empty == 1
    (tmp_path / "p.json").write_text(json.dumps(rows))
    assert load_prompts(str(tmp_path / "p.json"), field="q") == (prompts, 1)
    DatasetDict({"train": Dataset.from_list([{"q": "x y ."}, {"q": "z ."}])}).save_to_disk(str(tmp_path / "disk"))
    assert load_prompts(str(tmp_path / "disk"), field="q", limit=1)[0] == [[{"role": "user", "content": "x y ."}]]
    with pytest.raises(PromptError, match="no split 'test'"):
        load_prompts(str(tmp_path / "disk"), field="q", split="test")


def test_bad_prompt_files_name_the_file_and_line(tmp_path):
    broken = _jsonl(tmp_path / "broken.jsonl", [{"prompt": "a ."}, {"prompt": "b ."}, '{"prompt": "c .",'])
    with pytest.raises(PromptError, match=r"broken\.jsonl:3: not a JSON object"):
        load_prompts(str(broken))
    missing = _jsonl(tmp_path / "missing.jsonl", [{"prompt": "a ."}, {"text": "b ."}])
    with pytest.raises(PromptError, match=r"missing\.jsonl:2: no field 'prompt' \(it has text\)"):
        load_prompts(str(missing))
    empty = _jsonl(tmp_path / "empty.jsonl", [{"prompt": ""}, {"prompt": " "}])
    with pytest.raises(PromptError, match="the prompt set is empty"):
        load_prompts(str(empty))


def _recipe(tmp_path: Path, **changes) -> Path:
    values = yaml.safe_load((ROOT / "recipes" / "tiny" / "data.yaml").read_text())
    values.update(num_prompts=24, shard_size=8, output_dir=str(tmp_path / "out"), decontaminate=[])
    values["generators"][0].update(num_samples=2, max_new_tokens=16)
    values.update(changes)
    path = tmp_path / "data.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_cli_fails_clearly_on_bad_input_and_keeps_earlier_shards(tmp_path, capsys, world_paths):
    broken = _jsonl(tmp_path / "p.jsonl", [{"prompt": "the film was good ."}, "not json"])
    assert main(["build", "--config", str(_recipe(tmp_path, prompt_source=str(broken)))]) == 2
    assert "p.jsonl:2: not a JSON object" in capsys.readouterr().err
    assert not (tmp_path / "out" / "card.json").exists()

    assert main(["build", "--config", str(_recipe(tmp_path)), "--num_promts", "3"]) == 2
    assert "unknown key 'num_promts'" in capsys.readouterr().err

    # a judge that cannot load: generation shards are committed and kept; fixing the judge reuses them
    bad_judge = [{"name": "rm", "kind": "reward_model", "model": str(tmp_path / "no-such-rm")}]
    assert main(["build", "--config", str(_recipe(tmp_path, judges=bad_judge))]) == 2
    assert "judge 'rm' (reward_model): cannot load" in capsys.readouterr().err
    shards = sorted((tmp_path / "out" / "work").glob("gen-*/*.jsonl"))
    assert len(shards) == 3
    stamps = [s.stat().st_mtime_ns for s in shards]
    assert main(["build", "--config", str(_recipe(tmp_path))]) == 0
    assert [s.stat().st_mtime_ns for s in shards] == stamps  # not regenerated
    assert (tmp_path / "out" / "card.json").exists()


def test_pairing_strategies_and_ties():
    c = [Candidate(f"r{i}", "g", s, {}) for i, s in enumerate([1.0, 3.0, 3.0, -2.0, 0.5])]
    rng = random.Random(0)
    assert make_pairs(c, "best_worst", rng) == [(c[1], c[3])]  # the first of equal bests
    chosen, rejected = make_pairs(c, "best_random", random.Random(0))[0]
    assert chosen is c[1] and rejected in (c[0], c[3], c[4])  # never the tied c[2]
    pairs = make_pairs(c, "all_pairs", rng)
    assert len(pairs) == 3 + 3 + 2 + 1  # each 3.0 beats 1, -2, 0.5 (not the other 3.0); 1 beats 2; 0.5 beats 1
    assert all(a.score > b.score for a, b in pairs)
    assert make_pairs([c[1], c[2]], "best_worst", rng) == []  # all tied


def test_filters_by_hand():
    assert exact_duplicates(["A b", "a  b", "a c", "A B "]) == [False, True, False, True]
    assert contaminated(["one two three four", "five six"], ["zero one two three four nine"], n=3) == [True, False]
    assert contaminated(["five six"], ["five six"], n=3) == [True]  # shorter than n: the whole text
    assert degenerate("") and degenerate("   ")
    assert degenerate("it was good . it was good . it was good . it was good .")
    assert not degenerate("the plot was bad . the film was good .")
    assert length_ratio("a b c d", "a b") == 2.0


UF_ROWS = [
    {"instruction": "p1", "completions": [
        {"model": "m1", "response": "low", "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "N/A"}}},
        {"model": "m2", "response": "high", "annotations": {"helpfulness": {"Rating": "5"}, "honesty": {"Rating": "4"}}},
        {"model": "m3", "response": "mid", "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "4"}}},
    ]},
    {"instruction": "p2", "completions": [
        {"model": "m1", "response": "a", "annotations": {"helpfulness": {"Rating": "3"}}},
        {"model": "m2", "response": "b", "annotations": {"helpfulness": {"Rating": "3"}}},
    ]},
    {"instruction": "p3", "completions": [{"model": "m1", "response": "a", "annotations": {"helpfulness": {"Rating": "3"}}}]},
]  # fmt: skip


def test_binarize_picks_the_highest_mean_and_a_random_lower_one(tmp_path):
    config = BinarizeConfig(rating_keys=["annotations.helpfulness.Rating", "annotations.honesty.Rating"])
    pairs, counts = binarize_rows([(f"row {i}", r) for i, r in enumerate(UF_ROWS)], config)
    assert counts == {"rows": 3, "fewer than 2 rated completions": 1, "all tied": 1, "empty prompt": 0, "pairs": 1}
    (pair,) = pairs
    assert pair["chosen"][0]["content"] == "high" and pair["score_chosen"] == 4.5  # mean of 5 and 4
    assert pair["rejected"][0]["content"] in ("low", "mid")
    assert pair["score_rejected"] == {"low": 2.0, "mid": 4.0}[pair["rejected"][0]["content"]]  # N/A skipped
    seen = {binarize_rows([("r", UF_ROWS[0])], BinarizeConfig(seed=s))[0][0]["rejected"][0]["content"] for s in range(20)}  # fmt: skip
    assert seen == {"low", "mid"}  # the rejected one is drawn at random among the lower ones

    source = _jsonl(tmp_path / "uf.jsonl", UF_ROWS * 10)
    assert main(["binarize", "--source", str(source), "--output_dir", str(tmp_path / "bin"), "--test_fraction", "0.2",
                 "--rating_keys", "annotations.helpfulness.Rating", "annotations.honesty.Rating"]) == 0  # fmt: skip
    data = load_from_disk(str(tmp_path / "bin"))
    assert len(data["train"]) + len(data["test"]) == 10
    with pytest.raises(PromptError, match=r"uf\.jsonl: item|no field 'prompt'"):
        binarize_to_disk(str(source), tmp_path / "other", BinarizeConfig(prompt_field="prompt"))


def test_merge_before_the_shards_exist_fails_and_the_bench_prints_its_ratio(tmp_path, capsys, world_paths):
    assert main(["merge", "--config", str(_recipe(tmp_path))]) == 2
    assert "shard file(s) are not written yet" in capsys.readouterr().err
    assert main(["build", "--config", str(_recipe(tmp_path)), "--shard", "1/2"]) == 0  # shards 1 only: no merge
    assert not (tmp_path / "out" / "card.json").exists()
    assert main(["build", "--config", str(_recipe(tmp_path)), "--shard", "0/2", "--no-merge"]) == 0
    assert main(["merge", "--config", str(_recipe(tmp_path))]) == 0
    assert (tmp_path / "out" / "card.json").exists()
    args = [
        "--models",
        "tiny:weak",
        "random:1x64",  # a random-initialised Llama, saved for both sides
        "--num_prompts",
        "2",
        "--num_samples",
        "2",
        "--max_new_tokens",
        "4",
        "--rounds",
        "1",
    ]
    assert w2s_main(["bench", "data", *args]) == 0
    out = capsys.readouterr().out
    assert "data build generation / plain generate loop at 4 new tokens" in out
    lengths = re.search(r"plain loop ([\d.]+), data stage ([\d.]+) \(of 4 at most\)", out)
    assert lengths and all(0 < float(x) <= 4 for x in lengths.groups()), out


def test_shards_come_from_the_flag_or_the_rank_under_accelerate(monkeypatch):
    assert parse_shard("2/4") == (2, 4)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parse_shard(None) == (3, 8)
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)
