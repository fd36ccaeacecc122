"""Fixtures for eval tests: a tiny local reward model, and a tiny OpenAI-compatible server on 127.0.0.1."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def _load_server_module():
    path = Path(__file__).with_name("openai_server.py")
    spec = importlib.util.spec_from_file_location("w2s_test_openai_server", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_openai_server_class():
    """`TinyOpenAIServer(model, tokenizer, api_key)`: serve a local model's next-token log-probabilities."""
    return _load_server_module().TinyOpenAIServer


@pytest.fixture(scope="session")
def tiny_reward_model(tmp_path_factory) -> Path:
    """A freshly initialised one-logit Llama reward model on the tiny world's family-A tokenizer, saved locally."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    from w2s.data.world.tokenizers import world_tokenizer_path

    tok = AutoTokenizer.from_pretrained(world_tokenizer_path("a"))
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=256,
        num_labels=1,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForSequenceClassification(config)
    path = tmp_path_factory.mktemp("reward_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
