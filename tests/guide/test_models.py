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
