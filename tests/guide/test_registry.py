"""Decoders by registration: one defined here runs through `w2s generate`; each decoder checks its own settings."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from w2s.cli import main
from w2s.data.world import world_prompts
from w2s.guide import GuideConfig
from w2s.guide.decoders import Decoder, register_decoder, registered
from w2s.guide.models import chat_prompt, load_model_and_tokenizer
from w2s.guide.streams import SamplingParams
from w2s.guide.types import Output

PROMPTS = world_prompts("test", 5)


@register_decoder("toy")
@dataclass
class GreedyThenStop(Decoder):
    """Greedy decoding of the strong model for at most `stop_after` tokens; the score is the length."""

    stop_after: int = 3  # not a GuideConfig field: the decoder's own recipe key

    def check(self) -> None:
        if self.stop_after < 1:
            raise ValueError(f"stop_after must be >= 1, got {self.stop_after}")

    def run(self, ctx) -> list[Output]:
        rows = ctx.start()
        rows.sample(self.stop_after, sampling=SamplingParams(temperature=0.0))
        return [Output(rows.text(r), r.stop, score=float(len(r.ids))) for r in rows.rows]


def greedy_by_brute_force(model, tokenizer, prompt: str, steps: int) -> list[int]:
    """Argmax of a full forward over the whole text at every step (no cache), until EOS or `steps` tokens."""
    ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False).input_ids
    out: list[int] = []
    while len(out) < steps:
        with torch.no_grad():
            token = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        out.append(token)
    return out


def test_a_registered_decoder_runs_through_w2s_generate(tmp_path, capsys):
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps([{"instruction": p} for p in PROMPTS]))
    out = tmp_path / "out.json"
    recipe = tmp_path / "guide.yaml"
    recipe.write_text(f"strong_model: tiny:strong\ndecoder: sample\nprompts: {prompts}\noutput: {out}\nbatch_size: 2\n")
    assert main(["generate", "--config", str(recipe), "--decoder", "toy", "--stop_after", "6"]) == 0, (
        capsys.readouterr().err
    )
    items = json.loads(out.read_text())

    model, tokenizer = load_model_and_tokenizer("tiny:strong")
    expected = [greedy_by_brute_force(model, tokenizer, p, 6) for p in PROMPTS]
    assert [i["instruction"] for i in items] == PROMPTS
    assert [i["output"] for i in items] == [tokenizer.decode(ids, skip_special_tokens=True) for ids in expected]
    assert all(i["generator"] == "toy" for i in items)
    details = json.loads(out.with_name(out.stem + ".details.json").read_text())["items"]
    assert [d["score"] for d in details] == [len(ids) for ids in expected]
    assert all(d["tokens"]["strong"] > 0 for d in details)
    assert max(len(ids) for ids in expected) == 6  # the limit cut at least one response
    assert len({i["output"] for i in items}) > 1


def test_registry_lists_registered_decoders_and_checks_their_keys(tmp_path):
    assert {"sample", "bon", "cbs", "wsd", "eft", "fusion", "toy"} <= set(registered())
    with pytest.raises(ValueError, match=r"decoder 'beam': choose one of (?=.*\bcbs\b)(?=.*\btoy\b)"):
        GuideConfig.from_dict(dict(decoder="beam"))
    recipe = tmp_path / "guide.yaml"
    recipe.write_text("decoder: toy\nstop_aftr: 2\n")
    with pytest.raises(ValueError, match=r"unknown key 'stop_aftr' \(did you mean 'stop_after'\?\)"):
        GuideConfig.from_yaml(recipe)
    recipe.write_text("decoder: toy\nstop_after: 2\n")
    assert GuideConfig.from_yaml(recipe).options == {"stop_after": 2}
    assert GuideConfig.from_yaml(recipe).make_decoder().stop_after == 2
    with pytest.raises(ValueError, match="already registered"):
        register_decoder("cbs")(GreedyThenStop)


@pytest.mark.parametrize(
    "decoder, key, value, message",
    [
        ("cbs", "width", 0, "width must be >= 1, got 0"),
        ("cbs", "chunk_len", -1, "chunk_len must be >= 1, got -1"),
        ("bon", "num_samples", 0, "num_samples must be >= 1, got 0"),
        ("wsd", "threshold", 0, r"threshold must be in \(0, 1\]"),
        ("wsd", "continuation", "beam", "continuation 'beam': choose sample or greedy"),
        ("fusion", "alpha_step", 0, "alpha_step must be > 0"),
        ("toy", "stop_after", 0, "stop_after must be >= 1, got 0"),
    ],
)
def test_a_decoders_bad_setting_names_the_key(tmp_path, decoder, key, value, message):
    recipe = tmp_path / "guide.yaml"
    recipe.write_text(f"decoder: {decoder}\n{key}: {value}\n")
    with pytest.raises(ValueError, match=rf"guide\.yaml: decoder {decoder}: {message}"):
        GuideConfig.from_yaml(recipe)


def test_w2s_generate_reports_a_bad_decoder_setting(tmp_path, capsys):
    recipe = tmp_path / "guide.yaml"
    recipe.write_text("decoder: cbs\ntuned: tiny:strong\nuntuned: tiny:weak\n")
    assert main(["generate", "--config", str(recipe), "--width", "0"]) == 2
    assert "guide.yaml: decoder cbs: width must be >= 1, got 0" in capsys.readouterr().err


def test_a_decoders_keys_are_its_fields_alone(tmp_path):
    """One declaration per knob: the decoder's dataclass field. `chunk_len: null` (unbounded chunks) is written in a
    recipe as CBS declares it; a key of another decoder is kept for it, not given to this one."""
    recipe = tmp_path / "guide.yaml"
    recipe.write_text("decoder: cbs\nwidth: 2\nchunk_len: null\nthreshold: 0.5\n")
    config = GuideConfig.from_yaml(recipe)
    cbs = config.make_decoder()
    assert (cbs.width, cbs.successors, cbs.chunk_len) == (2, 4, None)
    assert not hasattr(config, "width") and config.options == {"width": 2, "chunk_len": None, "threshold": 0.5}
    assert GuideConfig.from_yaml(recipe, ["--decoder", "wsd"]).make_decoder().threshold == 0.5
    recipe.write_text("decoder: cbs\nchunk_len: many\n")
    with pytest.raises(ValueError, match=r"key 'chunk_len': expected int \| None, got 'many'"):
        GuideConfig.from_yaml(recipe)


def test_a_decoder_without_postponed_annotations_shares_a_key_of_the_same_type():
    """A plug-in module without `from __future__ import annotations` declares `width: int` as a type, the built-in
    CBS as a string: both are the same recipe key."""
    namespace: dict = {}
    exec(
        "from dataclasses import dataclass\nfrom w2s.guide.decoders import Decoder, register_decoder\n"
        "@register_decoder('wide_greedy')\n@dataclass\nclass WideGreedy(Decoder):\n    width: int = 3\n",
        namespace,
    )
    assert namespace["WideGreedy"].recipe_keys() == {"width": int}
    assert registered()["cbs"].recipe_keys()["width"] is int
