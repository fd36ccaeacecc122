"""`w2s bench guide --shapes`: the named shapes are the released models' sizes, and each part of the run prints
its figures (at a reduced size here: the real shapes take minutes per side)."""

from __future__ import annotations

import re

import pytest

from w2s.eval.bench_shapes import GPT2, GPT2_LARGE, LLAMA_1B, SHAPES, Model, compare_shape, profile_cbs
from w2s.eval.bench_shapes import llama as llama_config
from w2s.eval.cli import SHAPE_NAMES
from w2s.eval.vocabularies import gpt2_tokenizer, llama3_tokenizer
from w2s.guide.pair import GuidePair


def test_the_shapes_are_the_released_sizes_and_the_command_line_names_them_all():
    gpt2 = gpt2_tokenizer()
    # parameter counts of the released checkpoints (tied embeddings counted once)
    assert GPT2.build(gpt2, 0, device="meta").num_parameters() == 124_439_808
    assert GPT2_LARGE.build(gpt2, 0, device="meta").num_parameters() == 774_030_080
    llama = Model("Llama 3.2 1B", llama_config(num_hidden_layers=16, **LLAMA_1B))
    sized = _Sized(128_256)
    assert llama.build(sized, 0, device="meta").num_parameters() == 1_235_814_400
    assert tuple(SHAPES) == SHAPE_NAMES


class _Sized:
    """What `Model.build` reads of a tokenizer: its length and special ids (a released vocabulary's size)."""

    bos_token_id, eos_token_id = 0, 1

    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n


@pytest.mark.parametrize("shape", ["paper-sentiment", "llama-100k"])
def test_each_part_of_the_shapes_run_prints_its_figures_at_a_reduced_size(shape, capsys, one_thread):
    s = SHAPES[shape]
    tokenizer = {"gpt2": gpt2_tokenizer, "llama3": llama3_tokenizer}[s.tokenizer]()
    from w2s.guide.models import set_prompt_format

    set_prompt_format(tokenizer, s.prompt_format)
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    small = {"gpt2": dict(n_layer=1, n_embd=32, n_head=2), "llama3": dict(num_hidden_layers=1, hidden_size=32,
             intermediate_size=64, num_attention_heads=2, num_key_value_heads=1)}[s.tokenizer]  # fmt: skip
    strong = s.strong.build(tokenizer, 0, **small)
    pair = GuidePair(*(s.guide.build(tokenizer, seed, **small) for seed in (1, 2)), tokenizer)
    rows = []
    compare_shape(shape, 6, strong, tokenizer, pair, ["The movie was", "I think"], 1, 1.5, lambda *r: rows.append(r))
    assert [label for label, _ in rows] == [
        f"{shape}: CBS(4,4,5) / plain sampling of the same rows, 6 tok",
        f"{shape}: that over the compute floor (1.50x), 6 tok",
        f"{shape}: transformers generate / w2s plain sampling, 6 tok",
    ]
    assert rows[1][1] == pytest.approx(rows[0][1] / 1.5)
    profile_cbs(strong, tokenizer, pair, ["The movie was"], 6)
    shares = [float(x) for x in re.findall(r" s +([\d.]+)%$", capsys.readouterr().out, flags=re.M)]
    assert len(shares) == 6 and sum(shares) == pytest.approx(100, abs=0.5)
