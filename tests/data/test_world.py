"""The tiny world's generator, gold reward and tokenizers."""

import pytest
from transformers import AutoTokenizer

from w2s.data.world import (
    ReviewGenerator,
    gold_reward,
    score_review,
    sentiment_reward,
    topic_reward,
    world_corpus,
    world_prompts,
)
from w2s.data.world.grammar import NEUTRAL
from w2s.data.world.reward import MALFORMED_PENALTY
from w2s.data.world.tokenizers import world_tokenizer_path


def test_generator_is_deterministic_per_seed():
    assert ReviewGenerator(7).sample(50) == ReviewGenerator(7).sample(50)
    assert ReviewGenerator(7).sample(50) != ReviewGenerator(8).sample(50)


def test_generator_covers_a_large_space_of_distinct_texts():
    texts = {r.text for r in ReviewGenerator(0).sample(3000)}
    assert len(texts) >= 2990


def test_every_generated_review_is_well_formed():
    for r in world_corpus("train", 2000):
        score = score_review(r.prompt, r.response)
        assert score.well_formed, (r, score.errors)


# (prompt, response, hand-worked reward) — see data/world/reward.py for the rules
HAND_WORKED = [
    ("the film was long .", "it was very good .", 2.0),  # intensifier doubles
    ("the film was long .", "it was not bad .", 0.5),  # negation flips and halves
    ("the film was long .", "it was not very good .", -1.0),  # not (2 * +1) -> -1
    ("the film was long .", "it was fairly awful .", -1.0),  # downtoner halves -2
    ("the film was long .", "it was not fairly awful .", MALFORMED_PENALTY),  # negated downtoner
    ("the film was long .", "they were good .", MALFORMED_PENALTY),  # pronoun disagrees with "film"
    ("the film was long .", "it was old .", 0.0),  # a neutral adjective
    ("the songs were dull .", "they were so brilliant . it was lovely .", 4.0 + 2.0 + MALFORMED_PENALTY),  # music
    ("the plot was new .", "the actors of the film were fun .", 1.0),  # verb agrees with "actors"
    ("the plot was new .", "the actors of the film was fun .", MALFORMED_PENALTY),  # ... not the attractor
    ("the plot was new .", "the songs of the film were fun .", 1.0 + 2.0),  # about the music: +2
    ("the plot was new .", "the film of the songs was fun .", 1.0),  # the attractor is not the subject
    ("the songs were new .", "they were good .", 1.0 + 2.0),  # a pronoun is about its antecedent
    ("the plot was new .", "the script is good .", 1.0),  # the opening does not set the response's tense ...
    ("the plot was new .", "the script is good . the jokes were fun .", 1.0 + MALFORMED_PENALTY),  # ... its first does
    ("the plot was bad .", "the script was great but dull .", -1.0),  # "but": the second clause decides
    ("the plot was bad .", "the script was dull but great .", 2.0),
    ("the plot was bad .", "the jokes were good and fun .", 2.0),  # "and" adds
    ("the plot was bad .", "the jokes were good . they were", 1.0 + MALFORMED_PENALTY),  # unfinished tail
    ("the plot was bad .", "", MALFORMED_PENALTY),  # empty response
    ("the plot was bad .", "the jokes were were good .", MALFORMED_PENALTY),  # does not parse
    ("the hero was dull .", "the villain in the songs was not terrible . they were great .", 1.0 + MALFORMED_PENALTY),
    ("the plot was new .", "it was good . " * 4, 3 * 1.0),  # only the first 3 sentences count ...
    ("the plot was new .", "it was good . " * 3 + "it were good .", 3 * 1.0 + MALFORMED_PENALTY),  # ... all must parse
    ("the plot was new .", "it was good . " * 6, 3 * 1.0 + MALFORMED_PENALTY),  # past the 5 sentences
]


def test_attributes_are_scored_apart():
    score = score_review("the songs were new .", "they were good . the plot was awful . it were fun .")
    # sentences: music +2 sentiment +1; not music, -2; malformed (-3)
    assert score.reward == pytest.approx(2 + 1 - 2 + MALFORMED_PENALTY)
    assert score.sentiment == pytest.approx(1 - 2)  # each attribute alone: no penalty
    assert score.topic == pytest.approx(2)
    assert sentiment_reward(["the songs were new ."], ["they were good ."]) == [1.0]
    assert topic_reward(["the songs were new ."], ["they were good ."]) == [2.0]
    assert topic_reward(["x"], [""]) == sentiment_reward(["x"], [""]) == [0.0]


def test_a_review_keeps_its_mood_and_prompts_are_distinct():
    agree = total = 0
    for r in world_corpus("train", 2000):
        signs = [v > 0 for v in score_review(r.prompt, r.response).sentiments if v]
        agree += sum(s == signs[0] for s in signs[1:])
        total += len(signs) - 1
    # each sentence takes the review's mood with probability MOOD_KEPT (0.92): two agree with 0.92^2 + 0.08^2
    assert 0.82 < agree / total < 0.88
    prompts = world_prompts("test", 500)
    assert len(set(prompts)) == 500 and prompts[:100] == world_prompts("test", 100)
    assert all(score_review(p, "").reward == MALFORMED_PENALTY for p in prompts[:5])
    assert {a for p in prompts for a in p.split()} & set(NEUTRAL)  # openings are neutral: they set no mood
    assert all(score_review("", p).sentiments == [0.0] for p in prompts[:50])


@pytest.mark.parametrize(("prompt", "response", "expected"), HAND_WORKED)
def test_gold_reward_matches_hand_worked_cases(prompt, response, expected):
    assert score_review(prompt, response).reward == pytest.approx(expected)


def test_gold_reward_is_batched_and_deterministic():
    prompts = [p for p, _, _ in HAND_WORKED]
    responses = [r for _, r, _ in HAND_WORKED]
    assert gold_reward(prompts, responses) == pytest.approx([e for _, _, e in HAND_WORKED])
    assert gold_reward(prompts, responses) == gold_reward(prompts, responses)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        gold_reward(prompts[:2], responses[:1])


def test_quality_dominates_sentiment():
    """A glowing but broken sentence scores below a dull but well-formed one."""
    broken = score_review("the plot was bad .", "it was dull . they is so brilliant .")
    plain = score_review("the plot was bad .", "it was dull . it was dull .")
    assert not broken.well_formed and plain.well_formed
    assert broken.reward < plain.reward


@pytest.fixture(scope="module", params=["a", "b"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(world_tokenizer_path(request.param))


def test_tokenizers_round_trip_text(tokenizer):
    for r in world_corpus("test", 300):
        ids = tokenizer(r.text, add_special_tokens=False).input_ids
        assert tokenizer.decode(ids) == r.text


def test_tokenizers_render_the_chat_template(tokenizer):
    messages = [{"role": "user", "content": "the film was good ."}, {"role": "assistant", "content": "it was fun ."}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert text.startswith(prompt) and text.endswith("it was fun ." + tokenizer.eos_token)
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False).input_ids, skip_special_tokens=True).endswith(
        "it was fun ."
    )


def test_the_two_families_have_different_vocabularies():
    a = AutoTokenizer.from_pretrained(world_tokenizer_path("a"))
    b = AutoTokenizer.from_pretrained(world_tokenizer_path("b"))
    assert len(a) != len(b)
    text = world_corpus("test", 1)[0].text
    assert a.tokenize(text) != b.tokenize(text)
