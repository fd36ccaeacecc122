"""The tiny world's catalogue: its base models and guides by name, and the recipes each is built from.

Plain data, importable without torch (the command line lists these names in its `--help`); the builders
are `train/world.py` (bases) and `train/guides.py` (guides).
"""

from __future__ import annotations

from pathlib import Path

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
BASES = {"strong": "base_strong.yaml", "weak": "base_weak.yaml", "weak_b": "base_weak_b.yaml"}

# The tiny world's guides: the base each is tuned from, its training stages, and extra flags.
# `dpo` is DPO alone, `sft_dpo` adds SFT on the chosen responses first; which one writes better depends on
# the build (`w2s world report --guides`), so tests gate only what training guarantees.
GUIDES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    # beta 0.1 (the recipe's) collapsed in 4 of 6 seeded runs over worlds 0-1 (samples of ". . great . ."); 0.3 held
    # in all 9 runs over worlds 0-2 (gold-reward gain z 9.6-66, held-out accuracy 0.77-0.87)
    "dpo": ("weak", ("dpo",), ("--beta", "0.3")),
    # after SFT, DPO at beta 0.1 over-optimised and undid SFT's gain (sample reward -0.53 -> -2.62); 0.3 keeps it (+1.48)
    "sft_dpo": ("weak", ("sft", "dpo"), ("--beta", "0.3")),
    # LoRA alone (attention + MLP) barely moved the reward or broke fluency: the output embedding must train too
    "lora": ("weak", ("dpo",), ("--use_peft", "--lora_r", "16", "--lora_alpha", "16", "--lora_dropout", "0",
                                "--lora_target_modules", "all-linear", "--lora_modules_to_save", "embed_tokens",
                                "lm_head")),
    # family B: beta 0.3 kept more samples well-formed than 0.1 (43% vs 36%) at a higher reward accuracy
    "b": ("weak_b", ("dpo",), ("--beta", "0.3")),
    # one expert per attribute of the gold reward (pairs judged by tiny_sentiment / tiny_topic): fusion, two-guide CBS
    "sentiment": ("weak", ("dpo",), ("--beta", "0.3")),
    "topic": ("weak", ("dpo",), ("--beta", "0.3")),
}  # fmt: skip
# the pairs each guide learns from (default: the gold-judged pairs of its base's samples)
GUIDE_DATA = {"b": "tiny:preferences_b", "sentiment": "tiny:preferences_sentiment", "topic": "tiny:preferences_topic"}
GUIDE_RECIPES = {"sft": RECIPES_DIR / "sft.yaml", "dpo": RECIPES_DIR / "dpo.yaml"}
