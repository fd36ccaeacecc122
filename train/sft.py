"""Supervised fine-tuning of a guide model with TRL's SFTTrainer, from a recipe.

    # the tiny world's guide, SFT step (a few seconds on a laptop CPU)
    python train/sft.py --config recipes/tiny/sft.yaml --output_dir out/tiny-sft
    # the same with accelerate, LoRA, and a flag overriding the recipe
    accelerate launch --config_file recipes/accelerate_configs/single_device.yaml train/sft.py \\
        --config recipes/tiny/sft.yaml --output_dir out/tiny-sft-lora --use_peft --lora_r 8 --merge_adapter
    # sequence-level distillation: SFT on a teacher's outputs (prompt/completion rows)
    python train/sft.py --config recipes/tiny/distill_sequence.yaml --output_dir out/tiny-seqdistill
    # ... on weak-to-strong search's outputs, as w2s generate writes them (AlpacaEval JSON: instruction, output)
    w2s generate --config recipes/tiny/guide.yaml --output cbs.json
    python train/sft.py --config recipes/tiny/distill_sequence.yaml --dataset_name cbs.json --output_dir out/tiny-cbs-sft
    # ... on a w2s data build folder (its sft set: each prompt's best judged response)
    python train/sft.py --config recipes/tiny/distill_sequence.yaml --dataset_name out/tiny-data --output_dir out/x
"""

from __future__ import annotations

import sys

from transformers import set_seed
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config, get_quantization_config

from w2s.train.data import SFT_COLUMNS, TrainScriptArguments, check_chat_template, load_checked_data
from w2s.train.run import check_model, run, train_and_save

DATACLASSES = (TrainScriptArguments, SFTConfig, ModelConfig)


def model_init_kwargs(training_args, model_args: ModelConfig) -> dict:
    """How the trainer loads the model: revision, dtype, attention, remote code (off unless asked)."""
    kwargs = dict(
        revision=model_args.model_revision,
        trust_remote_code=training_args.trust_remote_code,
        attn_implementation=model_args.attn_implementation,
        dtype=model_args.dtype,
        quantization_config=get_quantization_config(model_args),
        use_safetensors=True,
    )
    return {k: v for k, v in kwargs.items() if v is not None} | (training_args.model_init_kwargs or {})


def main(script_args: TrainScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    model = check_model(model_args.model_name_or_path)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    train, evaluation = load_checked_data(script_args, SFT_COLUMNS, "SFT", seed=training_args.seed)
    check_chat_template(model, train, trust_remote_code=training_args.trust_remote_code)

    trainer = SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, "sft", script_args, training_args, model_args)


def cli(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`w2s train sft` and `accelerate launch train/sft.py`: the recipe and flags, then `main`."""
    return run(main, DATACLASSES, argv, prog)


if __name__ == "__main__":
    sys.exit(cli())
