"""The tiny world's base models: the strong one masters the world, the weak ones visibly do not."""

# The margins quoted in this file's comments were measured on world version 2. On version 4 (neutral openings,
# a mood and a topic, the tense set by the response) every trained test here passed in worlds 0, 1 and 2
# (make test; make test-trained WORLD=1 and WORLD=2); the figures were not re-measured one by one.

import math
import statistics

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from w2s.data.world import gold_reward, world_corpus
from w2s.guide.models import load_model_and_tokenizer
from w2s.train.evaluation import binomial_lower_bound, paired_z, response_logprobs
from w2s.train.world import base_path, report_base

NUM_PROMPTS = 200


@pytest.fixture(scope="module")
def reports(world_paths):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models sample fastest on one thread (5 s here, 43 s on two busy cores)
    try:
        return {name: report_base(path, num_prompts=NUM_PROMPTS) for name, path in world_paths.items()}
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def nll_per_word(world_paths):
    """Per held-out review (the ones report_base's perplexity reads): each base's NLL of the response and its end of
    turn, per word + 1 (comparable across tokenizers)."""
    held_out = world_corpus("test", NUM_PROMPTS + 200)[NUM_PROMPTS:]
    prompts, responses = [r.prompt for r in held_out], [r.response for r in held_out]
    out = {}
    for name, path in world_paths.items():
        logprobs = response_logprobs(*load_model_and_tokenizer(str(path)), prompts, responses)
        out[name] = [-lp / (len(r.split()) + 1) for lp, r in zip(logprobs, responses, strict=True)]
    return out


def test_bases_are_real_hf_models_in_safetensors(world_paths):
    for name, path in world_paths.items():
        assert (path / "model.safetensors").is_file(), name
        load_file(path / "model.safetensors")  # readable safetensors
        AutoModelForCausalLM.from_pretrained(path)  # plain from_pretrained works
    sizes = {n: AutoModelForCausalLM.from_pretrained(p).num_parameters() for n, p in world_paths.items()}
    assert sizes["strong"] > 1_000_000 and sizes["weak"] < 100_000 and sizes["weak_b"] < 100_000


def test_cache_is_keyed_by_recipe():
    assert base_path("strong") == base_path("strong")
    assert base_path("strong") != base_path("strong", overrides=["--max_steps", "5"])


@pytest.mark.trained
def test_strong_base_has_lower_held_out_perplexity(reports, nll_per_word):
    # What guarantees the margin: the strong base has over 10x the weak ones' parameters and fits the corpus better,
    # review by review. Paired over the same 200 held-out reviews, its NLL per word was lower than the weak base's
    # by 0.05-0.13 nats (z 17-48 across worlds 0-2) and weak B's by 0.20-0.45 (z 22-30): the gate z > 3 is far
    # below every world. (The perplexity ratio is thin, 4.14 vs 4.34 in world 0: no fixed factor is gated.)
    for weak in ("weak", "weak_b"):
        assert paired_z(nll_per_word[weak], nll_per_word["strong"]) > 3, weak
        assert reports["strong"].perplexity_per_word < reports[weak].perplexity_per_word, weak


@pytest.mark.trained
def test_strong_base_writes_well_formed_reviews(reports):
    # What guarantees the margin: the strong base learned the world's grammar (98% of its sentences well formed)
    # and the weak ones visibly did not. Across worlds 0-2, 0.93-0.955 of the strong base's 200 samples were well
    # formed (exact 99.9% lower bound 0.86-0.89; it falls to 0.8 only below 87% observed, > 3 SE under every
    # world), the weak bases' 0.10-0.43, two-proportion z 11-17 where the gate is 3. A strong base at 0.8 or
    # worse passes the bound with probability < 0.001.
    n = NUM_PROMPTS
    strong = round(reports["strong"].well_formed * n)
    assert binomial_lower_bound(strong, n, confidence=0.999) > 0.8, strong
    for weak in ("weak", "weak_b"):
        other = round(reports[weak].well_formed * n)
        pooled = (strong + other) / (2 * n)
        z = (strong - other) / n / math.sqrt(pooled * (1 - pooled) * 2 / n)  # two-proportion z
        assert z > 3, (weak, strong, other)


@pytest.mark.trained
def test_strong_base_rewards_have_room_to_move(reports):
    # sentiment is drawn per review, so samples range from glowing to scathing. What guarantees the margin: a base
    # that learned the corpus spreads its rewards like the corpus does. Across worlds 0-2 the strong base's sample
    # SD was 3.23-3.51, 0.79-0.86 of the corpus's 4.08 (200 test reviews); an SD of 200 samples has an SE near
    # 0.17, so the gate, half the corpus's (2.04), is > 7 SE below every world.
    corpus = world_corpus("test", NUM_PROMPTS)
    corpus_std = statistics.stdev(gold_reward([r.prompt for r in corpus], [r.response for r in corpus]))
    assert reports["strong"].reward_std > 0.5 * corpus_std, (reports["strong"].reward_std, corpus_std)
