"""The tiny world's base models: built from `recipes/tiny/base_*.yaml` on first use and cached.

Each model lives in `<cache>/tiny-world/<name>-<key>/`, where the key hashes
its recipe, its tokenizer and the world's version, so editing a recipe builds
a new model and never serves a stale one. Set `W2S_CACHE` to move the cache.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch

from data.world import Review
from data.world.cache import build_once, cache_root, content_key, world_seed, world_tag, world_training_seed
from data.world.tokenizers import world_tokenizer_path
from guide.models import chat_prompt

logger = logging.getLogger(__name__)

WORLD_THREADS = 2  # torch threads for pretraining the bases (see ensure_base)
RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes" / "tiny"
BASES = {"strong": "base_strong.yaml", "weak": "base_weak.yaml", "weak_b": "base_weak_b.yaml"}


def base_recipe(name: str) -> Path:
    if name not in BASES:
        raise ValueError(f"unknown tiny-world base {name!r}: choose one of {sorted(BASES)}")
    return RECIPES_DIR / BASES[name]


def seed_flags(recipe: Path) -> list[str]:
    """`--seed` for training from `recipe` in the current world (none in world 0: the recipe's own seed)."""
    if not world_seed():
        return []
    import yaml

    return ["--seed", str(world_training_seed(int(yaml.safe_load(recipe.read_text()).get("seed", 0))))]


def base_path(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The cache folder of base model `name` (it may not be built yet)."""
    from trl import TrlParser

    from train.pretrain import PretrainArguments

    recipe = recipe or base_recipe(name)
    overrides = [*overrides, *seed_flags(recipe)]
    # only the model's own arguments: building an SFTConfig here would reset accelerate's distributed state
    script_args, _ = TrlParser((PretrainArguments,)).parse_args_and_config(
        ["--config", str(recipe), *overrides], return_remaining_strings=True
    )
    tokenizer = world_tokenizer_path(script_args.tokenizer_family)
    key = content_key(recipe.read_bytes(), " ".join(overrides), tokenizer.name)
    return cache_root() / "tiny-world" / f"{name.replace('_', '-')}{world_tag()}-{key}"


def ensure_base(name: str, recipe: Path | None = None, overrides: list[str] = ()) -> Path:
    """The folder of base model `name`, pretraining it first if it is not cached."""
    from train.pretrain import main, parse

    recipe = recipe or base_recipe(name)
    path = base_path(name, recipe, overrides)

    overrides = [*overrides, *seed_flags(recipe)]

    def build(tmp: Path) -> None:
        logger.info("pretraining the tiny world's %s base from %s (cached in %s)", name, recipe, path)
        # Float sums depend on how many threads split them, and training amplifies the difference: pin the
        # count so the world is the same whatever the caller set (data builds run on one thread).
        threads = torch.get_num_threads()
        torch.set_num_threads(WORLD_THREADS)
        try:
            main(*parse(["--config", str(recipe), "--output_dir", str(tmp), *overrides]))
        finally:
            torch.set_num_threads(threads)

    return build_once(path, build)


# The tiny world's guides: the base each is tuned from, its training stages, and extra flags.
# `dpo` skips SFT on evidence: on the weak base, SFT on the chosen responses before DPO lowered held-out
# reward accuracy (0.88 -> 0.83) and the share of well-formed samples (0.43 -> 0.37); `sft_dpo` keeps it.
GUIDES: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "dpo": ("weak", ("dpo",), ()),
    # after SFT, DPO at beta 0.1 over-optimised and undid SFT's gain (sample reward -0.53 -> -2.62); 0.3 keeps it (+1.48)
    "sft_dpo": ("weak", ("sft", "dpo"), ("--beta", "0.3")),
    # LoRA alone (attention + MLP) barely moved the reward or broke fluency: the output embedding must train too
    "lora": ("weak", ("dpo",), ("--use_peft", "--lora_r", "16", "--lora_alpha", "16", "--lora_dropout", "0",
                                "--lora_target_modules", "all-linear", "--lora_modules_to_save", "embed_tokens",
                                "lm_head")),
    # family B: beta 0.3 kept more samples well-formed than 0.1 (43% vs 36%) at a higher reward accuracy
    "b": ("weak_b", ("dpo",), ("--beta", "0.3")),
}  # fmt: skip
GUIDE_RECIPES = {"sft": RECIPES_DIR / "sft.yaml", "dpo": RECIPES_DIR / "dpo.yaml"}
GUIDE_VERSION = "2"  # bump when how guides are built changes without a recipe changing


def guide_path(kind: str = "dpo") -> Path:
    """The cache folder of the tiny-world guide `kind` (it may not be built yet)."""
    if kind not in GUIDES:
        raise ValueError(f"unknown tiny-world guide {kind!r}: choose one of {sorted(GUIDES)}")
    base, stages, flags = GUIDES[kind]
    recipes = [GUIDE_RECIPES[stage].read_bytes() for stage in stages]
    key = content_key(GUIDE_VERSION, *recipes, base_path(base).name, " ".join(stages), " ".join(flags))
    return cache_root() / "tiny-world" / f"guide-{kind.replace('_', '-')}{world_tag()}-{key}"


def ensure_guide(kind: str = "dpo") -> Path:
    """The tiny world's guide `kind`, trained by train/sft.py and/or train/dpo.py on first use and cached.

    `dpo`: DPO of the weak base, full fine-tune (an HF model folder; its untuned twin is `tiny:weak`);
    `sft_dpo`: SFT then DPO; `lora`: a LoRA adapter on the weak base (adapter off is the untuned twin);
    `b`: like `dpo`, on `weak_b` (family B tokenizer).
    """
    import tempfile

    from train import dpo, sft
    from train.recipes import parse_recipe

    path = guide_path(kind)
    base, stages, flags = GUIDES[kind]
    scripts = {"sft": sft, "dpo": dpo}

    def build(tmp: Path) -> None:
        model = str(ensure_base(base))
        data = "tiny:preferences" if base == "weak" else "tiny:preferences_b"
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


def ensure_prompts(num_prompts: int = 400) -> Path:
    """Folder (`load_from_disk`) of world prompts in conversational form: train and test splits (for distillation)."""
    from datasets import Dataset, DatasetDict

    from data.world import world_prompts

    def rows(split: str, n: int) -> Dataset:
        return Dataset.from_list([{"prompt": [{"role": "user", "content": p}]} for p in world_prompts(split, n)])

    path = cache_root() / "tiny-world" / f"prompts-{content_key(str(num_prompts))}"
    return build_once(path, lambda tmp: DatasetDict({"train": rows("train", num_prompts), "test": rows("test", 100)})
                      .save_to_disk(str(tmp)))  # fmt: skip


def ensure_teacher_outputs(num_prompts: int = 400, teacher: str = "strong", seed: int = 0) -> Path:
    """A JSONL of the `teacher` base's samples on world prompts (conversational prompt/completion), for
    sequence-level distillation; built once and cached."""
    import json

    from data.world import world_prompts
    from guide.models import load_model_and_tokenizer
    from guide.sampling import sample

    teacher_dir = ensure_base(teacher)
    key = content_key(teacher_dir.name, str(num_prompts), str(seed))
    folder = cache_root() / "tiny-world" / f"teacher-outputs-{teacher.replace('_', '-')}-{key}"

    def build(tmp: Path) -> None:
        model, tokenizer = load_model_and_tokenizer(str(teacher_dir))
        prompts = world_prompts("train", num_prompts)
        responses = sample(model, tokenizer, prompts, max_new_tokens=64, seed=seed, progress=True)
        with open(tmp / "train.jsonl", "w") as f:
            for prompt, (response,) in zip(prompts, responses, strict=True):
                row = {"prompt": [{"role": "user", "content": prompt}],
                       "completion": [{"role": "assistant", "content": response}]}  # fmt: skip
                f.write(json.dumps(row) + "\n")

    return build_once(folder, build) / "train.jsonl"


# Named tiny-world models that recipes refer to as `tiny:<name>`: the bases and the trained guides.
TINY_MODELS: dict[str, Callable[[], Path]] = {name: partial(ensure_base, name) for name in BASES}
# An under-trained family-A student (the weak recipe stopped early): room to learn from a teacher.
TINY_MODELS["student"] = partial(ensure_base, "weak", overrides=["--max_steps", "60"])
TINY_MODELS |= {"guide": partial(ensure_guide, "dpo"), "guide_sft_dpo": partial(ensure_guide, "sft_dpo"),
                "guide_lora": partial(ensure_guide, "lora"), "guide_b": partial(ensure_guide, "b")}  # fmt: skip


def ensure_tiny(name: str) -> Path:
    """The folder of the tiny-world model `name` (`strong`, `weak`, `weak_b`, ...), built if needed."""
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny-world model 'tiny:{name}': choose one of {sorted(TINY_MODELS)}")
    return TINY_MODELS[name]()


def ensure_world(names: tuple[str, ...] = tuple(BASES), overrides: list[str] = ()) -> dict[str, Path]:
    """Every base model of the tiny world, built if needed."""
    return {name: ensure_base(name, overrides=overrides) for name in names}


@dataclass
class BaseReport:
    """How a base model writes the tiny world's language."""

    well_formed: float  # share of samples whose every sentence is well formed
    sentences_ok: float  # share of sampled sentences that are well formed
    reward_mean: float
    reward_std: float
    perplexity_per_word: float  # held-out, comparable across tokenizers


@torch.no_grad()
def perplexity_per_word(model, tokenizer, reviews: list[Review], batch_size: int = 64) -> float:
    """exp(total NLL of the responses, end-of-turn included, / their words + 1 per review).

    Normalising by words, not tokens, makes models with different tokenizers comparable.
    """
    nll, words = 0.0, 0
    for start in range(0, len(reviews), batch_size):
        batch = reviews[start : start + batch_size]
        prompts = [chat_prompt(tokenizer, r.prompt) for r in batch]
        fulls = [
            tokenizer.apply_chat_template(
                [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.response}], tokenize=False
            )
            for r in batch
        ]
        enc = tokenizer(fulls, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        prompt_lens = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
        logprobs = torch.log_softmax(model(**enc).logits[:, :-1].float(), dim=-1)
        token_lp = logprobs.gather(-1, enc.input_ids[:, 1:, None])[..., 0]  # (batch, seq-1)
        pad = (enc.attention_mask == 0).sum(1)  # left padding
        for i, r in enumerate(batch):
            first = int(pad[i]) + prompt_lens[i] - 1  # predicts the first response token
            nll -= token_lp[i, first:].sum().item()
            words += len(r.response.split()) + 1
    return math.exp(nll / words)


def report_base(path: Path, num_prompts: int = 200, seed: int = 0, max_new_tokens: int = 80) -> BaseReport:
    """Samples `num_prompts` test prompts at temperature 1 and scores them with the gold reward."""
    from data.world import score_review, world_corpus, world_prompts
    from guide.models import load_model_and_tokenizer
    from guide.sampling import sample

    model, tokenizer = load_model_and_tokenizer(str(path))
    prompts = world_prompts("test", num_prompts)
    responses = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
    scores = [score_review(p, r) for p, (r,) in zip(prompts, responses, strict=True)]
    rewards = [s.reward for s in scores]
    held_out = world_corpus("test", num_prompts + 200)[num_prompts:]  # reviews never prompted above
    return BaseReport(
        well_formed=sum(s.well_formed for s in scores) / len(scores),
        sentences_ok=sum(s.n_sentences - s.n_malformed for s in scores) / max(1, sum(s.n_sentences for s in scores)),
        reward_mean=statistics.mean(rewards),
        reward_std=statistics.stdev(rewards),
        perplexity_per_word=perplexity_per_word(model, tokenizer, held_out),
    )


def show_samples(paths: dict[str, Path], *, num_prompts: int = 4, seed: int = 0, max_new_tokens: int = 80) -> None:
    """Prints each base model's continuations of the same test prompts with their gold reward."""
    from data.world import score_review, world_prompts
    from guide.models import load_model_and_tokenizer
    from guide.sampling import sample

    prompts = world_prompts("test", num_prompts)
    for name, path in paths.items():
        model, tokenizer = load_model_and_tokenizer(str(path))
        n_params = sum(p.numel() for p in model.parameters())
        print(f"\n== {name} base: {model.config.model_type}, {n_params / 1e6:.2f}M parameters ({path})")
        responses = sample(model, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed)
        for prompt, (response,) in zip(prompts, responses, strict=True):
            score = score_review(prompt, response)
            verdict = "well-formed" if score.well_formed else "; ".join(score.errors)
            print(f"  [{score.reward:+6.2f}] {prompt} >> {response}   ({verdict})")


def bases_table(num_prompts: int = 300, seed: int = 0) -> str:
    """The base-model table of the README (`w2s world report`): how each base writes the world's language."""
    rows = ["| base | architecture | parameters | well-formed samples | well-formed sentences | gold reward (± sd) "
            "| perplexity / word |", "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    from guide.models import load_model

    for name in BASES:
        path = ensure_base(name)
        model = load_model(str(path))
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        r = report_base(path, num_prompts=num_prompts, seed=seed)
        rows.append(
            f"| {name} | {model.config.model_type}, {model.config.num_hidden_layers} × {model.config.hidden_size} | "
            f"{n_params:.2f}M | {r.well_formed:.1%} | {r.sentences_ok:.1%} | {r.reward_mean:+.2f} ± {r.reward_std:.2f} "
            f"| {r.perplexity_per_word:.2f} |"
        )
    return "\n".join(rows) + "\n"


def guides_table(num_prompts: int = 300, seed: int = 0) -> str:
    """The guides table of the README (`w2s world report --guides`): each tiny-world guide's held-out reward
    accuracy against its untuned twin, and the gold reward of its samples before and after training."""
    from datasets import load_from_disk

    from data.world.preferences import world_preferences
    from train.evaluation import reward_accuracy, sample_reward

    rows = ["| guide | training | reward accuracy (held-out pairs) | gold reward untuned → tuned "
            "| well-formed samples untuned → tuned |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for kind, (base, stages, flags) in GUIDES.items():
        tuned, untuned = ensure_guide(kind), ensure_base(base)
        pairs = load_from_disk(str(world_preferences(untuned)))["test"]
        accuracy = reward_accuracy(tuned, untuned, pairs)
        (u_reward, u_ok), (t_reward, t_ok) = (
            sample_reward(p, num_prompts=num_prompts, seed=seed) for p in (untuned, tuned)
        )
        training = (
            " then ".join(s.upper() for s in stages) + f" of `{base}`" + (f" ({' '.join(flags)})" if flags else "")
        )
        rows.append(
            f"| `tiny:{'guide' if kind == 'dpo' else 'guide_' + kind}` | {training} | {accuracy:.2f} (n={len(pairs)}) | "
            f"{u_reward:+.2f} → {t_reward:+.2f} | {u_ok:.0%} → {t_ok:.0%} |"
        )
    return "\n".join(rows) + "\n"
