"""Direct preference optimisation of a guide model with TRL's DPOTrainer, from a recipe.

The tuned model and its untuned twin (the reference model, `model_name_or_path`)
form the guide pair that `guide/` scores with.

    # the tiny world's guide, DPO step on gold-judged pairs (starts from the SFT step's output)
    python train/sft.py --config recipes/tiny/sft.yaml --output_dir out/tiny-sft
    python train/dpo.py --config recipes/tiny/dpo.yaml --model_name_or_path out/tiny-sft --output_dir out/tiny-dpo
    # LoRA: the adapter is the guide, adapter off is its untuned twin
    accelerate launch --config_file recipes/accelerate_configs/single_device.yaml train/dpo.py \\
        --config recipes/tiny/dpo.yaml --output_dir out/tiny-dpo-lora --use_peft --lora_r 8 --learning_rate 1e-2
    # several GPUs with DeepSpeed ZeRO-3
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml train/dpo.py \\
        --config recipes/llama-3.2-3b-pilot/dpo.yaml
"""

from __future__ import annotations

import sys

from transformers import set_seed
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from w2s.train.data import DPO_COLUMNS, TrainScriptArguments, check_chat_template, check_pairs, load_checked_data
from w2s.train.run import check_model, run, train_and_save
from w2s.train.sft import model_init_kwargs

DATACLASSES = (TrainScriptArguments, DPOConfig, ModelConfig)


def main(script_args: TrainScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    model = check_model(model_args.model_name_or_path)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    train, evaluation = load_checked_data(script_args, DPO_COLUMNS, "DPO", seed=training_args.seed)
    check_pairs(train, f"DPO train data ({script_args.dataset_name or 'the datasets mixture'})")
    check_chat_template(model, train, trust_remote_code=training_args.trust_remote_code)

    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, "dpo", script_args, training_args, model_args)


def cli(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`w2s train dpo` and `accelerate launch train/dpo.py`: the recipe and flags, then `main`."""
    return run(main, DATACLASSES, argv, prog)


if __name__ == "__main__":
    sys.exit(cli())
