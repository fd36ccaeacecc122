"""A guide recipe (`recipes/<family>/guide.yaml`): models, decoder and its hyper-parameters, sampling, I/O.

Recipes are flat YAML; every key is a field of `GuideConfig` or a hyper-parameter of a registered decoder
(`guide/decoders.py`), unknown keys are an error naming the file and the key; `--key value` flags override
the file. The decoder checks its own hyper-parameters when the config is made.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from w2s.guide.commands import GuideError
from w2s.guide.decoders import Decoder, decoder_class, option_keys, reserve_keys
from w2s.guide.files import did_you_mean, read_recipe
from w2s.guide.formats import check_prompt_format
from w2s.guide.ranges import any_number, at_least, between, check_ranges


@dataclass
class GuideConfig:
    # models: folders, hub ids or tiny:<name>
    strong_model: str = "tiny:strong"
    tuned: str | None = None  # guide pair: tuned model ...
    untuned: str | None = None  # ... and its untuned twin
    adapter: str | None = None  # or one PEFT adapter: tuned = adapter on, untuned = adapter off
    extra_guides: list[dict] = field(default_factory=list)  # more pairs: [{tuned, untuned | adapter, weight}]
    guide_weight: float = field(default=1.0, metadata=any_number())  # a negative weight steers away
    pilot: str | None = None  # wsd: the small aligned drafter
    reward_model: str | None = None  # bon: rank by a reward model instead of a guide pair
    # how each model reads a prompt: chat (its chat template), raw (the text as it is) or a template string
    # holding {prompt}, e.g. "Question: {prompt}\nAnswer:" (guide/models.py: set_prompt_format)
    strong_prompt_format: str = "chat"
    guide_prompt_format: str = "chat"  # tuned, untuned, adapter (extra_guides entries take `prompt_format`)
    pilot_prompt_format: str = "chat"
    reward_model_prompt_format: str = "chat"
    dtype: str = "float32"
    device: str | None = None  # every model's device (default: this process's GPU, else the CPU)
    # the strong model over several devices (accelerate's big-model inference): device_map auto, each device's
    # cap (e.g. {0: 70GiB, 1: 70GiB}), a folder for the layers past every cap; the other models go to `device`
    device_map: str | dict | None = None
    max_memory: dict | None = None
    offload_folder: str | None = None
    trust_remote_code: bool = False
    # the strong model on a server (guide/served.py): strong_backend openai asks an OpenAI-compatible
    # /v1/completions server (vLLM) for the model it serves as `strong_model`; `strong_tokenizer` (a folder or
    # hub id, default strong_model) renders prompts here, which travel as token ids; the server's base URL and
    # key come from the environment variables named here (the key is never logged or written)
    strong_backend: str = "hf"  # hf (in-process, transformers) or openai
    strong_tokenizer: str | None = None
    strong_base_url_env: str = "W2S_STRONG_BASE_URL"
    strong_api_key_env: str = "W2S_STRONG_API_KEY"
    strong_concurrency: int = field(
        default=32, metadata=at_least(1)
    )  # requests in flight at once (the server batches them)

    # decoder: sample, bon, cbs, wsd, eft, fusion, or one registered (guide/decoders.py); its own keys (width,
    # num_samples, threshold, ...) are its dataclass fields, flat in the recipe beside these
    decoder: str = "sample"

    # sampling
    max_new_tokens: int = field(default=64, metadata=at_least(1))
    temperature: float = field(default=0.7, metadata=at_least(0))  # 0: greedy (sample only: guide/decoders.py)
    top_k: int = field(default=50, metadata=at_least(0))  # 0: the whole vocabulary
    top_p: float = field(default=1.0, metadata=between(0, 1, low_open=True))
    seed: int = field(default=0, metadata=any_number())
    stop: list[str] = field(default_factory=list)
    batch_size: int = field(default=8, metadata=at_least(1))  # prompts decoded together
    share_prefixes: bool = True  # rows copied from one row read their common prefix once (guide/kv.py)

    # input / output (w2s generate)
    prompts: str = "tiny:test"  # tiny:<split>, or an AlpacaEval JSON/JSONL file (field `instruction`)
    num_prompts: int | None = field(default=None, metadata=at_least(1))  # the first N (None: all)
    output: str | None = None  # AlpacaEval-format JSON written here
    generator: str | None = None  # the `generator` name in the output (default: the decoder)

    # the registered decoders' own keys the recipe sets (flat in the recipe, collected here)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        for key in ("strong_prompt_format", "guide_prompt_format", "pilot_prompt_format", "reward_model_prompt_format"):
            check_prompt_format(getattr(self, key), key)
        if self.strong_backend not in ("hf", "openai"):
            raise ValueError(f"strong_backend {self.strong_backend!r}: choose hf or openai")
        check_ranges(self)
        decoder = self.make_decoder()  # an unknown name lists the registered ones; the decoder checks its own settings
        if self.temperature == 0 and decoder.draws() > 1:
            raise GuideError(
                f"temperature 0 with decoder {self.decoder}: its {decoder.draws()} samples per prompt would all be "
                "the greedy response (greedy decoding at that many times its cost); set temperature > 0, or use "
                "decoder sample for greedy decoding"
            )

    def make_decoder(self) -> Decoder:
        """The recipe's decoder with its hyper-parameters (its defaults where the recipe is silent)."""
        cls = decoder_class(self.decoder)
        try:
            return cls.from_options(self.options)
        except ValueError as e:
            raise GuideError(f"decoder {self.decoder}: {e}") from None

    @classmethod
    def from_dict(cls, values: dict, source: str = "config") -> GuideConfig:
        """A config from a mapping; unknown keys, wrong types and bad settings are errors naming `source`."""
        fields = {f.name: f.type for f in dataclasses.fields(cls)}
        if isinstance(values.get("decoder"), str):  # an unknown decoder first: its keys would be unknown too
            try:
                decoder_class(values["decoder"])
            except ValueError as e:
                raise GuideError(f"{source}: {e}") from None
        options = option_keys()  # registered decoders' own keys
        kwargs, collected = {}, {}
        for key, value in values.items():
            if key in fields:
                kwargs[key] = _coerce(value, fields[key], f"{source}: key {key!r}")
            elif key in options:
                collected[key] = _coerce(value, options[key], f"{source}: key {key!r}")
            else:
                raise GuideError(f"{source}: unknown key {key!r}{did_you_mean(key, [*fields, *options])}")
        kwargs["options"] = {**(kwargs.get("options") or {}), **collected}
        try:
            return cls(**kwargs)
        except ValueError as e:
            raise GuideError(f"{source}: {e}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: list[str] = ()) -> GuideConfig:
        """A config from a recipe file, then `--key value` overrides (a bad override is named as its flag)."""
        return cls.with_flags(read_recipe(path), overrides, source=str(path))

    @classmethod
    def with_flags(cls, values: dict, overrides: list[str] = (), source: str = "config") -> GuideConfig:
        """A config from a mapping (a recipe read from `source`), then `--key value` overrides."""
        flags, known = _parse_flags(list(overrides)), recipe_keys()
        for key, value in flags.items():
            if key not in known:
                raise GuideError(f"unknown flag --{key}{did_you_mean(key, known)}")
            _coerce(value, known[key], f"--{key}")
        values = {**values, **flags}
        return cls.from_dict(values, source=source)


reserve_keys({f.name for f in dataclasses.fields(GuideConfig)})  # no decoder field may shadow one


# keys that do not change an output (each item samples from its own stream, whatever batch it is in):
# a killed run may resume with other values
NOT_IN_OUTPUTS = frozenset(
    {"batch_size", "share_prefixes", "output", "generator", "prompts", "num_prompts", "device_map", "max_memory",
     "offload_folder", "strong_base_url_env", "strong_api_key_env", "strong_concurrency"}
)  # fmt: skip


def outputs_recipe(config: dict) -> dict:
    """The keys of a guide recipe (as a dict) that decide its outputs."""
    return {k: v for k, v in config.items() if k not in NOT_IN_OUTPUTS}


def recipe_keys() -> dict[str, typing.Any]:
    """Every key a guide recipe may hold, with its type: `GuideConfig`'s fields and registered decoders' own keys."""
    fields = {f.name: f.type for f in dataclasses.fields(GuideConfig)}
    return {**fields, **option_keys()}


def _parse_flags(argv: list[str]) -> dict:
    out = {}
    while argv:
        flag = argv.pop(0)
        if not flag.startswith("--") or not argv:
            raise GuideError(f"expected '--key value' pairs, got {flag!r}")
        out[flag[2:].replace("-", "_")] = yaml.safe_load(argv.pop(0))
    return out


def _coerce(value, annotation, where: str):
    hint = eval(annotation, vars(typing)) if isinstance(annotation, str) else annotation
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for option in options:
        base = typing.get_origin(option) or option
        if base is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if (
            base in (int, str, bool, list, dict)
            and isinstance(value, base)
            and not (base is int and isinstance(value, bool))
        ):
            return value
    shown = annotation.__name__ if isinstance(annotation, type) else annotation
    raise GuideError(f"{where}: expected {shown}, got {value!r}")
