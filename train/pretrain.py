"""Pretrain a causal LM from scratch on the tiny world's corpus (plain language modelling with TRL).

This is how w2s builds the tiny world's base models; `w2s world build` runs it
for every recipe in `recipes/tiny/base_*.yaml` and caches the results.

    accelerate launch train/pretrain.py --config recipes/tiny/base_strong.yaml --output_dir out/strong
    python train/pretrain.py --config recipes/tiny/base_weak.yaml --output_dir out/weak --max_steps 50
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

from datasets import Dataset
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed
from trl import SFTConfig, SFTTrainer

from w2s.data.world import world_corpus
from w2s.data.world.tokenizers import world_tokenizer_path
from w2s.guide.commands import run_command
from w2s.guide.ranges import at_least
from w2s.train.recipes import parse_recipe


@dataclass
class PretrainArguments:
    """The model to build (an HF architecture, from scratch) and the corpus to train it on."""

    architecture: str = field(default="llama", metadata={"help": "HF model type: llama, gpt2, qwen2, ..."})
    tokenizer_family: str = field(default="a", metadata={"help": "tiny-world tokenizer: a or b"})
    hidden_size: int = field(default=128, metadata=at_least(1))
    num_layers: int = field(default=4, metadata=at_least(1))
    num_heads: int = field(default=4, metadata=at_least(1))
    intermediate_size: int = field(default=512, metadata=at_least(1))
    max_position_embeddings: int = field(default=128, metadata=at_least(1))
    tie_word_embeddings: bool = field(
        default=True, metadata={"help": "share the input and output embeddings (false: two matrices)"}
    )
    corpus_size: int = field(
        default=20000, metadata={"help": "reviews drawn from the world's pretrain split", **at_least(1)}
    )
    eval_size: int = field(default=256, metadata={"help": "held-out reviews (test split) for eval loss", **at_least(1)})


def build_model(args: PretrainArguments, tokenizer):
    """A freshly initialised model of `args.architecture` sized by `args`."""
    config = AutoConfig.for_model(
        args.architecture,
        vocab_size=len(tokenizer),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        max_position_embeddings=args.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=args.tie_word_embeddings,
    )
    # each architecture names its feed-forward width differently
    for name in ("intermediate_size", "n_inner", "ffn_dim"):
        if hasattr(config, name):
            setattr(config, name, args.intermediate_size)
            break
    return AutoModelForCausalLM.from_config(config)


def conversations(split: str, n: int) -> Dataset:
    """Reviews as user (opening) / assistant (continuation) conversations."""
    rows = [
        {"messages": [{"role": "user", "content": r.prompt}, {"role": "assistant", "content": r.response}]}
        for r in world_corpus(split, n)
    ]
    return Dataset.from_list(rows)


def main(script_args: PretrainArguments, training_args: SFTConfig) -> None:
    set_seed(training_args.seed)
    tokenizer = AutoTokenizer.from_pretrained(world_tokenizer_path(script_args.tokenizer_family))
    model = build_model(script_args, tokenizer)
    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=conversations("pretrain", script_args.corpus_size),
        eval_dataset=conversations("test", script_args.eval_size) if script_args.eval_size else None,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(training_args.output_dir)
    tokenizer.save_pretrained(training_args.output_dir)


def parse(args: list[str] | None = None) -> tuple[PretrainArguments, SFTConfig]:
    """The arguments from `--config` (read like every recipe: train/recipes.py) and flags; a bad key or flag is a
    RecipeError naming it (`--help` exits 0)."""
    return parse_recipe((PretrainArguments, SFTConfig), args)


if __name__ == "__main__":  # a mistake in the recipe or a flag: one line, exit 2 (guide/commands.py)
    sys.exit(run_command("pretrain.py", lambda argv: main(*parse(argv)), sys.argv[1:]))
