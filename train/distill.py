"""Token-level distillation of a guide model with TRL's DistillationTrainer, from a recipe.

The student writes completions to the data set's prompts (on-policy) and learns
to match the teacher's next-token distribution on them (generalised JSD; `beta`
0 is forward KL, 1 reverse KL). Teacher and student must share a vocabulary.
The prompts may come from any data set the recipe can read: a `prompt` column,
AlpacaEval outputs' `instruction`, or conversations (`messages`) up to their last
user turn. Sequence-level distillation, SFT on a teacher's outputs, is
`train/sft.py` on them (e.g. the JSON `w2s generate` writes from weak-to-strong search).

    # token-level: the weak base learns from the strong one (same tokenizer family)
    python train/distill.py --config recipes/tiny/distill.yaml --output_dir out/tiny-distill
    # token-level on the prompts of weak-to-strong search's outputs (AlpacaEval JSON: instruction, output)
    python train/distill.py --config recipes/tiny/distill.yaml --dataset_name cbs.json --output_dir out/tiny-distill
    # sequence-level: SFT on the strong base's samples
    python train/sft.py --config recipes/tiny/distill_sequence.yaml --output_dir out/tiny-seqdistill
"""

from __future__ import annotations

import sys

from transformers import AutoTokenizer, set_seed
from trl import DistillationConfig, DistillationTrainer, ModelConfig, get_peft_config

from w2s.guide.files import RecipeError
from w2s.train.data import DISTILL_COLUMNS, TrainScriptArguments, check_chat_template, load_checked_data
from w2s.train.run import check_model, run, train_and_save
from w2s.train.sft import model_init_kwargs

DATACLASSES = (TrainScriptArguments, DistillationConfig, ModelConfig)


def check_same_vocabulary(student: str, teacher: str, trust_remote_code: bool = False) -> None:
    """Raises a RecipeError unless both tokenizers map the same strings to the same ids."""
    s = AutoTokenizer.from_pretrained(student, trust_remote_code=trust_remote_code).get_vocab()
    t = AutoTokenizer.from_pretrained(teacher, trust_remote_code=trust_remote_code).get_vocab()
    if s != t:
        differ = len(set(s.items()) ^ set(t.items()))
        raise RecipeError(
            f"token-level distillation needs one vocabulary, but student {student!r} ({len(s)} tokens) and teacher "
            f"{teacher!r} ({len(t)} tokens) differ in {differ} token/id entries: pick a teacher of the student's "
            "tokenizer family, or distil at the sequence level (train/sft.py on the teacher's outputs)"
        )


def main(script_args: TrainScriptArguments, training_args: DistillationConfig, model_args: ModelConfig) -> None:
    set_seed(training_args.seed)
    if training_args.teacher_model_name_or_path is None:
        raise RecipeError("distillation needs a teacher: set 'teacher_model_name_or_path' in the recipe")
    student = check_model(model_args.model_name_or_path)
    teacher = check_model(training_args.teacher_model_name_or_path, "teacher_model_name_or_path")
    check_same_vocabulary(student, teacher, training_args.trust_remote_code)
    training_args.model_init_kwargs = model_init_kwargs(training_args, model_args)
    training_args.teacher_model_init_kwargs = {"dtype": model_args.dtype or "auto", "use_safetensors": True} | (
        training_args.teacher_model_init_kwargs or {}
    )
    train, evaluation = load_checked_data(script_args, DISTILL_COLUMNS, "distillation", seed=training_args.seed)
    check_chat_template(student, train, trust_remote_code=training_args.trust_remote_code)
    check_chat_template(teacher, train, "teacher_model_name_or_path", training_args.trust_remote_code)

    trainer = DistillationTrainer(
        model=student,
        teacher_model=teacher,
        args=training_args,
        train_dataset=train,
        eval_dataset=evaluation if training_args.eval_strategy != "no" else None,
        peft_config=get_peft_config(model_args),
    )
    train_and_save(trainer, "distill", script_args, training_args, model_args, evaluate=False)


def cli(argv: list[str] | None = None, prog: str | None = None) -> int:
    """`w2s train distill` and `accelerate launch train/distill.py`: the recipe and flags, then `main`."""
    return run(main, DATACLASSES, argv, prog)


if __name__ == "__main__":
    sys.exit(cli())
