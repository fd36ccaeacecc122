"""`w2s data build` on the tiny world: gold-consistent pairs, a card that recounts, resumption after SIGKILL."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from datasets import load_from_disk

from tests.processes import dead_pid, kill_when
from w2s.data.build import build, plan, read_jsonl
from w2s.data.filters import jaccard, ngrams, normalise, words
from w2s.data.recipe import load_recipe
from w2s.data.world import gold_reward, world_prompts
from w2s.guide.files import TEMP_MARK

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "recipes" / "tiny" / "data.yaml"


def _rows(path: Path) -> dict[str, list[dict]]:
    data = load_from_disk(str(path))
    return {split: data[split].to_list() for split in data}


@pytest.mark.slow
def test_tiny_recipe_pairs_follow_the_gold_reward_and_the_card_recounts(tmp_path):
    recipe = load_recipe(TINY, {"num_prompts": 200, "shard_size": 64, "output_dir": str(tmp_path)})
    out = build(recipe, progress=False)
    card = json.loads((out / "card.json").read_text())
    pairs = _rows(out / "pairs")
    everything = pairs["train"] + pairs["test"]

    # 1. every chosen response has a higher gold reward than its rejected one (recomputed from the text)
    prompts = [p["prompt"][0]["content"] for p in everything]
    chosen = gold_reward(prompts, [p["chosen"][0]["content"] for p in everything])
    rejected = gold_reward(prompts, [p["rejected"][0]["content"] for p in everything])
    assert all(c > r for c, r in zip(chosen, rejected, strict=True))
    assert [p["score_chosen"] for p in everything] == chosen

    # 2. the card's prompt counts equal a brute-force recount of the source
    source = world_prompts("train", 200)
    seen, exact, kept = set(), 0, []
    for text in source:
        if normalise(text) in seen:
            exact += 1
        else:
            kept.append(text)
        seen.add(normalise(text))
    near, kept_near = 0, []
    for text in kept:
        grams = ngrams(words(text), 3)
        if any(jaccard(grams, ngrams(words(k), 3)) >= 0.9 for k in kept_near):
            near += 1
        else:
            kept_near.append(text)

    def windows(text: str, n: int = 8) -> set[str]:  # a text shorter than n is one window of itself
        w = text.split()
        return {" ".join(w[i : i + n]) for i in range(max(len(w) - n + 1, 1))}

    evaluation = set().union(*(windows(t) for t in world_prompts("test", 600)))
    contaminated = sum(bool(windows(t) & evaluation) for t in kept_near)
    counts = card["counts"]
    assert counts["prompts"] == {
        "loaded": 200,
        "empty": 0,
        "exact duplicates": exact,
        "near duplicates": near,
        "contaminated": contaminated,
        "kept": 200 - exact - near - contaminated,
    }

    # 3. responses and pairs recount from the generation shards and the gold reward
    p = plan(recipe)
    (gen_dir,) = p.gen_dirs.values()
    generated = [row for f in sorted(gen_dir.glob("*.jsonl")) for row in read_jsonl(f)]
    by_id = {r["id"]: r["messages"][0]["content"] for r in p.prompts}
    assert len(generated) == counts["prompts"]["kept"]
    assert counts["responses"]["generated"] == 4 * len(generated)
    empty = sum(not r.strip() for row in generated for r in row["responses"])
    assert counts["responses"]["empty"] == empty
    ties = 0
    for row in generated:
        responses = [r for r in row["responses"] if r.strip()]
        scores = gold_reward([by_id[row["prompt_id"]]] * len(responses), responses)
        ties += len(set(scores)) < 2
    assert counts["pairs"]["prompts without a pair (ties or < 2 responses)"] == ties
    assert counts["pairs"]["kept"] == len(everything) == len(generated) - ties
    assert card["splits"]["pairs"] == {"train": len(pairs["train"]), "test": len(pairs["test"])}
    assert len({p["prompt_id"] for p in everything}) == len(everything)  # best vs worst: one pair per prompt
    jsonl = [json.loads(line) for line in (out / "jsonl" / "pairs-train.jsonl").open()]
    assert jsonl == pairs["train"]
    sft = _rows(out / "sft")
    assert all(s["messages"][-1]["role"] == "assistant" for s in sft["train"])


KILL_RECIPE = {
    "seed": 7,
    "shard_size": 4,
    "num_threads": 1,
    "prompt_source": "tiny:train",
    "num_prompts": 20,
    "dedup_prompts": "exact",
    "generators": [
        {"name": "weak", "model": "tiny:weak", "num_samples": 2, "max_new_tokens": 24},
        {"name": "strong", "model": "tiny:strong", "num_samples": 1, "max_new_tokens": 24, "temperature": 0.8},
    ],
    "judges": [
        {"name": "gold", "kind": "rule", "rule": "tiny_gold", "weight": 2.0},
        {"name": "pairwise", "kind": "pairwise", "model": "tiny:strong", "labels": ["A", "B"]},
    ],
    "test_fraction": 0.25,
}


def _kill_when(config: Path, folder_glob: str, root: Path) -> None:
    """Runs `w2s data build` and SIGKILLs it as soon as one shard file exists in a folder matching `folder_glob`."""
    args = ["-m", "w2s.data.cli", "build", "--config", str(config)]
    kill_when(args, ROOT, lambda: any(root.glob(f"work/{folder_glob}/*.jsonl")), f"shard in {folder_glob}", 240)


def _shards(root: Path, folder_glob: str) -> int:
    return len(list(root.glob(f"work/{folder_glob}/[0-9]*.jsonl")))


@pytest.mark.slow
def test_a_build_killed_mid_generation_and_mid_judging_resumes_to_the_uninterrupted_result(tmp_path):
    # the reference: uninterrupted, spread over two "processes" (--shard 0/2 and 1/2) and merged
    reference = tmp_path / "reference"
    recipe = load_recipe_dict({**KILL_RECIPE, "output_dir": str(reference)}, tmp_path / "reference.yaml")
    assert build(recipe, shard="0/2", progress=False) is None  # shard 1/2 is still missing
    assert build(recipe, shard="1/2", progress=False) == reference

    resumed = tmp_path / "resumed"
    config = tmp_path / "resumed.yaml"
    config.write_text(yaml.safe_dump({**KILL_RECIPE, "output_dir": str(resumed)}))
    n_shards = len(plan(recipe).shards)
    assert n_shards >= 4

    _kill_when(config, "gen-weak-*", resumed)  # mid-generation
    assert 0 < _shards(resumed, "gen-weak-*") < n_shards or _shards(resumed, "gen-strong-*") < n_shards
    assert not (resumed / "card.json").exists()

    _kill_when(config, "judge-pairwise-*", resumed)  # mid-judging
    assert _shards(resumed, "gen-*") == 2 * n_shards
    assert 0 < _shards(resumed, "judge-pairwise-*") < n_shards
    assert not (resumed / "card.json").exists()

    # what a kill during an atomic write or a merge leaves (a process that no longer runs), planted where
    # such a kill leaves it; and a file of a process that still runs, which must stay
    dead = dead_pid()
    shard_dir = next(resumed.glob("work/gen-weak-*"))
    debris = [shard_dir / f".00003.jsonl{TEMP_MARK}{dead}-a1b2", resumed / f".merge{TEMP_MARK}{dead}-c3d4"]
    debris[0].write_text('{"prompt_id": 1, "resp')
    debris[1].mkdir()
    (debris[1] / "pairs").mkdir()
    live = resumed / f".x{TEMP_MARK}{os.getppid()}-e5f6"
    live.write_text("")

    proc = subprocess.run([sys.executable, "-m", "w2s.data.cli", "build", "--config", str(config)], cwd=ROOT,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not any(d.exists() for d in debris) and live.exists()
    live.unlink()
    stray = [f for f in resumed.rglob("*") if TEMP_MARK in f.name]
    assert not stray, stray  # nothing but the build's own files and folders
    assert _rows(resumed / "pairs") == _rows(reference / "pairs")
    assert _rows(resumed / "sft") == _rows(reference / "sft")
    card, ref_card = (json.loads((d / "card.json").read_text()) for d in (resumed, reference))
    ref_card["recipe"]["output_dir"] = card["recipe"]["output_dir"]
    assert card == ref_card
    # nothing lost, nothing duplicated: one judgement row per kept prompt in every judge's shards
    for judge in ("gold", "pairwise"):
        ids = [r["prompt_id"] for f in sorted(resumed.glob(f"work/judge-{judge}-*/*.jsonl")) for r in read_jsonl(f)]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == card["counts"]["prompts"]["kept"]
    # the ensemble: weighted mean of z-scored judges, recomputed by hand from the raw judge scores
    pairs = _rows(resumed / "pairs")["train"]
    gold = [s for f in sorted(resumed.glob("work/judge-gold-*/*.jsonl")) for r in read_jsonl(f) for s in r["scores"]]
    pw = [s for f in sorted(resumed.glob("work/judge-pairwise-*/*.jsonl")) for r in read_jsonl(f) for s in r["scores"]]

    def z(x, xs):
        mean = sum(xs) / len(xs)
        return (x - mean) / (sum((v - mean) ** 2 for v in xs) / len(xs)) ** 0.5

    for p in pairs[:10]:
        for side in ("chosen", "rejected"):
            raw = p[f"judge_scores_{side}"]
            expected = (2.0 * z(raw["gold"], gold) + 1.0 * z(raw["pairwise"], pw)) / 3.0
            assert p[f"score_{side}"] == pytest.approx(expected)
    # the pairwise judge (tiny:strong): every comparison redone alone, in both orders, from the generation shards
    from tests.data.test_judges import brute_prefer_first
    from w2s.guide.models import load_model_and_tokenizer, resolve_model_path

    judge_model = load_model_and_tokenizer(resolve_model_path("tiny:strong"))
    messages = {r["id"]: r["messages"] for r in plan(recipe).prompts}
    written = {g: {r["prompt_id"]: r["responses"] for f in sorted(resumed.glob(f"work/gen-{g}-*/*.jsonl"))
                   for r in read_jsonl(f)} for g in ("weak", "strong")}  # fmt: skip
    judged = {r["prompt_id"]: r for f in sorted(resumed.glob("work/judge-pairwise-*/*.jsonl")) for r in read_jsonl(f)}
    agreed = compared = 0
    for prompt_id, row in judged.items():
        responses = written["weak"][prompt_id] + written["strong"][prompt_id]  # recipe order
        expected = [0.0] * len(responses)
        for i, j in itertools.combinations(range(len(responses)), 2):
            p_ij = brute_prefer_first(*judge_model, messages[prompt_id], responses[i], responses[j])
            p_ji = brute_prefer_first(*judge_model, messages[prompt_id], responses[j], responses[i])
            expected[i] += (p_ij + 1 - p_ji) / 2 / (len(responses) - 1)
            expected[j] += (p_ji + 1 - p_ij) / 2 / (len(responses) - 1)
            compared += 1
            agreed += (p_ij > 0.5) == (p_ji < 0.5)
        assert row["scores"] == pytest.approx(expected, abs=1e-5), prompt_id
    assert compared == 3 * card["counts"]["prompts"]["kept"]  # 2 weak + 1 strong responses: 3 comparisons each
    assert card["judges"]["pairwise"]["agreement_rate"] == pytest.approx(agreed / compared)


def load_recipe_dict(values: dict, path: Path):
    path.write_text(yaml.safe_dump(values))
    return load_recipe(path)


def test_near_duplicate_search_matches_brute_force():
    texts = [" ".join(w) for w in itertools.product(["the film", "a plot"], ["was", "is"], ["very good .", "bad ."])]
    texts += [t + " ." for t in texts[:4]] + texts[:3]
    from w2s.data.filters import near_duplicates

    for threshold in (0.5, 0.7, 0.9):
        kept, expected = [], []
        for t in texts:
            dup = any(jaccard(ngrams(words(t), 3), ngrams(words(k), 3)) >= threshold for k in kept)
            expected.append(dup)
            if not dup:
                kept.append(t)
        assert near_duplicates(texts, threshold) == expected
