"""transformers' internals behind one self-check: when it fails, decoding falls back to the stock cache, same outputs."""

import logging

import pytest
import torch
import transformers
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig, kv
from w2s.guide.kv import GrowingCache
from w2s.guide.state import LMState, track_states

PROMPTS = world_prompts("test", 6)
COMMON = dict(temperature=1.0, top_k=0, max_new_tokens=40, seed=3, batch_size=6)
CONFIGS = {
    "cbs": dict(decoder="cbs", tuned="tiny:strong", untuned="tiny:weak", width=2, successors=3, chunk_len=4),
    "sample": dict(decoder="sample"),
}


@pytest.fixture
def rechecked():
    """The self-check's per-process verdict forgotten before and after the test."""
    kv.growing_cache_works.cache_clear()
    yield
    kv.growing_cache_works.cache_clear()


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=128,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_the_installed_transformers_passes_the_self_check(rechecked):
    kv.self_check()
    assert kv.growing_cache_works()
    assert isinstance(LMState(tiny_llama(), 2, shared=True).cache, GrowingCache)


def decode(name: str):
    with track_states() as states:
        out = Guide(GuideConfig.from_dict(dict(**CONFIGS[name], **COMMON))).generate(PROMPTS, progress=False)
    return out, states


def test_a_failed_self_check_falls_back_to_the_stock_cache_with_the_same_outputs(rechecked, monkeypatch, caplog):
    ours = {name: decode(name) for name in CONFIGS}
    assert all(isinstance(s.cache, GrowingCache) for _, states in ours.values() for s in states)
    assert any(s.shared for _, states in ours.values() for s in states)

    def broken():
        raise RuntimeError("forced by the test")

    monkeypatch.setattr(kv, "self_check", broken)
    kv.growing_cache_works.cache_clear()
    with caplog.at_level(logging.WARNING, logger="w2s.guide.kv"):
        stock = {name: decode(name) for name in CONFIGS}
    warnings = [r for r in caplog.records if r.name == "w2s.guide.kv"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]  # one warning, however many caches
    assert transformers.__version__ in warnings[0].getMessage() and "forced by the test" in warnings[0].getMessage()
    assert all(type(s.cache) is DynamicCache and not s.shared for _, states in stock.values() for s in states)

    for name in CONFIGS:
        (got, _), (want, _) = stock[name], ours[name]
        assert [g.text for g in got] == [g.text for g in want], name
        assert [g.score for g in got] == pytest.approx([g.score for g in want], abs=1e-4), name
        assert [g.tokens for g in got] == [g.tokens for g in want], name
    assert len({g.text for g in ours["cbs"][0]}) > 1


def test_the_stock_cache_can_be_forced_by_the_environment(rechecked, monkeypatch, caplog):
    monkeypatch.setenv(kv.FORCE_STOCK_CACHE, "1")
    with caplog.at_level(logging.WARNING, logger="w2s.guide.kv"):
        state = LMState(tiny_llama(), 2, shared=True)
    assert type(state.cache) is DynamicCache and not state.shared
    assert any(kv.FORCE_STOCK_CACHE in r.getMessage() for r in caplog.records)
    state.append([[1, 2, 3], [4]])
    state.select([0, 0, 1])
    state.append([[5], [6, 7], [8]])
    model = state.model
    for row in range(state.rows):  # the stock cache through the engine's uneven blocks and copies
        full = model(torch.tensor([state.ids[row]])).logits[0, -1]
        assert torch.allclose(state.last_logits[row], full, atol=1e-4)
    assert state.cache_bytes() > 0
