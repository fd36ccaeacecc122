"""Prompt formats (raw text for base models) and each model's context: the strong model stops per row,
guides, pilots and judges refuse a row past their context, or cut it by a counted rule."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from w2s.data.judges import JudgeError, make_judge
from w2s.data.recipe import JudgeConfig
from w2s.data.world import world_prompts
from w2s.guide import Guide, GuideConfig
from w2s.guide.engine import Engine
from w2s.guide.models import chat_prompt, load_tokenizer, resolve_model_path
from w2s.guide.pair import GuidePair, PairScorer
from w2s.guide.search import Sampling
from w2s.guide.stopping import StopRule
from w2s.guide.streams import SamplingParams

PROMPTS = world_prompts("test", 3)


def without_template(name: str, root) -> str:
    """A copy of a tiny-world model whose tokenizer has no chat template: a base model, as on the hub."""
    dst = root / name.replace(":", "-")
    shutil.copytree(resolve_model_path(name), dst, ignore=shutil.ignore_patterns("chat_template.jinja"))
    config = json.loads((dst / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (dst / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(str(dst)).chat_template is None
    return str(dst)


@pytest.fixture(scope="module")
def raw_models(world_paths, tmp_path_factory):
    root = tmp_path_factory.mktemp("raw")
    return {name: without_template(f"tiny:{name}", root) for name in ("strong", "weak", "guide")}


def raw_config(raw_models, **kw) -> GuideConfig:
    return GuideConfig.from_dict(dict(
        strong_model=raw_models["strong"], tuned=raw_models["guide"], untuned=raw_models["weak"],
        pilot=raw_models["guide"], max_new_tokens=12, temperature=1.0, top_k=0, width=2, successors=2,
        chunk_len=4, threshold=0.3, batch_size=3, **kw,
    ))  # fmt: skip


def test_a_model_without_a_template_names_the_key_that_fixes_it(raw_models):
    with pytest.raises(ValueError, match="strong_prompt_format: raw"):
        Guide(raw_config(raw_models, decoder="sample")).generate(PROMPTS, progress=False)


def test_raw_text_renders_the_prompt_as_it_is(raw_models):
    tok = load_tokenizer(raw_models["strong"], prompt_format="raw")
    assert chat_prompt(tok, PROMPTS[0]) == PROMPTS[0]  # the tiny tokenizer adds no BOS to plain text
    tok = load_tokenizer(raw_models["strong"], prompt_format="Review: {prompt}\n")
    assert chat_prompt(tok, PROMPTS[0]) == f"Review: {PROMPTS[0]}\n"
    with pytest.raises(ValueError, match="guide_prompt_format"):
        GuideConfig.from_dict(dict(guide_prompt_format="plain"))


@pytest.mark.parametrize("decoder", ["cbs", "wsd", "eft"])
def test_raw_text_base_model_steered_by_raw_text_guides(raw_models, decoder):
    raw = {k: "raw" for k in ("strong_prompt_format", "guide_prompt_format", "pilot_prompt_format")}
    generations = Guide(raw_config(raw_models, decoder=decoder, **raw)).generate(PROMPTS, progress=False)
    assert len(generations) == len(PROMPTS) and all(g.stop for g in generations)
    assert any(g.text.strip() for g in generations)
    if decoder == "cbs":  # the score it ranked by is the raw-text log-ratio, prompt and response tokenised together
        pair = GuidePair.from_folders(raw_models["guide"], raw_models["weak"], prompt_format="raw")
        tok = pair.tokenizer
        for prompt, g in zip(PROMPTS, generations, strict=True):
            full = tok(prompt + g.text, add_special_tokens=False).input_ids
            start = len(tok(prompt, add_special_tokens=False).input_ids)
            assert full[:start] == tok(prompt, add_special_tokens=False).input_ids
            full += [tok.eos_token_id] if g.stop in ("eos", "stop_string") else []
            want = 0.0
            for model, sign in ((pair.tuned, 1), (pair.untuned, -1)):
                with torch.no_grad():
                    lp = torch.log_softmax(model(torch.tensor([full])).logits[0].double(), -1)
                want += sign * sum(lp[i - 1, full[i]].item() for i in range(start, len(full)))
            assert g.score == pytest.approx(want, abs=1e-3)


def small_context_model(tokenizer, context: int, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=context,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def test_the_strong_model_stops_each_row_at_its_own_context(world_paths):
    """Rows end one by one as their context fills; the others go on, and the output says why each ended."""
    tok = load_tokenizer("tiny:strong")
    lengths = [len(tok(chat_prompt(tok, p), add_special_tokens=False).input_ids) for p in PROMPTS]
    context = max(lengths) + 10
    model = small_context_model(tok, context)
    engine = Engine(model, tok, SamplingParams(seed=0), StopRule(set(), max_new_tokens=200))  # no EOS: only limits
    started = engine.start(PROMPTS)
    started.sample(200)
    rows = started.rows
    assert len(set(lengths)) > 1  # prompts of different lengths
    for length, row in zip(lengths, rows, strict=True):
        assert row.stop == "context" and not row.finished
        assert len(row.ids) == context - length  # each row used its own room, not the longest row's
    assert all(
        g.stop == "context" for g in Guide.from_models(engine).decode(PROMPTS, decoder=Sampling())
    )  # in the output


def test_a_guide_past_its_context_is_a_clear_error(world_paths):
    tok = load_tokenizer("tiny:weak")
    model = small_context_model(tok, 40)
    scorer = PairScorer(GuidePair(model, model, tok), PROMPTS[:1], [0])
    scorer.update(["it was good ."], [False])
    with pytest.raises(ValueError, match=r"past its context of 40"):
        scorer.update(["it was good . " * 20], [False])


def test_the_implicit_judge_refuses_a_row_past_its_context(world_paths, tmp_path):
    tok = load_tokenizer("tiny:weak")
    folder = tmp_path / "short"
    small_context_model(tok, 32).save_pretrained(folder)
    tok.save_pretrained(folder)
    implicit = make_judge(JudgeConfig(name="imp", kind="implicit", tuned=str(folder), untuned=str(folder)))
    assert implicit.rewards([PROMPTS[0]], ["ok ."]) == [0.0]
    with pytest.raises(JudgeError, match=r"imp.*past its context of 32"):
        implicit.rewards([PROMPTS[0]], ["it was good . " * 20])
