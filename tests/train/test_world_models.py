"""The tiny world's base models: the strong one masters the world, the weak ones visibly do not."""

import pytest
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from train.world import base_path, report_base


@pytest.fixture(scope="module")
def reports(world_paths):
    return {name: report_base(path, num_prompts=200) for name, path in world_paths.items()}


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


def test_strong_base_has_lower_held_out_perplexity(reports):
    strong = reports["strong"].perplexity_per_word
    assert strong < reports["weak"].perplexity_per_word
    assert strong < reports["weak_b"].perplexity_per_word


def test_strong_base_writes_well_formed_reviews(reports):
    assert reports["strong"].well_formed >= 0.9
    assert reports["strong"].well_formed >= reports["weak"].well_formed
    assert reports["strong"].well_formed >= reports["weak_b"].well_formed


def test_strong_base_rewards_have_room_to_move(reports):
    # sentiment is drawn per review, so samples range from glowing to scathing
    assert reports["strong"].reward_std > 1.5
