"""Every guide recipe parses; the real ones run with tiny-world models substituted through flags."""

from pathlib import Path

import pytest

from w2s.guide import Guide, GuideConfig

RECIPES = sorted(Path(__file__).resolve().parents[2].glob("recipes/*/guide.yaml"))
TINY = ["--dtype", "float32", "--device", "cpu", "--max_new_tokens", "8", "--batch_size", "2"]


def test_there_are_real_and_tiny_guide_recipes():
    families = {p.parent.name for p in RECIPES}
    assert {"tiny", "qwen2.5-0.5b", "llama-3.2-3b-pilot"} <= families


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.parent.name)
def test_recipe_parses(recipe):
    config = GuideConfig.from_yaml(recipe)
    assert config.decoder in ("cbs", "wsd", "bon", "eft", "fusion", "sample")


@pytest.mark.parametrize("recipe", [p for p in RECIPES if p.parent.name != "tiny"], ids=lambda p: p.parent.name)
def test_real_recipe_runs_with_tiny_models(recipe, lora_guide):
    overrides = [*TINY, "--strong_model", "tiny:strong"]
    config = GuideConfig.from_yaml(recipe)
    if config.adapter:
        overrides += ["--adapter", str(lora_guide["adapter"])]
    if config.pilot:
        overrides += ["--pilot", "tiny:weak_b"]  # another vocabulary: the draft travels as text
    if config.tuned:
        overrides += ["--tuned", str(lora_guide["merged"]), "--untuned", "tiny:weak"]
    config = GuideConfig.from_yaml(recipe, overrides)
    out = Guide(config).generate(["the film was good .", "the songs were dull ."], progress=False)
    assert len(out) == 2 and all(g.tokens.get("strong", 0) > 0 for g in out)
