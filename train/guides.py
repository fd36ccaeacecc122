"""The tiny world's guides (DPO / SFT+DPO / LoRA / family B), trained from its bases by train/sft.py and
train/dpo.py on first use and cached, and the `tiny:<name>` models recipes refer to.

`tiny:` names resolve here for every stage: pyproject.toml registers `ensure_tiny` in the `w2s.models`
entry-point group, which the guide layer looks up (w2s/guide/sources.py) without importing this layer.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from datasets import load_from_disk

from w2s.data.world.cache import build_once, cache_root, content_key, world_tag
from w2s.guide.files import RecipeError
from w2s.train import dpo, sft
from w2s.train.data import resolve_data_path
from w2s.train.evaluation import reward_accuracy, sample_reward
from w2s.train.recipes import parse_recipe
from w2s.train.tiny import BASES, GUIDE_DATA, GUIDE_RECIPES, GUIDES
from w2s.train.world import base_path, ensure_base, seed_flags

logger = logging.getLogger(__name__)


GUIDE_VERSION = "2"  # bump when how guides are built changes without a recipe changing


def guide_path(kind: str = "dpo") -> Path:
    """The cache folder of the tiny-world guide `kind` (it may not be built yet)."""
    if kind not in GUIDES:
        raise RecipeError(f"unknown tiny-world guide {kind!r}: choose one of {sorted(GUIDES)}")
    base, stages, flags = GUIDES[kind]
    recipes = [GUIDE_RECIPES[stage].read_bytes() for stage in stages]
    data = GUIDE_DATA.get(kind, "tiny:preferences")
    key = content_key(GUIDE_VERSION, *recipes, base_path(base).name, " ".join(stages), " ".join(flags), data)
    return cache_root() / "tiny-world" / f"guide-{kind.replace('_', '-')}{world_tag()}-{key}"


def ensure_guide(kind: str = "dpo") -> Path:
    """The tiny world's guide `kind`, trained by train/sft.py and/or train/dpo.py on first use and cached.

    `dpo`: DPO of the weak base, full fine-tune (an HF model folder; its untuned twin is `tiny:weak`);
    `sft_dpo`: SFT then DPO; `lora`: a LoRA adapter on the weak base (adapter off is the untuned twin);
    `b`: like `dpo`, on `weak_b` (family B tokenizer).
    """
    path = guide_path(kind)
    base, stages, flags = GUIDES[kind]
    scripts = {"sft": sft, "dpo": dpo}

    def build(tmp: Path) -> None:
        model = str(ensure_base(base))
        data = GUIDE_DATA.get(kind, "tiny:preferences")
        logger.info("training the tiny world's %s guide (%s of %s; cached in %s)", kind, "+".join(stages), base, path)
        with tempfile.TemporaryDirectory(dir=tmp.parent) as work:
            for i, stage in enumerate(stages):
                out = str(tmp) if i == len(stages) - 1 else f"{work}/{stage}"
                last = i == len(stages) - 1  # the kind's flags tune its last (DPO) stage
                args = ["--config", str(GUIDE_RECIPES[stage]), "--output_dir", out, "--model_name_or_path", model,
                        "--dataset_name", data, *seed_flags(GUIDE_RECIPES[stage]), *(flags if last else ())]  # fmt: skip
                scripts[stage].main(*parse_recipe(scripts[stage].DATACLASSES, args))
                model = out
            card = tmp / "README.md"  # name the intermediate models by what they are, not by a deleted folder
            text = card.read_text().replace(str(ensure_base(base)), f"tiny:{base}").replace(tmp.name, path.name)
            for stage in stages[:-1]:
                text = text.replace(f"{work}/{stage}", f"tiny:{base} after {stage.upper()} (recipes/tiny/{stage}.yaml)")
            card.write_text(text)

    return build_once(path, build)


# Named tiny-world models that recipes refer to as `tiny:<name>`: the bases and the trained guides.
TINY_MODELS: dict[str, Callable[[], Path]] = {name: partial(ensure_base, name) for name in BASES}
# An under-trained family-A student (the weak recipe stopped early): room to learn from a teacher.
TINY_MODELS["student"] = partial(ensure_base, "weak", overrides=["--max_steps", "60"])
TINY_MODELS |= {"guide": partial(ensure_guide, "dpo"), "guide_sft_dpo": partial(ensure_guide, "sft_dpo"),
                "guide_lora": partial(ensure_guide, "lora"), "guide_b": partial(ensure_guide, "b"),
                "guide_sentiment": partial(ensure_guide, "sentiment"), "guide_topic": partial(ensure_guide, "topic")}  # fmt: skip


def ensure_tiny(name: str) -> Path:
    """The folder of the tiny-world model `name` (`strong`, `weak`, `weak_b`, ...), built if needed."""
    if name not in TINY_MODELS:
        raise RecipeError(f"unknown tiny-world model 'tiny:{name}': choose one of {sorted(TINY_MODELS)}")
    return TINY_MODELS[name]()


def guides_table(num_prompts: int = 300, seed: int = 0) -> str:
    """The guides table of docs/train.md (`w2s world report --guides`): each tiny-world guide's held-out reward
    accuracy against its untuned twin, and the gold reward of its samples before and after training."""
    rows = ["| guide | training | reward accuracy (held-out pairs) | gold reward untuned → tuned "
            "| well-formed samples untuned → tuned |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    untuned_samples = {}  # base -> its samples' (reward, well-formed share): guides of one base share their twin
    for kind, (base, stages, flags) in GUIDES.items():
        tuned, untuned = ensure_guide(kind), ensure_base(base)
        pairs = load_from_disk(resolve_data_path(GUIDE_DATA.get(kind, "tiny:preferences")))["test"]
        accuracy = reward_accuracy(tuned, untuned, pairs)
        if base not in untuned_samples:
            untuned_samples[base] = sample_reward(untuned, num_prompts=num_prompts, seed=seed)
        (u_reward, u_ok), (t_reward, t_ok) = (
            untuned_samples[base],
            sample_reward(tuned, num_prompts=num_prompts, seed=seed),
        )
        training = (
            " then ".join(s.upper() for s in stages) + f" of `{base}`" + (f" ({' '.join(flags)})" if flags else "")
        )
        rows.append(
            f"| `tiny:{'guide' if kind == 'dpo' else 'guide_' + kind}` | {training} | {accuracy:.2f} (n={len(pairs)}) | "
            f"{u_reward:+.2f} → {t_reward:+.2f} | {u_ok:.0%} → {t_ok:.0%} |"
        )
    return "\n".join(rows) + "\n"
