"""Judges on tiny real models, checked against brute-force recomputations."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from w2s.data.judges import DEFAULT_PAIRWISE_TEMPLATE, JudgeError, agreement_rate, make_judge, response_logprobs
from w2s.data.recipe import JudgeConfig
from w2s.data.world.cache import build_once, cache_root, content_key
from w2s.guide.models import chat_prompt

PROMPTS = [
    [{"role": "user", "content": "the film was good ."}],
    [{"role": "user", "content": "the actors of the film are dull ."}],
    [{"role": "user", "content": "it is great ."}],
]
RESPONSES = [
    ["it was very good .", "it were bad .", "the plot was fun but silly ."],
    ["they are not bad .", "the songs is lovely ."],
    ["the hero is awful . it is dull .", "", "the film is so great .", "they are fun ."],
]


def brute_prefer_first(model, tok, prompt, first: str, second: str, labels=("A", "B")) -> float:
    """P(first is better), computed alone: the question (the default template) in the judge's chat template as
    one unpadded sequence, its last context-length tokens; the softmax of the two label tokens' logits at its
    last position."""
    question = DEFAULT_PAIRWISE_TEMPLATE.format(
        prompt=prompt[-1]["content"], first=first, second=second, label_first=labels[0], label_second=labels[1]
    )
    text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False)["input_ids"][-model.config.max_position_embeddings :]  # its context
    (a,), (b,) = (tok(label, add_special_tokens=False)["input_ids"] for label in labels)
    with torch.no_grad():
        last = model(torch.tensor([ids])).logits[0, -1].double()
    return torch.sigmoid(last[a] - last[b]).item()  # softmax over two logits


def test_pairwise_judge_asks_in_both_orders_and_reports_its_agreement_rate(world_paths, weak):
    judge = make_judge(JudgeConfig(name="pw", kind="pairwise", model=str(world_paths["weak"]), labels=["A", "B"]))
    scores, extras = judge.score(PROMPTS, RESPONSES)
    # brute force: every comparison alone, in both orders, by a forward pass of its own (not the judge's batching)
    agreed = compared = 0
    for prompt, responses, got, extra in zip(PROMPTS, RESPONSES, scores, extras, strict=True):
        n = len(responses)
        expected = [0.0] * n
        for i in range(n):
            for j in range(i + 1, n):
                p_ij = brute_prefer_first(*weak, prompt, responses[i], responses[j])
                p_ji = brute_prefer_first(*weak, prompt, responses[j], responses[i])
                expected[i] += (p_ij + 1 - p_ji) / 2
                expected[j] += (p_ji + 1 - p_ij) / 2
                compared += 1
                agreed += (p_ij > 0.5) == (p_ji < 0.5)
        assert got == pytest.approx([e / (n - 1) for e in expected], abs=1e-5)
        assert sum(got) == pytest.approx(n / 2)  # each comparison hands out one unit of preference
        assert extra["compared"] == n * (n - 1) // 2
    assert agreement_rate(extras) == pytest.approx(agreed / compared)
    assert compared == 3 + 1 + 6


def test_pairwise_judge_checks_its_labels_are_tokens(world_paths):
    with pytest.raises(JudgeError, match="label 'A' is not one token"):  # family B has no 'A' token
        make_judge(JudgeConfig(name="pw", kind="pairwise", model=str(world_paths["weak_b"])))


def test_implicit_reward_is_the_log_likelihood_ratio_across_vocabularies(world_paths, strong, weak_b):
    judge = make_judge(
        JudgeConfig(name="imp", kind="implicit", tuned=str(world_paths["strong"]), untuned=str(world_paths["weak_b"]))
    )
    scores, _ = judge.score(PROMPTS, RESPONSES)

    def brute(model, tok, prompt, response):  # one sequence, no padding: prompt + response tokenised together, EOS
        context = chat_prompt(tok, prompt)
        full = tok(context + response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        head = tok(context, add_special_tokens=False)["input_ids"]
        start = next(i for i, (a, b) in enumerate(zip(full, [*head, None], strict=False)) if a != b)
        with torch.no_grad():
            logits = model(torch.tensor([full])).logits[0]
        return sum(torch.log_softmax(logits[t - 1], -1)[full[t]].item() for t in range(start, len(full)))

    for prompt, responses, got in zip(PROMPTS, RESPONSES, scores, strict=True):
        expected = [brute(*strong, prompt, r) - brute(*weak_b, prompt, r) for r in responses]
        assert got == pytest.approx(expected, abs=1e-3)
    assert scores[2][1] != 0.0  # an empty response is whole too: the models' odds of ending at once


def _tiny_reward_model(weak_path) -> str:
    """A sequence-classification head on the weak base (seeded, built locally, cached)."""

    def build(tmp):
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(str(weak_path), num_labels=1)
        model.score.weight.data.mul_(100)  # scores spread over several units, like a real reward model's
        model.save_pretrained(tmp)
        AutoTokenizer.from_pretrained(str(weak_path)).save_pretrained(tmp)

    return str(
        build_once(cache_root() / "tiny-world" / f"test-reward-model-{content_key(weak_path.name, 'scaled')}", build)
    )


def test_reward_model_judge_scores_batched_like_one_by_one(world_paths):
    path = _tiny_reward_model(world_paths["weak"])
    judge = make_judge(JudgeConfig(name="rm", kind="reward_model", model=path, batch_size=4))
    scores, _ = judge.score(PROMPTS, RESPONSES)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    for prompt, responses, got in zip(PROMPTS, RESPONSES, scores, strict=True):
        for response, value in zip(responses, got, strict=True):
            text = tok.apply_chat_template([*prompt, {"role": "assistant", "content": response}], tokenize=False)
            with torch.no_grad():
                expected = model(**tok(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
            assert value == pytest.approx(expected, abs=1e-4)


def test_reward_model_judge_keeps_the_end_of_a_long_row_and_counts_it(world_paths):
    path = _tiny_reward_model(world_paths["weak"])
    judge = make_judge(JudgeConfig(name="rm", kind="reward_model", model=path, batch_size=4, max_length=12))
    tok = AutoTokenizer.from_pretrained(path)
    texts = [[judge.text(p, r) for r in rs] for p, rs in zip(PROMPTS, RESPONSES, strict=True)]
    scores, extras = judge.score(PROMPTS, RESPONSES)
    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    for group, got, extra in zip(texts, scores, extras, strict=True):
        ids = [tok(text, add_special_tokens=False).input_ids for text in group]
        assert extra["truncated"] == sum(len(row) > 12 for row in ids)
        for row, value in zip(ids, got, strict=True):
            with torch.no_grad():
                expected = model(torch.tensor([row[-12:]])).logits[0, 0].item()  # the last 12 tokens
            assert value == pytest.approx(expected, abs=1e-4)
    assert sum(e["truncated"] for e in extras) > 0


def test_rule_judge_is_the_gold_reward():
    from w2s.data.world import gold_reward

    scores, _ = make_judge(JudgeConfig(name="g", kind="rule")).score(PROMPTS, RESPONSES)
    for prompt, responses, got in zip(PROMPTS, RESPONSES, scores, strict=True):
        assert got == gold_reward([prompt[0]["content"]] * len(responses), responses)
    assert scores[0][0] == 2.0 and scores[2][1] == -3.0  # hand-worked: "very good"; empty


def test_a_judge_that_cannot_load_names_itself_and_the_model(tmp_path):
    with pytest.raises(JudgeError, match=r"judge 'rm' .*no-such-model"):
        make_judge(JudgeConfig(name="rm", kind="reward_model", model=str(tmp_path / "no-such-model")))


def test_response_logprobs_pads_without_changing_values(strong):
    model, tok = strong
    prompts = [PROMPTS[0]] * 3
    responses = ["it was good .", "it was very very very good . it was fun .", "x"]
    batched = response_logprobs(model, tok, prompts, responses, batch_size=3)
    single = [response_logprobs(model, tok, [p], [r], batch_size=1)[0] for p, r in zip(prompts, responses, strict=True)]
    assert batched == pytest.approx(single, abs=1e-4)
