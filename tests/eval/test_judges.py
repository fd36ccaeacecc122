"""Judges on real tiny models: gold reward, a reward model, a local LLM judge, an HTTP judge on 127.0.0.1."""

from __future__ import annotations

import hashlib
import itertools
import logging
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from w2s.data.judges import (
    LABELS,
    HTTPJudge,
    JudgeError,
    LocalLLMJudge,
    RewardModelJudge,
    pairwise_prompt,
)
from w2s.data.world import gold_reward
from w2s.eval.annotate import JudgeCounts, annotate, judgement_log
from w2s.eval.config import EvalConfig
from w2s.eval.judges import compare, make_judge
from w2s.guide.models import chat_prompt

PROMPTS = ["the hero was really boring .", "the film was good .", "the songs were dull .", "the director was clever ."]
GOOD = " the film was great . it was fun ."
BAD = " the film were great . they was"
OUT_1 = [GOOD, BAD, GOOD, " the plot was dull ."]
OUT_2 = [BAD, GOOD, GOOD, " the plot was not bad ."]


def test_gold_judge_prefers_the_higher_gold_reward(tmp_path):
    judge = make_judge(EvalConfig(judge="gold"))
    ann = annotate(judge, judgement_log(judge, tmp_path), "sys", PROMPTS, OUT_2, "ref", OUT_1)
    r1, r2 = gold_reward(PROMPTS, OUT_1), gold_reward(PROMPTS, OUT_2)
    assert [a["preference"] for a in ann] == [
        2.0 if b > a else 1.0 if b < a else 1.5 for a, b in zip(r1, r2, strict=True)
    ]
    # rewards 3 vs -6, -6 vs 3, 3 vs 3, -1 vs 0.5: bad loses, good wins, identical ties, 'not bad' beats 'dull'
    assert [a["preference"] for a in ann] == [1.0, 2.0, 1.5, 2.0]
    assert [a["reward_2"] for a in ann] == r2
    assert {a["annotator"] for a in ann} == {"tiny_gold_reward"}


def test_judgements_are_cached_and_never_repeated(tmp_path):
    judge = make_judge(EvalConfig(judge="gold"))
    first, second = JudgeCounts(), JudgeCounts()
    annotate(judge, judgement_log(judge, tmp_path), "sys", PROMPTS, OUT_2, "ref", OUT_1, counts=first)
    again = annotate(judge, judgement_log(judge, tmp_path), "sys", PROMPTS, OUT_2, "ref", OUT_1, counts=second)
    # a reward is keyed by (instruction, output): 4 system outputs + 3 reference ones (the third is the same text,
    # one verdict): judged now or found from an earlier run, judged + cached = total
    assert (first.judged, first.cached, first.total) == (7, 0, 7)
    assert (second.judged, second.cached, second.total) == (0, 7, 7)
    assert len(again) == 4
    lines = (judgement_log(judge, tmp_path).path).read_text().splitlines()
    assert len(lines) == 7


@torch.no_grad()
def test_reward_model_judge_is_a_bradley_terry_sigmoid(tiny_reward_model, tmp_path):
    judge = RewardModelJudge(str(tiny_reward_model), batch_size=3)
    ann = annotate(judge, judgement_log(judge, tmp_path), "sys", PROMPTS, OUT_2, "ref", OUT_1)

    # brute force: one text at a time, no padding
    def reward(i, o):
        ids = judge.tokenizer(judge.text(i, o), return_tensors="pt", add_special_tokens=False)["input_ids"]
        return float(judge.reward_model.model(input_ids=ids).logits[0, 0])

    for a, p, o1, o2 in zip(ann, PROMPTS, OUT_1, OUT_2, strict=True):
        r1, r2 = reward(p, o1), reward(p, o2)
        assert a["reward_1"] == pytest.approx(r1, abs=1e-4)
        assert a["reward_2"] == pytest.approx(r2, abs=1e-4)
        assert a["preference"] == pytest.approx(1 + 1 / (1 + math.exp(r1 - r2)), abs=1e-5)
    assert ann[2]["preference"] == 1.5  # identical outputs


def _reward_model_with_head(base: Path, num_labels: int, out: Path) -> str:
    """The tiny reward model's body under a fresh, seeded head of `num_labels` logits, saved to `out`."""
    torch.manual_seed(num_labels)
    model = AutoModelForSequenceClassification.from_pretrained(
        str(base), num_labels=num_labels, ignore_mismatched_sizes=True
    )
    model.score.weight.data.mul_(100)  # logits spread over several units, so the two labels' gap is not ~0
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(out)
    return str(out)


@torch.no_grad()
def test_a_two_logit_reward_model_scores_the_log_odds_of_good_and_other_heads_are_refused(tiny_reward_model, tmp_path):
    path = _reward_model_with_head(tiny_reward_model, 2, tmp_path / "two")
    judge = RewardModelJudge(path, batch_size=3)
    rewards = judge.rewards(PROMPTS, OUT_2)
    for p, o, got in zip(PROMPTS, OUT_2, rewards, strict=True):  # one text at a time, no padding
        ids = judge.tokenizer(judge.text(p, o), return_tensors="pt", add_special_tokens=False)["input_ids"]
        logits = judge.reward_model.model(input_ids=ids).logits[0].float()
        assert got == pytest.approx(float(logits[1] - logits[0]), abs=1e-4)
    assert max(rewards) - min(rewards) > 1e-3  # the rewards tell the outputs apart: the check above could fail
    # the data builder's grouped scores (chat-message prompts) are the same rewards, grouped per prompt
    scores, _ = judge.score([[{"role": "user", "content": p}] for p in PROMPTS[:2]], [[OUT_2[0], OUT_1[0]], [OUT_2[1]]])
    flat = judge.rewards([PROMPTS[0], PROMPTS[0], PROMPTS[1]], [OUT_2[0], OUT_1[0], OUT_2[1]])
    assert scores == [pytest.approx(flat[:2], abs=1e-5), pytest.approx(flat[2:], abs=1e-5)]
    assert flat[0] == pytest.approx(rewards[0], abs=1e-4) and flat[2] == pytest.approx(rewards[1], abs=1e-4)
    with pytest.raises(JudgeError, match="has 3 labels"):
        RewardModelJudge(_reward_model_with_head(tiny_reward_model, 3, tmp_path / "three"))


def test_eval_judges_keep_the_cache_ids_of_earlier_runs(world_paths, tiny_reward_model):
    """Cached verdicts stay valid: the judge names, the prompt's version, and the prompt's text under it."""
    assert make_judge(EvalConfig(judge="gold")).cache_id() == "tiny_gold_reward"
    strong = str(world_paths["strong"])
    llm = make_judge(EvalConfig(judge="llm", judge_model=strong))
    assert llm.cache_id() == LocalLLMJudge(strong).cache_id() == f"llm:{strong}:prompt2:a,b"
    rm = make_judge(EvalConfig(judge="reward_model", judge_model=str(tiny_reward_model)))
    assert rm.cache_id() == f"reward_model:{tiny_reward_model}"
    # version 2's text, as the judge of earlier runs rendered it (its SHA-256): a new wording needs a new version
    text = pairwise_prompt("the film was good .", " it was fun .", " it were bad .", ("a", "b"))
    assert hashlib.sha256(text.encode()).hexdigest()[:16] == "63515a4c762bdc13"


def test_one_pairwise_judge_serves_the_data_builder_and_the_evaluation(world_paths):
    """The data builder's both-orders score of two responses is the evaluation's verdict on the same pair."""
    judge = LocalLLMJudge(str(world_paths["strong"]), labels=("A", "B"), batch_size=2)
    verdict = compare(judge, PROMPTS[:1], OUT_1[3:], OUT_2[3:])[0]
    scores, extras = judge.score([[{"role": "user", "content": PROMPTS[0]}]], [[OUT_1[3], OUT_2[3]]])
    assert scores[0] == pytest.approx([2 - verdict["preference"], verdict["preference"] - 1], abs=1e-6)
    assert extras[0] == {
        "compared": 1,
        "agreed": int((verdict["p_b_ref_first"] > 0.5) == (verdict["p_b_sys_first"] < 0.5)),
        "truncated": sum(  # questions past the judge's context of 128 positions, asked in both orders
            len(judge.tokenizer(chat_prompt(judge.tokenizer, q), add_special_tokens=False).input_ids) > 128
            for q in (pairwise_prompt(PROMPTS[0], OUT_1[3], OUT_2[3]), pairwise_prompt(PROMPTS[0], OUT_2[3], OUT_1[3]))
        ),
    }
    assert judge.cache_id() == f"llm:{world_paths['strong']}:prompt2:A,B"
    judge.max_length = 24  # a question past it keeps its end, and the judged record counts it
    _, extras = judge.score([[{"role": "user", "content": PROMPTS[0]}]], [[OUT_1[3], OUT_2[3]]])
    assert extras[0]["truncated"] == 2  # both orders


@torch.no_grad()
def _label_logprobs(model, tokenizer, prompt: str) -> tuple[float, float]:
    ids = tokenizer(chat_prompt(tokenizer, prompt), return_tensors="pt", add_special_tokens=False)["input_ids"]
    ids = ids[:, -model.config.max_position_embeddings :]  # a question past the context keeps its end
    logp = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1)
    a, b = (tokenizer.encode(label, add_special_tokens=False)[0] for label in LABELS)
    return float(logp[a]), float(logp[b])


def _p_b(la, lb):
    return math.exp(lb) / (math.exp(la) + math.exp(lb))


@pytest.mark.slow
def test_local_llm_judge_reads_both_orders_from_log_probs(strong, world_paths):
    model, tok = strong
    judge = LocalLLMJudge(str(world_paths["strong"]), batch_size=3)
    verdicts = compare(judge, PROMPTS, OUT_1, OUT_2)
    swapped = compare(judge, PROMPTS, OUT_2, OUT_1)
    for v, s, p, o1, o2 in zip(verdicts, swapped, PROMPTS, OUT_1, OUT_2, strict=True):
        # brute force: each ordered prompt alone, unpadded
        p1 = _p_b(*_label_logprobs(model, tok, pairwise_prompt(p, o1, o2)))
        p2 = _p_b(*_label_logprobs(model, tok, pairwise_prompt(p, o2, o1)))
        assert v["p_b_ref_first"] == pytest.approx(p1, abs=1e-4)
        assert v["p_b_sys_first"] == pytest.approx(p2, abs=1e-4)
        assert v["preference"] == pytest.approx(1 + (p1 + 1 - p2) / 2, abs=1e-4)
        assert v["preference"] + s["preference"] == pytest.approx(3.0, abs=1e-4)  # order-balanced judge


def _normalised(token: str) -> str:
    """A top log-prob entry's token as the HTTP judge matches it against a label."""
    return token.strip().lower().strip("()")


def _context_ids(tok, limit: int, prompt: str | list[dict]) -> list[int]:
    """The prompt in the chat template, cut from the left to the model's `limit` positions as the local LLM judge
    cuts it (the question sits at the end): past its context a model's next-token log-probs mean nothing."""
    return tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids[-limit:]


@torch.no_grad()
def _top20(model, tok, prompt: str) -> list[tuple[str, float]]:
    """(normalised token, log-prob) of the 20 likeliest next tokens, likeliest first: what the server returns."""
    ids = torch.tensor([_context_ids(tok, model.config.max_position_embeddings, prompt)])
    top = torch.topk(torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), dim=-1), 20)
    return [(_normalised(tok.decode([i])), v) for v, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)]


def _http_prompts(labels: tuple[str, str]) -> list[str]:
    """Every prompt the HTTP judge sends for PROMPTS, OUT_1, OUT_2: both orders of each pair."""
    return [q for p, o1, o2 in zip(PROMPTS, OUT_1, OUT_2, strict=True)
            for q in (pairwise_prompt(p, o1, o2, labels), pairwise_prompt(p, o2, o1, labels))]  # fmt: skip


def _labels_in_every_top20(model, tok) -> tuple[str, str]:
    """Two labels among the 20 likeliest next tokens of every request that names them.

    The tiny model cannot follow the question, and "a"/"b" are not among its likeliest answers; to exercise the
    log-probability path for real, the outputs are named by two tokens it does rank there. Which tokens those
    are depends on the build, so they are read off the model in hand: the words in the top 20 of every request
    (as the default labels word it) are tried in pairs, likeliest first, until a pair stays there when the
    requests name the outputs by it.
    """
    tops = [dict(_top20(model, tok, q)) for q in _http_prompts(LABELS)]
    common = [t for t in tops[0] if t.isalpha() and all(t in top for top in tops)]
    for pair in itertools.combinations(common, 2):
        if all(set(pair) <= dict(_top20(model, tok, q)).keys() for q in _http_prompts(pair)):
            return pair
    pytest.fail(f"no two of {common} are among the 20 likeliest next tokens of every request naming them")


def _expected_http_p_b(model, tok, prompt, labels):
    """The documented rule: P(b) among the labels found in the top-20 tokens; a missing label gets the 20th's logprob."""
    top = _top20(model, tok, prompt)
    found = {}
    for token, v in top:
        if token in labels and token not in found:
            found[token] = v
    if not found:
        return None, 0
    floor = min(v for _, v in top)
    return _p_b(found.get(labels[0], floor), found.get(labels[1], floor)), len(found)


def test_http_judge_against_a_local_openai_compatible_server(strong, tiny_openai_server_class, monkeypatch, caplog):
    model, tok = strong

    class Server(tiny_openai_server_class):  # keeps every prompt within the model's context
        @torch.no_grad()
        def next_token_logprobs(self, messages):
            ids = torch.tensor([_context_ids(self.tokenizer, self.model.config.max_position_embeddings, messages)])
            return torch.log_softmax(self.model(input_ids=ids).logits[0, -1].float(), dim=-1)

    labels = _labels_in_every_top20(model, tok)
    key = "sk-test-0123456789abcdef"
    with Server(model, tok, api_key=key) as server:
        assert server.base_url.startswith("http://127.0.0.1:")
        monkeypatch.setenv("W2S_TEST_JUDGE_URL", server.base_url)
        monkeypatch.setenv("W2S_TEST_JUDGE_KEY", key)
        caplog.set_level(logging.DEBUG)
        env = {"base_url_env": "W2S_TEST_JUDGE_URL", "api_key_env": "W2S_TEST_JUDGE_KEY"}
        judge = HTTPJudge("tiny-strong", labels=labels, concurrency=2, **env)
        assert key not in repr(judge)
        verdicts = compare(judge, PROMPTS, OUT_1, OUT_2)
        assert len(server.requests) == 2 * len(PROMPTS)  # both orders of every pair
        assert set(server.auth_headers) == {f"Bearer {key}"}
        assert all(r["logprobs"] and r["max_tokens"] == 1 for r in server.requests)
        assert sorted(r["messages"][0]["content"] for r in server.requests) == sorted(_http_prompts(labels))
        for v, p, o1, o2 in zip(verdicts, PROMPTS, OUT_1, OUT_2, strict=True):
            for got, prompt in (
                (v["p_b_ref_first"], pairwise_prompt(p, o1, o2, labels)),
                (v["p_b_sys_first"], pairwise_prompt(p, o2, o1, labels)),
            ):
                expected, found = _expected_http_p_b(model, tok, prompt, labels)
                assert found == 2  # the log-probabilities, not the fall-backs, decide (the labels were chosen so)
                assert got == pytest.approx(expected, abs=1e-4)
            assert v["preference"] == pytest.approx(1 + (v["p_b_ref_first"] + 1 - v["p_b_sys_first"]) / 2)
        assert len({round(v["preference"], 6) for v in verdicts}) > 1

        # labels that no token of the model's vocabulary starts with are never found, nor is the answer's text
        # read as either: every pair is a tie (a property of the tokenizer, the same in every world)
        absent = ("first", "second")
        assert not any(_normalised(tok.decode([i])).startswith(absent) for i in range(len(tok)))
        ties = compare(HTTPJudge("tiny-strong", labels=absent, **env), PROMPTS[:2], OUT_1[:2], OUT_2[:2])
        assert [v["preference"] for v in ties] == [1.5, 1.5]

        monkeypatch.setenv("W2S_TEST_JUDGE_KEY", "sk-wrong-key-xyz")
        wrong = HTTPJudge("tiny-strong", retries=0, **env)
        with pytest.raises(JudgeError, match="HTTP 401") as err:
            compare(wrong, PROMPTS[:1], OUT_1[:1], OUT_2[:1])
        assert "sk-wrong-key-xyz" not in str(err.value)
    assert key not in caplog.text


def test_http_judge_needs_its_base_url(monkeypatch):
    monkeypatch.delenv("W2S_TEST_NO_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(JudgeError, match="set W2S_TEST_NO_URL"):
        HTTPJudge("m", base_url_env="W2S_TEST_NO_URL")
