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
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository's stage packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transformers import set_seed
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from train.cards import save_run
from train.data import DPO_COLUMNS, TrainScriptArguments, check_columns, load_training_data
from train.recipes import check_model, resume_checkpoint, run
from train.sft import model_init_kwargs

DATACLASSES = (TrainScriptArguments, DPOConfig, ModelConfig)


def main(script_args: TrainScriptArguments, training_args: DPOConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    model = check_model(model_args.model_name_or_path)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    train, evaluation = load_training_data(script_args, seed=training_args.seed)
    for split, data in (("train", train), ("eval", evaluation)):
        if data is not None:
            check_columns(data, DPO_COLUMNS, f"DPO {split} data")

    trainer = DPOTrainer(
        model=model,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args),
    )
    trainer.train(
        resume_from_checkpoint=resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
    )
    if trainer.eval_dataset is not None:
        trainer.evaluate()
    data = script_args.dataset_name or ", ".join(d.path for d in script_args.datasets)
    save_run(trainer, stage="dpo", base_model=model_args.model_name_or_path, data=data,
             args=(script_args, training_args, model_args), merge=script_args.merge_adapter)  # fmt: skip
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    sys.exit(run(main, DATACLASSES))
