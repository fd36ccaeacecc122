"""`generate(config, prompts)`: build the models a guide recipe names and decode with its decoder."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from tqdm.auto import tqdm

from w2s.guide.commands import GuideError
from w2s.guide.config import GuideConfig
from w2s.guide.decoders import decoder_class
from w2s.guide.engine import Engine, Generation, SamplingParams, StopRule, item_keys
from w2s.guide.models import default_device, load_model, load_tokenizer
from w2s.guide.pair import GuidePair
from w2s.guide.reward import RewardModel
from w2s.guide.scorers import GuideScorer, RewardModelScorer

logger = logging.getLogger(__name__)


class Guide:
    """Everything a recipe names, loaded once; what every decoder's `run(guide, prompts)` decodes with.

    A decoder may use only this surface:

    * `engine`: the strong model's `Engine` (model, tokenizer, sampling, stop rule, shared prefixes);
    * `pairs`: the guide pairs (`GuidePair`), loaded when the decoder needs "pairs" (or "scorer");
    * `pilot`: (model, tokenizer) of a small drafter, loaded when it needs "pilot";
    * `reward_model`: a sequence-classification `RewardModel` (guide/reward.py), loaded when it needs
      "scorer" and the recipe names one;
    * `scorer(prompts, row_prompts)`: a row scorer, the reward model if loaded, else the guide pairs.

    Decoders read their settings from their own fields, never from `config` (the whole recipe).
    """

    def __init__(self, config: GuideConfig):
        self.config = c = config
        self.load = dict(dtype=c.dtype, device=default_device(c.device), trust_remote_code=c.trust_remote_code)
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
        self.engine = Engine(strong, tokenizer, sampling, stop, share_prefixes=c.share_prefixes)
        self.pairs: list[GuidePair] = []
        self.pilot = None  # (model, tokenizer) of WSD's drafter
        self.reward_model = None  # a RewardModel ranking best-of-N instead of the guide pairs
        self._loaded: set[str] = set()
        self.items: list[int] | None = None  # the current batch's random streams (decode)
        self.require(decoder_class(c.decoder).needs)

    @classmethod
    def from_models(
        cls,
        engine: Engine,
        *,
        pairs: Iterable[GuidePair] = (),
        pilot=None,
        reward_model=None,
        config: GuideConfig | None = None,
    ) -> Guide:
        """A guide over models already in memory (benchmarks, notebooks); `config` sets `generate`'s decoder."""
        guide = cls.__new__(cls)
        guide.config = config or GuideConfig()
        guide.load = {}
        guide.engine, guide.pairs, guide.pilot, guide.reward_model = engine, list(pairs), pilot, reward_model
        guide.items = None
        guide._loaded = {"pairs", "pilot", "scorer"}  # nothing more to load: a decoder uses what it was given
        return guide

    def require(self, needs: Iterable[str]) -> None:
        """Loads the models of `needs` ("pairs", "pilot", "scorer") the recipe names, once each."""
        c = self.config
        for need in needs:
            if need in self._loaded:
                continue
            if need == "pilot":
                if not c.pilot:
                    raise GuideError(f"decoder {c.decoder} needs a `pilot` model (the small aligned drafter)")
                self.pilot = (
                    load_model(c.pilot, **self.load),
                    load_tokenizer(
                        c.pilot,
                        trust_remote_code=c.trust_remote_code,
                        prompt_format=c.pilot_prompt_format,
                        format_key="pilot_prompt_format",
                    ),
                )
            elif need == "scorer" and c.reward_model:
                self.reward_model = self._reward_model()
            elif "pairs" not in self._loaded:  # "pairs", or "scorer" without a reward model
                self.pairs = self._pairs()
                if not self.pairs:
                    raise GuideError(f"decoder {c.decoder} needs a guide pair: set tuned and untuned (or adapter)")
                self._loaded.add("pairs")
            self._loaded.add(need)

    def _reward_model(self) -> RewardModel:
        c = self.config
        try:
            return RewardModel.load(
                c.reward_model,
                dtype=c.dtype,
                device=self.load["device"],
                trust_remote_code=c.trust_remote_code,
                prompt_format=c.reward_model_prompt_format,
                format_key="reward_model_prompt_format",
            )
        except OSError as e:
            raise GuideError(f"reward_model {c.reward_model!r}: cannot load it ({e})") from e

    def _pairs(self) -> list[GuidePair]:
        c = self.config
        specs = []
        if c.adapter or c.tuned:
            specs.append(
                {"tuned": c.tuned, "untuned": c.untuned, "adapter": c.adapter, "weight": c.guide_weight}
                | {"prompt_format": c.guide_prompt_format}
            )
        specs += c.extra_guides
        pairs = []
        for spec in specs:
            unknown = set(spec) - {"tuned", "untuned", "adapter", "weight", "adapter_base", "prompt_format"}
            if unknown:
                raise GuideError(
                    f"extra_guides: unknown key(s) {sorted(unknown)}; use tuned, untuned, adapter, weight, prompt_format"
                )
            weight = float(spec.get("weight", 1.0))
            fmt = {"prompt_format": spec.get("prompt_format", c.guide_prompt_format)}
            if spec.get("adapter"):
                pairs.append(
                    GuidePair.from_adapter(spec["adapter"], spec.get("adapter_base"), weight, **fmt, **self.load)
                )
            elif spec.get("tuned") and spec.get("untuned"):
                pairs.append(GuidePair.from_folders(spec["tuned"], spec["untuned"], weight, **fmt, **self.load))
            else:
                raise GuideError("a guide pair needs both `tuned` and `untuned`, or an `adapter`")
        return pairs

    def scorer(self, prompts: list[str], row_prompts: list[int]) -> GuideScorer | RewardModelScorer:
        """What ranks the rows of `prompts` (`row_prompts[i]`: row i's prompt): the reward model, else the pairs."""
        if self.reward_model is not None:
            return RewardModelScorer(self.reward_model, prompts, row_prompts)
        return GuideScorer(self.pairs, prompts, row_prompts)

    def decode(self, prompts: list[str], items: list[int] | None = None) -> list[Generation]:
        """One batch of prompts through the configured decoder (built from the config as it is now).

        `items` are the prompts' random streams (`guide.engine.item_keys`): decoders pass `guide.items` to
        `Engine.start`, so an item samples the same whatever batch it is decoded in."""
        decoder = decoder_class(self.config.decoder).from_config(self.config)
        self.require(decoder.needs)
        self.items = list(items) if items is not None else item_keys(prompts)
        return decoder.run(self, prompts)

    def generate(self, prompts: list[str], *, progress: bool = True) -> list[Generation]:
        """Every prompt, `batch_size` at a time; the outputs do not depend on `batch_size`."""
        if not prompts:
            raise GuideError("no prompts to generate from")
        items = item_keys(prompts)  # over the whole call: a prompt repeated in two batches draws two streams
        out: list[Generation] = []
        size = self.config.batch_size
        for start in tqdm(range(0, len(prompts), size), desc=f"generate ({self.config.decoder})", disable=not progress):
            out += self.decode(prompts[start : start + size], items[start : start + size])
        return out


def generate(config: GuideConfig | dict, prompts: list[str], *, progress: bool = True) -> list[Generation]:
    """Decodes `prompts` as the guide recipe `config` says (a `GuideConfig` or its dict)."""
    if isinstance(config, dict):
        config = GuideConfig.from_dict(dict(config))
    return Guide(config).generate(prompts, progress=progress)
