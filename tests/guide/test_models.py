"""The shared model loader."""

import pytest

from w2s.guide.models import ModelNotFoundError, chat_prompt, load_model, load_tokenizer, resolve_model_path


def test_missing_local_folder_says_it_looked_on_disk(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no such local folder"):
        load_model(str(tmp_path / "nope"))


def test_folder_without_config_is_named(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_missing_hub_model_says_it_asked_the_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="hub"):
        load_model("w2s-tests/no-such-model")


def test_loads_world_model_in_eval_mode_with_left_padding(world_paths):
    model = load_model(str(world_paths["weak"]), dtype="float32")
    tokenizer = load_tokenizer(str(world_paths["weak"]))
    assert not model.training
    assert tokenizer.padding_side == "left" and tokenizer.pad_token is not None


def test_chat_prompt_uses_each_familys_template(weak, weak_b):
    assert chat_prompt(weak[1], "the film was good .") == "<s><|user|>the film was good .<|assistant|>"
    assert chat_prompt(weak_b[1], "the film was good .").endswith("<|im_start|>assistant\n")


def test_chat_prompt_without_template_is_a_clear_error(world_paths):
    tokenizer = load_tokenizer(str(world_paths["weak"]))
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        chat_prompt(tokenizer, "the film was good .")


def test_tiny_names_resolve_to_the_world_models(world_paths):
    assert resolve_model_path("tiny:weak") == str(world_paths["weak"])
    assert resolve_model_path("some/hub-id") == "some/hub-id"
    with pytest.raises(ValueError, match="unknown tiny-world model 'tiny:nope'"):
        resolve_model_path("tiny:nope")


def test_a_strong_model_spread_by_a_device_map_decodes_what_one_load_decodes(tmp_path, world_paths):
    """accelerate's big-model inference: max_memory holds only the embeddings in memory, the other layers
    run from disk (`offload_folder`), each moved in by accelerate's hooks; CBS writes the same responses."""
    from w2s.guide import GuideConfig
    from w2s.guide.cli import load_prompts
    from w2s.guide.run import Guide

    prompts = load_prompts("tiny:test", 6)
    recipe = {"decoder": "cbs", "width": 2, "successors": 2, "chunk_len": 4, "max_new_tokens": 24,
              "tuned": "tiny:guide", "untuned": "tiny:weak", "temperature": 1.0, "top_k": 0}  # fmt: skip
    whole = Guide(GuideConfig.from_dict(recipe)).generate(prompts, progress=False)
    split = Guide(
        GuideConfig.from_dict(
            {**recipe, "device_map": "auto", "max_memory": {"cpu": "3MB"}, "offload_folder": str(tmp_path)}
        )
    )
    assert set(split.engine.model.hf_device_map.values()) == {"cpu", "disk"}  # really split
    spread = split.generate(prompts, progress=False)
    assert [g.text for g in spread] == [g.text for g in whole]
    assert [g.score for g in spread] == pytest.approx([g.score for g in whole], abs=1e-9)


def test_placement_keys_without_a_device_map_are_an_error(world_paths):
    from w2s.guide.commands import GuideError

    with pytest.raises(GuideError, match="set device_map: auto"):
        load_model("tiny:weak", max_memory={"cpu": "1GB"})
