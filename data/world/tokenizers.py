"""The tiny world's two tokenizers, trained locally with `tokenizers`.

Family A (Llama-like models): byte-level BPE, role markers as special tokens.
Family B (GPT-2-like models): Metaspace BPE with a smaller vocabulary and a
ChatML-style template, so the two families never share a vocabulary and
cross-vocabulary guidance is always exercised. Both are saved as HF fast
tokenizers with a chat template: the tiny world's instruction format is "user
gives a review's opening, assistant continues it".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from w2s.data.world.cache import build_once, cache_root, content_key
from w2s.data.world.grammar import world_corpus


@dataclass(frozen=True)
class TokenizerFamily:
    name: str
    vocab_size: int
    special_tokens: dict[str, str]  # role in HF ("bos_token", ...) -> token
    extra_special: tuple[str, ...]
    chat_template: str


FAMILY_A = TokenizerFamily(
    name="a",
    vocab_size=512,
    special_tokens={"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"},
    extra_special=("<|user|>", "<|assistant|>"),
    chat_template=(
        "{{ bos_token }}{% for m in messages %}"
        "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}"
        "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
        "{% else %}{{ raise_exception('the tiny world knows only user and assistant roles') }}{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
    ),
)
FAMILY_B = TokenizerFamily(
    name="b",
    vocab_size=200,
    special_tokens={"bos_token": "<|endoftext|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
    extra_special=("<|im_start|>",),
    chat_template=(
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>"
        "{% if not loop.last %}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}\n<|im_start|>assistant\n{% endif %}"
    ),
)
FAMILIES = {f.name: f for f in (FAMILY_A, FAMILY_B)}


def train_tokenizer(family: TokenizerFamily, texts: Iterable[str]) -> PreTrainedTokenizerFast:
    """Trains the family's tokenizer on `texts` and wraps it as an HF fast tokenizer."""
    specials = list(dict.fromkeys([*family.special_tokens.values(), *family.extra_special]))
    if family is FAMILY_A:
        tok = Tokenizer(models.BPE(unk_token=family.special_tokens["unk_token"]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split("\n", behavior="isolated"), pre_tokenizers.Metaspace(prepend_scheme="first")]
        )
        tok.decoder = decoders.Metaspace(prepend_scheme="first")
        alphabet = []
    trainer = trainers.BpeTrainer(
        vocab_size=family.vocab_size, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    # the template's own words are part of the language the tokenizer must cover
    tok.train_from_iterator([*texts, "user\nassistant\n"], trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        **family.special_tokens,
        additional_special_tokens=list(family.extra_special),
        chat_template=family.chat_template,
        model_max_length=512,
        padding_side="left",  # decoder-only models pad on the left for generation
    )
    return hf


TOKENIZER_CORPUS_SIZE = 5000


def world_tokenizer_path(family: str) -> Path:
    """The folder of the tiny world's tokenizer of `family` ("a" or "b"), trained on first use."""
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny-world tokenizer family {family!r}: choose one of {sorted(FAMILIES)}")
    spec = FAMILIES[family]
    path = (
        cache_root()
        / "tiny-world"
        / f"tokenizer-{family}-{content_key(repr(spec), str(TOKENIZER_CORPUS_SIZE), seeded=False)}"
    )

    def build(tmp: Path) -> None:
        texts = [r.text for r in world_corpus("pretrain", TOKENIZER_CORPUS_SIZE)]
        train_tokenizer(spec, texts).save_pretrained(tmp)

    return build_once(path, build)
