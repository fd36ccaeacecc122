"""`generate(config, prompts)`: build the models a guide recipe names and decode with its decoder."""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
from collections.abc import Iterable

from tqdm.auto import tqdm

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.context import DecodeContext
from w2s.guide.decoders import Decoder
from w2s.guide.engine import Engine
from w2s.guide.models import default_device, load_model, load_tokenizer
from w2s.guide.pair import GuidePair
from w2s.guide.roles import ROLES, resolve
from w2s.guide.served import served_engine
from w2s.guide.stopping import StopRule
from w2s.guide.streams import Prompt, SamplingParams, item_keys
from w2s.guide.types import Generation

logger = logging.getLogger(__name__)


class Guide:
    """Everything a recipe names, loaded once: the strong model's `engine` (in this process, or on a server:
    strong_backend openai, guide/served.py) and, by role, the models its
    decoder needs (`models`: "pairs", "pilot", "reward_model"; guide/roles.py). `decode` runs a decoder on a
    batch through a `DecodeContext` (guide/context.py), the only surface a decoder sees."""

    def __init__(self, config: GuideConfig, decoder: Decoder | None = None):
        self.config = c = config
        self.decoder = decoder or c.make_decoder()
        self.load = dict(dtype=c.dtype, device=default_device(c.device), trust_remote_code=c.trust_remote_code)
        self.engine = served_engine(c, self.decoder) if c.strong_backend == "openai" else self._local_engine()
        self.models: dict[str, object] = {}  # by role
        self.require(self.decoder)

    def _local_engine(self) -> Engine:
        """The strong model in this process (strong_backend hf)."""
        c = self.config
        placement = dict(device_map=c.device_map, max_memory=c.max_memory, offload_folder=c.offload_folder)
        strong = load_model(c.strong_model, **self.load, **placement)
        tokenizer = load_tokenizer(
            c.strong_model,
            trust_remote_code=c.trust_remote_code,
            prompt_format=c.strong_prompt_format,
            format_key="strong_prompt_format",
        )
        sampling = SamplingParams(c.temperature, c.top_k, c.top_p, c.seed)
        stop = StopRule.for_model(strong, tokenizer, c.max_new_tokens, c.stop)
        return Engine(strong, tokenizer, sampling, stop, share_prefixes=c.share_prefixes)

    @classmethod
    def from_models(
        cls,
        engine: Engine,
        *,
        pairs: Iterable[GuidePair] = (),
        pilot=None,
        reward_model=None,
        config: GuideConfig | None = None,
        decoder: Decoder | None = None,
    ) -> Guide:
        """A guide over models already in memory (benchmarks, notebooks); `decoder` (else `config`'s) decodes. A
        given reward model ranks best-of-N (the `scorer` role); a role given nothing loads as the config says."""
        guide = cls.__new__(cls)
        guide.config = c = config or GuideConfig()
        if reward_model is not None and not c.reward_model:
            guide.config = c = dataclasses.replace(c, reward_model=str(reward_model.model.name_or_path))
        guide.decoder = decoder or c.make_decoder()
        guide.load = dict(dtype=c.dtype, device=default_device(c.device), trust_remote_code=c.trust_remote_code)
        guide.engine = engine
        given = {"pairs": list(pairs), "pilot": pilot, "reward_model": reward_model}
        guide.models = {role: model for role, model in given.items() if model}  # nothing more to load
        return guide

    def with_config(self, config: GuideConfig) -> Guide:
        """The same loaded models and decoder, sampling with `config`'s shared settings (seed, temperature, top_k,
        top_p, max_new_tokens, stop): what `w2s serve` decodes a batch of requests with (guide/serve.py). Its
        outputs are those of a `Guide(config)`; `config` differs from this guide's in those keys only."""
        c = config
        guide = copy.copy(self)
        guide.config = c
        stop = dataclasses.replace(self.engine.stop, max_new_tokens=c.max_new_tokens, stop_strings=tuple(c.stop))
        guide.engine = self.engine.with_settings(SamplingParams(c.temperature, c.top_k, c.top_p, c.seed), stop)
        return guide

    def require(self, decoder: Decoder) -> None:
        """Loads the models of the roles `decoder` needs, once each."""
        for role in resolve(decoder.needs, self.config, decoder.name):
            if role not in self.models:
                if ROLES[role].load is None:
                    raise GuideError(f"decoder {decoder.name}: model role {role!r} has nothing to load")
                self.models[role] = ROLES[role].load(self.config, self.load)

    @property
    def pairs(self) -> list[GuidePair]:
        return self.models.get("pairs") or []

    @property
    def pilot(self):
        """(model, tokenizer) of WSD's drafter, if loaded."""
        return self.models.get("pilot")

    @property
    def reward_model(self):
        return self.models.get("reward_model")

    def decode(
        self, prompts: list[Prompt], items: list[int] | None = None, *, decoder: Decoder | None = None
    ) -> list[Generation]:
        """One batch of prompts through `decoder` (default: the recipe's), timed and costed by its context.

        `items` are the prompts' random streams (`guide.streams.item_keys`), so an item samples the same
        whatever batch it is decoded in."""
        decoder = decoder or self.decoder
        self.require(decoder)
        items = list(items) if items is not None else item_keys(prompts)
        # the context holds only the roles this decoder declared: CBS is never ranked by a loaded reward model
        roles = resolve(decoder.needs, self.config, decoder.name)
        ctx = DecodeContext(self.engine, {r: self.models[r] for r in roles}, prompts, items, decoder.name)
        start = time.perf_counter()
        outputs = decoder.run(ctx)
        return ctx.generations(outputs, time.perf_counter() - start)

    def generate(
        self, prompts: list[Prompt], *, progress: bool = True, decoder: Decoder | None = None
    ) -> list[Generation]:
        """Every prompt, `batch_size` at a time; the outputs do not depend on `batch_size`."""
        if not prompts:
            raise GuideError("no prompts to generate from")
        decoder = decoder or self.decoder
        items = item_keys(prompts)  # over the whole call: a prompt repeated in two batches draws two streams
        out: list[Generation] = []
        size = self.config.batch_size
        for start in tqdm(range(0, len(prompts), size), desc=f"generate ({decoder.name})", disable=not progress):
            out += self.decode(prompts[start : start + size], items[start : start + size], decoder=decoder)
        return out


def generate(config: GuideConfig | dict, prompts: list[str], *, progress: bool = True) -> list[Generation]:
    """Decodes `prompts` as the guide recipe `config` says (a `GuideConfig` or its dict)."""
    if isinstance(config, dict):
        config = GuideConfig.from_dict(dict(config))
    return Guide(config).generate(prompts, progress=progress)
