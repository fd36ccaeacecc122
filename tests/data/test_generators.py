"""`kind: hf` generators sample through the engine: a prompt's samples depend on the shard's seed and the
prompt alone (not the batch size, nor the other prompts of its shard), and differ from each other."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
from safetensors.torch import load_file, save_file

from w2s.data import build
from w2s.data.build import plan
from w2s.data.generators import HFGenerator
from w2s.data.recipe import GeneratorConfig, recipe_from_dict
from w2s.data.world import world_prompts
from w2s.guide.files import model_folders
from w2s.guide.models import load_model_and_tokenizer
from w2s.guide.sampling import sample

N = 4
PROMPTS = [[{"role": "user", "content": p}] for p in world_prompts("train", 7)]
# a conversation: its earlier turns are part of the prompt
PROMPTS.append([*PROMPTS[0], {"role": "assistant", "content": "the film was good ."}, *PROMPTS[1]])


def generator(**settings) -> HFGenerator:
    config = {"name": "weak", "model": "tiny:weak", "num_samples": N, "max_new_tokens": 24, **settings}
    return HFGenerator(GeneratorConfig(**config))


def test_samples_do_not_depend_on_the_batch_size_or_the_shard(world_paths):
    by_size = {size: generator(batch_size=size).generate(PROMPTS, seed=11) for size in (1, N, 3 * N, 64)}
    assert by_size[1] == by_size[N] == by_size[3 * N] == by_size[64]  # 1: one prompt's N rows, never split
    out = by_size[64]
    assert len(out) == len(PROMPTS) and all(len(rs) == N for rs in out)
    # the same prompts spread over other shards, in another order, beside other prompts: the same samples
    g = generator(batch_size=8)
    others = [[{"role": "user", "content": p}] for p in world_prompts("test", 3)]
    regrouped = g.generate([PROMPTS[5], *others, PROMPTS[2]], seed=11) + g.generate(PROMPTS[7:1:-3], seed=11)
    assert regrouped[0] == out[5] and regrouped[4] == out[2]
    assert regrouped[5:] == [out[7], out[4]]
    # a prompt's N samples differ from each other; another seed draws others
    assert all(len(set(rs)) > 1 for rs in out)
    assert generator(batch_size=64).generate(PROMPTS, seed=12) != out
    assert out[7] != out[1]  # the conversation's earlier turns count


def test_greedy_gives_n_identical_samples_equal_to_transformers_greedy(world_paths):
    g = generator(temperature=0.0, batch_size=2 * N)
    out = g.generate(PROMPTS, seed=3)
    assert all(rs == [rs[0]] * N for rs in out)
    # brute force: transformers' greedy generate, one prompt per call (no padding), counts the same tokens
    model, tok = load_model_and_tokenizer(str(world_paths["weak"]))
    counter = [0]
    expected = [
        sample(model, tok, [p], temperature=0.0, max_new_tokens=24, batch_size=1, counter=counter)[0][0]
        for p in PROMPTS
    ]
    assert [rs[0] for rs in out] == [t.strip() for t in expected]
    assert g.tokens == N * counter[0]


def test_the_generation_shard_key_names_the_sampler(tmp_path, monkeypatch):
    recipe = recipe_from_dict(
        {
            "output_dir": str(tmp_path),
            "prompt_source": "tiny:train",
            "num_prompts": 8,
            "generators": [{"name": "weak", "model": "tiny:weak"}],
            "judges": [{"name": "gold", "kind": "rule"}],
        }
    )
    before = plan(recipe).gen_dirs["weak"]
    assert plan(recipe).gen_dirs["weak"] == before
    monkeypatch.setattr(build, "STREAMS", "another way of drawing")
    assert plan(recipe).gen_dirs["weak"] != before  # shards an older sampler left are regenerated


def test_a_local_generator_or_judge_retrained_since_gets_new_shards_and_tiny_names_keep_theirs(tmp_path, world_paths):
    weak, judge = tmp_path / "weak", tmp_path / "judge"
    shutil.copytree(world_paths["weak"], weak)
    shutil.copytree(world_paths["weak"], judge)
    template = "which is better? " * 40 + "\n{instruction}\n{output_1}\n{output_2}"  # a string too long for a path

    def planned(generator: str, judge_model: str):
        recipe = recipe_from_dict(
            {
                "output_dir": str(tmp_path / "out"),
                "prompt_source": "tiny:train",
                "num_prompts": 8,
                "generators": [{"name": "weak", "model": generator}],
                "judges": [{"name": "pw", "kind": "pairwise", "model": judge_model, "template": template}],
            }
        )
        p = plan(recipe)
        return p.gen_dirs["weak"], p.judge_dirs["pw"]

    gen, jdg = planned(str(weak), str(judge))
    assert planned(str(weak), str(judge)) == (gen, jdg)
    weights = load_file(weak / "model.safetensors")
    save_file({k: v + 1e-3 for k, v in weights.items()}, weak / "model.safetensors", metadata={"format": "pt"})
    moved_gen, moved_jdg = planned(str(weak), str(judge))
    assert moved_gen != gen and moved_jdg != jdg  # new samples, judged anew (their shards are keyed by the samples)
    save_file(weights, judge / "model.safetensors", metadata={"format": "pt"})  # the judge rewritten, the same
    assert planned(str(weak), str(judge)) == (moved_gen, moved_jdg)
    save_file({k: v - 1e-3 for k, v in weights.items()}, judge / "model.safetensors", metadata={"format": "pt"})
    same_gen, new_jdg = planned(str(weak), str(judge))  # the judge retrained: only the judging is redone
    assert same_gen == moved_gen and new_jdg != moved_jdg
    # tiny: names are no local folders: their keys are those of a release before fingerprints
    recipe = {"generator": dataclasses.asdict(GeneratorConfig(name="weak", model="tiny:weak"))}
    assert model_folders(recipe) == {}


@pytest.mark.parametrize("key, value", [("temperature", -0.5), ("top_p", 0.0), ("max_new_tokens", 0)])
def test_sampling_settings_are_checked_with_the_recipe(tmp_path, key, value):
    generators = [{"name": "weak", "model": "tiny:weak", key: value}]
    with pytest.raises(ValueError, match=rf"generators\[0\]\.{key}"):
        recipe_from_dict(
            {"output_dir": str(tmp_path), "generators": generators, "judges": [{"name": "g", "kind": "rule"}]}
        )
