"""Guide pairs for the engine's tests, from the tiny world's real models."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from w2s.guide.models import load_model, load_tokenizer
from w2s.guide.pair import GuidePair


def random_lora(base_path, target_modules, root):
    """A LoRA adapter with non-zero random weights on `base_path`, and the same model merged into a folder."""
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=target_modules, init_lora_weights=False)
    model = get_peft_model(load_model(str(base_path)), config)
    model.save_pretrained(root / "adapter")
    merged = get_peft_model(load_model(str(base_path)), config)
    merged.load_state_dict(model.state_dict())
    merged.merge_and_unload().save_pretrained(root / "merged")
    for folder in ("adapter", "merged"):
        load_tokenizer(str(base_path)).save_pretrained(root / folder)
    return {"adapter": root / "adapter", "merged": root / "merged"}


@pytest.fixture(scope="session")
def lora_guide(world_paths, tmp_path_factory):
    """A random LoRA guide on the weak base (family A)."""
    return random_lora(world_paths["weak"], ["q_proj", "v_proj", "down_proj"], tmp_path_factory.mktemp("lora"))


@pytest.fixture(scope="session")
def lora_guide_b(world_paths, tmp_path_factory):
    """A random LoRA guide on weak base B (family B tokenizer, GPT-2)."""
    return random_lora(world_paths["weak_b"], ["c_attn", "c_fc"], tmp_path_factory.mktemp("lora_b"))


@pytest.fixture(scope="session")
def pair_a():
    """A family-A pair whose ratio is far from zero (strong vs weak base)."""
    return GuidePair.from_folders("tiny:strong", "tiny:weak")
