"""Checks before any work: every model a recipe names, from its tokenizer and config alone (no weights).

A model must be a folder with `config.json` and safetensors weights (or a hub id), need no custom code
unless `trust_remote_code` is set, render prompts in its prompt format, and hold every prompt within its
context; logit arithmetic needs one vocabulary. `w2s generate`, `w2s eval` and `w2s data build` call these
before they load, train or generate anything, so a mistake costs seconds, not a run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.context import check_shared_vocabulary
from w2s.guide.models import ModelNotFoundError, chat_prompt, load_tokenizer, resolve_model_path
from w2s.guide.roles import ROLES, ModelSpec, resolve
from w2s.guide.served import check_backend, connect

logger = logging.getLogger(__name__)


def check_weights(path: str, role: str) -> None:
    """A local folder must hold config.json and safetensors weights (w2s never unpickles a checkpoint)."""
    folder = Path(path)
    if not folder.is_dir():
        return  # a hub id: the hub says when it loads
    if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
        raise ModelNotFoundError(f"{role} {path!r}: the folder has no config.json (is it an HF model folder?)")
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
        raise ModelNotFoundError(
            f"{role} {path!r}: no safetensors weights"
            + (
                f" (only pickle files: {', '.join(pickled)}; w2s does not unpickle checkpoints: convert them)"
                if pickled
                else ""
            )
        )


def check_code(path: str, role: str, trust_remote_code: bool) -> int | None:
    """Refuses a model that needs its own code unless trusted; says when a custom class is ignored. Returns
    the model's context length (its config's position limit), if it has one."""
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except ValueError as e:  # transformers: the model needs code it may not run
        raise GuideError(
            f"{role} {path!r} needs its own code to load: set trust_remote_code: true if you trust it ({e})"
        ) from None
    except OSError as e:
        raise ModelNotFoundError(f"{role} {path!r}: cannot read its config ({e})") from None
    if getattr(config, "auto_map", None) and not trust_remote_code and config.model_type in CONFIG_MAPPING:
        logger.warning(
            "%s %r names custom code (auto_map) but is a built-in %s: loading transformers' own class "
            "(trust_remote_code is off)",
            role,
            path,
            config.model_type,
        )
    for key in ("max_position_embeddings", "n_positions"):
        if getattr(config, key, None):
            return int(getattr(config, key))
    return None


@dataclass
class PromptFit:
    """What a prompt is checked against in one model: its tokenizer (in the model's prompt format) and its
    context (None: its config names none)."""

    spec: ModelSpec
    tokenizer: object
    limit: int | None

    def check(self, prompt, number: int = 1) -> int:
        """The prompt's tokens in this model's prompt format; an error naming the prompt if it is empty or does
        not fit the context."""
        if isinstance(prompt, str) and not prompt.strip():
            raise GuideError(f"prompt {number} is empty")
        tok, spec = self.tokenizer, self.spec
        n = len(tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids)
        if self.limit is not None and n >= self.limit:
            raise GuideError(
                f"prompt {number} is {n} tokens in {spec.role} {spec.name!r}'s prompt format, past its context "
                f"of {self.limit}: shorten it or use a model with a longer context"
            )
        return n


def model_fit(spec: ModelSpec, *, trust_remote_code: bool = False) -> PromptFit:
    """A model of a recipe checked for weights, code and prompt format, with what its prompts must fit."""
    path = resolve_model_path(spec.name)
    check_weights(path, spec.role)
    limit = check_code(path, spec.role, trust_remote_code)
    tok = load_tokenizer(
        path, trust_remote_code=trust_remote_code, prompt_format=spec.prompt_format, format_key=spec.format_key
    )
    return PromptFit(spec, tok, limit)


def check_models(specs: list[ModelSpec], prompts: list[str], *, trust_remote_code: bool = False, shared_vocab=()):
    """Every model of `specs`: weights, code, prompt format and context (see the module docstring). Models in
    `shared_vocab` (roles) must have one vocabulary. Returns the tokenizers by role."""
    tokenizers = {}
    for spec in specs:
        fit = model_fit(spec, trust_remote_code=trust_remote_code)
        for number, prompt in enumerate(prompts, 1):
            fit.check(prompt, number)
        tokenizers[fit.spec.role] = fit.tokenizer
    if len([r for r in shared_vocab if r in tokenizers]) > 1:
        check_shared_vocabulary({role: tokenizers[role] for role in shared_vocab if role in tokenizers})
    return tokenizers


def check_served(config: GuideConfig, decoder, prompts: list) -> None:
    """A served strong model (strong_backend openai): the decoder needs no logit arithmetic, and the server
    passes `check_server`."""
    check_backend(config, decoder)
    c = config
    check_server(
        c.strong_model, c.strong_tokenizer or c.strong_model, prompts, base_url_env=c.strong_base_url_env,
        api_key_env=c.strong_api_key_env, prompt_format=c.strong_prompt_format, format_key="strong_prompt_format",
        what="strong_tokenizer", trust_remote_code=c.trust_remote_code,
    )  # fmt: skip


def check_server(
    model: str,
    tokenizer: str,
    prompts: list,
    *,
    base_url_env: str,
    api_key_env: str,
    prompt_format: str = "chat",
    format_key: str = "prompt_format",
    what: str = "tokenizer",
    trust_remote_code: bool = False,
) -> None:
    """A served model: the server is up, serves `model` and takes token ids (`served.connect`), and every
    prompt fits its context in `tokenizer`'s prompt format."""
    server = connect(base_url_env, api_key_env, model)
    tok = load_tokenizer(
        tokenizer, trust_remote_code=trust_remote_code, prompt_format=prompt_format, format_key=format_key
    )
    for number, prompt in enumerate(prompts, 1):
        if isinstance(prompt, str) and not prompt.strip():
            raise GuideError(f"prompt {number} is empty")
        n = len(tok(chat_prompt(tok, prompt), add_special_tokens=False).input_ids)
        if server.context is not None and n >= server.context:
            raise GuideError(
                f"prompt {number} is {n} tokens in {what} {tokenizer!r}'s prompt format, past the served "
                f"model's context of {server.context}: shorten it or serve the model with a longer context"
            )


def guide_specs(config: GuideConfig) -> tuple[list[ModelSpec], tuple]:
    """The local models a guide recipe's decoder will load (the roles it declares; the strong model unless it is
    served), and the roles that must share one vocabulary."""
    c = config
    decoder = c.make_decoder()
    specs = []
    if c.strong_backend != "openai":
        specs = [ModelSpec(c.strong_model, "strong_model", c.strong_prompt_format, "strong_prompt_format")]
    for role in resolve(decoder.needs, c, decoder.name):
        specs += ROLES[role].specs(c)
    shared = tuple(s.role for s in specs if s.role != "adapter") if decoder.shared_vocabulary else ()
    return specs, shared


def check_guide(config: GuideConfig, prompts: list[str]) -> None:
    """Every model a guide recipe's decoder will load (the roles it declares), checked against `prompts`
    (see `check_models`); one vocabulary across them where the decoder needs it."""
    c = config
    if c.strong_backend == "openai":  # the server is asked, once; its tokenizer is read here
        check_served(c, c.make_decoder(), prompts)
    specs, shared = guide_specs(c)
    check_models(specs, prompts, trust_remote_code=c.trust_remote_code, shared_vocab=shared)


def prompt_fits(config: GuideConfig) -> list[PromptFit]:
    """What each prompt of a guide recipe must fit, model by model (`w2s serve` checks each request so)."""
    specs, _ = guide_specs(config)
    return [model_fit(spec, trust_remote_code=config.trust_remote_code) for spec in specs]
