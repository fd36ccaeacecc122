"""Loading causal LMs and their tokenizers: the one loader every stage uses.

Models come from a local folder or a hub id, with safetensors weights only and
`trust_remote_code` off unless the caller asks for it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from w2s.guide.commands import GuideError, UserError
from w2s.guide.formats import check_prompt_format, format_template
from w2s.guide.sources import resolve_model

logger = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model was neither a local folder nor reachable on the hub."""


def resolve_model_path(spec: str | Path) -> str:
    """A model folder or hub id; `tiny:<name>` names a tiny-world model, built on first use (the resolver of
    a `<prefix>:` is registered by the layer that owns it: see guide/sources.py)."""
    return resolve_model(str(spec))


def _check_source(name_or_path: str) -> None:
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local:
        if not path.is_dir():
            raise ModelNotFoundError(
                f"model {name_or_path!r}: no such local folder (looked for it on disk, not on the hub)"
            )
        if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():
            raise ModelNotFoundError(
                f"model {name_or_path!r}: the local folder has no config.json (is it an HF model folder?)"
            )


def load_tokenizer(
    name_or_path: str,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    prompt_format: str = "chat",
    format_key: str = "prompt_format",
):
    """The tokenizer of a model, padding on the left (decoder-only generation) with a pad token set, and
    rendering prompts in `prompt_format` (see `set_prompt_format`; `format_key` names the setting in errors)."""
    name_or_path = resolve_model_path(name_or_path)
    _check_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, revision=revision)
    except OSError as e:
        raise ModelNotFoundError(
            f"tokenizer {name_or_path!r}: not a local folder, and the hub did not serve it ({e.__class__.__name__}: {e})"
        ) from e
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return set_prompt_format(tok, prompt_format, format_key)


def set_prompt_format(tokenizer: PreTrainedTokenizerBase, prompt_format: str = "chat", key: str = "prompt_format"):
    """Makes the tokenizer render prompts in `prompt_format` (chat, raw or a template string: guide/formats.py);
    every stage renders through `chat_prompt`. `key` names the setting in errors."""
    check_prompt_format(prompt_format, key)
    if prompt_format == "chat":
        if tokenizer.chat_template is None:
            tokenizer.w2s_format_key = key  # named by chat_prompt's error
        return tokenizer
    tokenizer.chat_template = format_template(prompt_format, tokenizer.bos_token if _adds_bos(tokenizer) else "")
    tokenizer.w2s_prompt_format = prompt_format
    return tokenizer


def _adds_bos(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Whether the tokenizer starts plain text with its BOS token (Llama-style; GPT-2's does not)."""
    if tokenizer.bos_token_id is None:
        return False
    ids = tokenizer("a").input_ids
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def default_device(device: str | None) -> str | None:
    """This process's device: the recipe's, where `cuda` (or nothing, on a machine with a GPU) means this
    process's GPU under `accelerate launch` (cuda:LOCAL_RANK), so the ranks of one node each take their own."""
    if device not in (None, "cuda") or not torch.cuda.is_available():
        return device
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"


def load_model(
    name_or_path: str,
    *,
    dtype: str = "auto",
    device: str | torch.device | None = None,
    device_map: str | dict | None = None,
    max_memory: dict | None = None,
    offload_folder: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    revision: str | None = None,
) -> PreTrainedModel:
    """A causal LM in eval mode, from a local folder, a hub id or `tiny:<name>` (safetensors weights only).

    `device_map` ("auto", "balanced", ... or a dict) spreads the layers over the devices (accelerate's big-model
    inference: each layer runs where its weights are, `max_memory` caps each device, layers past every cap
    go to `offload_folder` on disk); without it, the model goes to `device`."""
    name_or_path = resolve_model_path(name_or_path)
    _check_source(name_or_path)
    if dtype not in DTYPES:
        raise GuideError(f"dtype {dtype!r}: choose one of {sorted(DTYPES)}")
    placement = {}
    if device_map is not None:
        placement = dict(device_map=device_map, max_memory=max_memory, offload_folder=offload_folder)
    elif max_memory is not None or offload_folder is not None:
        raise GuideError("max_memory and offload_folder place the layers of a device_map: set device_map: auto too")
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            dtype=DTYPES[dtype],
            attn_implementation=attn_implementation,
            trust_remote_code=trust_remote_code,
            revision=revision,
            use_safetensors=True,
            **placement,
        )
    except OSError as e:
        raise ModelNotFoundError(
            f"model {name_or_path!r}: not a local folder, and the hub did not serve it "
            f"with safetensors weights ({e.__class__.__name__}: {e})"
        ) from e
    except ValueError as e:
        if device_map is None:
            raise
        raise GuideError(f"model {name_or_path!r}: device_map {device_map!r}: {e}") from None
    if device is not None and device_map is None:
        model.to(device)
    return model.eval()


def input_device(model: PreTrainedModel) -> torch.device:
    """Where a model's inputs go: under a device map, the first module's device (accelerate's hooks carry
    each layer's inputs on to its own device, and the logits back); else its parameters' device."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map:
        first = next(iter(device_map.values()))
        return torch.device("cpu" if first in ("cpu", "disk") else first)
    return model.device


def load_model_and_tokenizer(
    name_or_path: str, *, prompt_format: str = "chat", format_key: str = "prompt_format", **kwargs
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Both halves of a model folder, the tokenizer in `prompt_format`; other keywords go to :func:`load_model`."""
    name_or_path = resolve_model_path(name_or_path)
    trust = kwargs.get("trust_remote_code", False)
    tokenizer = load_tokenizer(
        name_or_path, trust_remote_code=trust, prompt_format=prompt_format, format_key=format_key
    )
    return load_model(name_or_path, **kwargs), tokenizer


def chat_prompt(tokenizer: PreTrainedTokenizerBase, prompt: str | list[dict]) -> str:
    """`prompt` rendered in the model's prompt format (its chat template by default: `set_prompt_format`),
    ready for the assistant's reply."""
    if tokenizer.chat_template is None:
        key = getattr(tokenizer, "w2s_format_key", "prompt_format")
        raise GuideError(
            f"model {tokenizer.name_or_path!r} has no chat template: set `{key}: raw` to give it the prompt text "
            f'as it is, or a template string such as `{key}: "Question: {{prompt}}\\nAnswer:"`'
        )
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def render_prompts(tokenizer: PreTrainedTokenizerBase, prompts: list) -> tuple[list[str], list[list[int]]]:
    """Each prompt in the model's prompt format (`chat_prompt`), as text and as tokens: the one encoding of a
    prompt, shared by the engine's prefill and every score of a response (guide/scoring.py)."""
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    return texts, [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
