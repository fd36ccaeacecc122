"""Bad input to the guide engine: each a clear error naming what is wrong."""

import json

import pytest

from w2s.guide import Guide, GuideConfig
from w2s.guide.cli import generate, load_prompts
from w2s.guide.engine import encode_prompts
from w2s.guide.models import load_tokenizer
from w2s.guide.pair import GuidePair
from w2s.guide.scorers import GuideScorer


def test_empty_prompt_is_named():
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        Guide(GuideConfig.from_dict(dict(decoder="sample"))).generate(["the film was good .", "  "], progress=False)


def test_no_prompts():
    with pytest.raises(ValueError, match="no prompts"):
        Guide(GuideConfig.from_dict(dict(decoder="sample"))).generate([], progress=False)


def test_prompt_longer_than_the_context_is_named():
    long = "the film was good . " * 60  # far beyond the strong base's 128 positions
    with pytest.raises(ValueError, match=r"prompt 0 is \d+ tokens .* context is 128 tokens"):
        Guide(GuideConfig.from_dict(dict(decoder="sample"))).generate([long], progress=False)


def test_chat_messages_encode_in_the_template_and_are_checked_like_text():
    tok = load_tokenizer("tiny:strong")
    text = "the film was good ."
    user = [{"role": "user", "content": text}]
    assert encode_prompts(tok, [user], 128) == encode_prompts(tok, [text], 128)
    conversation = [*user, {"role": "assistant", "content": "it was ."}, {"role": "user", "content": "why ?"}]
    assert len(encode_prompts(tok, [conversation], 128)[0]) > len(encode_prompts(tok, ["why ?"], 128)[0]) + 5
    with pytest.raises(ValueError, match="prompt 1 is empty"):
        encode_prompts(tok, [user, [{"role": "user", "content": "  "}]], 128)
    with pytest.raises(ValueError, match=r"prompt 0 is \d+ tokens .* context is 128 tokens"):
        encode_prompts(tok, [[{"role": "user", "content": text * 60}]], 128)


def test_guide_without_chat_template_is_named():
    pair = GuidePair.from_folders("tiny:strong", "tiny:weak")
    pair.tokenizer = load_tokenizer("tiny:weak")
    pair.tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template"):
        GuideScorer([pair], ["the film was good ."], [0])


def test_recipe_unknown_key_names_file_and_key(tmp_path):
    recipe = tmp_path / "guide.yaml"
    recipe.write_text("decoder: cbs\nwidht: 4\n")
    with pytest.raises(ValueError, match=r"guide\.yaml: unknown key 'widht' \(did you mean 'width'\?\)"):
        GuideConfig.from_yaml(recipe)
    recipe.write_text("decoder: cbs\nwidth: four\n")
    with pytest.raises(ValueError, match="key 'width': expected int"):
        GuideConfig.from_yaml(recipe)
    with pytest.raises(ValueError, match="decoder 'beam'"):
        GuideConfig.from_yaml(recipe, ["--width", "2", "--decoder", "beam"])


def test_generate_reports_a_bad_recipe_without_a_traceback(tmp_path, capsys):
    from w2s.guide.cli import generate

    recipe = tmp_path / "guide.yaml"
    recipe.write_text("decoder: cbs\nwidht: 4\n")
    assert generate(["--config", str(recipe)]) == 2
    assert "guide.yaml: unknown key 'widht' (did you mean 'width'?)" in capsys.readouterr().err
    assert generate(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml': no such file" in capsys.readouterr().err


def test_broken_jsonl_prompt_file_names_the_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"instruction": "the film was good ."}\n{"instruction": oops}\n')
    with pytest.raises(ValueError, match=r"prompts\.jsonl:2"):
        load_prompts(str(path), None)


def test_generate_writes_alpaca_eval_outputs(tmp_path):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": "the film was good ."}, {"instruction": "the songs were dull ."}]))
    out = tmp_path / "out.json"
    recipe = tmp_path / "guide.yaml"
    recipe.write_text(f"decoder: sample\nprompts: {prompts}\noutput: {out}\nmax_new_tokens: 16\ngenerator: plain\n")
    assert generate(["--config", str(recipe)]) == 0
    items = json.loads(out.read_text())
    assert [i["instruction"] for i in items] == ["the film was good .", "the songs were dull ."]
    assert all(i["generator"] == "plain" and i["output"] and i["stop"] for i in items)
    costs = json.loads(out.with_name(out.stem + ".details.json").read_text())["items"]
    assert len(costs) == len(items) and all(c["tokens"]["strong"] > 0 for c in costs)
    assert all(c["batch_seconds"] == pytest.approx(len(items) * c["seconds"]) for c in costs)  # one batch of two
