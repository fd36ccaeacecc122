"""`generate(config, prompts)`: build the models a guide recipe names and decode with its decoder."""

from __future__ import annotations

import logging
from functools import partial

from tqdm.auto import tqdm

from guide.config import GuideConfig
from guide.engine import Engine, Generation, SamplingParams, StopRule
from guide.models import load_model, load_tokenizer
from guide.pair import GuidePair
from guide.scorers import GuideScorer, RewardModelScorer
from guide.search import ChunkBeamSearch, Sampling, best_of_n

logger = logging.getLogger(__name__)


class Guide:
    """Everything a recipe names, loaded once: the strong engine, guide pairs, pilot, reward model."""

    def __init__(self, config: GuideConfig):
        self.config = c = config
        load = dict(dtype=c.dtype, device=c.device, trust_remote_code=c.trust_remote_code)
        self.load = load
        strong = load_model(c.strong_model, **load)
        tokenizer = load_tokenizer(c.strong_model, trust_remote_code=c.trust_remote_code)
        sampling = SamplingParams(c.temperature, c.top_k, c.top_p, c.seed)
        stop = StopRule.for_model(strong, tokenizer, c.max_new_tokens, c.stop)
        self.engine = Engine(strong, tokenizer, sampling, stop, share_prefixes=c.share_prefixes)
        self.pairs = self._pairs()
        self.pilot = None  # (model, tokenizer) of WSD's drafter
        if c.decoder == "wsd":
            if not c.pilot:
                raise ValueError("decoder wsd needs a `pilot` model (the small aligned drafter)")
            self.pilot = (load_model(c.pilot, **load), load_tokenizer(c.pilot, trust_remote_code=c.trust_remote_code))
        self.reward_model = None  # (model, tokenizer) ranking best-of-N instead of the guide pairs
        if c.decoder == "bon" and c.reward_model:
            from transformers import AutoModelForSequenceClassification

            from guide.models import resolve_model_path

            path = resolve_model_path(c.reward_model)
            rm = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval()
            self.reward_model = (rm, load_tokenizer(path))

    def _pairs(self) -> list[GuidePair]:
        c = self.config
        specs = []
        if c.adapter or c.tuned:
            specs.append({"tuned": c.tuned, "untuned": c.untuned, "adapter": c.adapter, "weight": c.guide_weight})
        specs += c.extra_guides
        pairs = []
        for spec in specs:
            unknown = set(spec) - {"tuned", "untuned", "adapter", "weight", "adapter_base"}
            if unknown:
                raise ValueError(f"extra_guides: unknown key(s) {sorted(unknown)}; use tuned, untuned, adapter, weight")
            weight = float(spec.get("weight", 1.0))
            if spec.get("adapter"):
                pairs.append(GuidePair.from_adapter(spec["adapter"], spec.get("adapter_base"), weight, **self.load))
            elif spec.get("tuned") and spec.get("untuned"):
                pairs.append(GuidePair.from_folders(spec["tuned"], spec["untuned"], weight, **self.load))
            else:
                raise ValueError("a guide pair needs both `tuned` and `untuned`, or an `adapter`")
        return pairs

    def scorer_factory(self):
        if self.reward_model is not None:
            return partial(RewardModelScorer, *self.reward_model)
        return partial(GuideScorer, self.pairs)

    def decode(self, prompts: list[str]) -> list[Generation]:
        """One batch of prompts through the configured decoder."""
        c = self.config
        if c.decoder == "sample":
            return Sampling().run(self.engine, prompts)
        if c.decoder in ("cbs", "bon"):
            search = (
                best_of_n(c.num_samples) if c.decoder == "bon" else ChunkBeamSearch(c.width, c.successors, c.chunk_len)
            )
            return search.run(self.engine, prompts, self.scorer_factory())
        if c.decoder == "wsd":
            from guide.draft import DraftSwitch

            return DraftSwitch(c.window, c.threshold, c.check_every, c.continuation).run(self, prompts)
        from guide.fusion import DynamicFusion, ProxyTuning

        arithmetic = ProxyTuning(c.beta) if c.decoder == "eft" else DynamicFusion(c.alpha_max, c.alpha_step)
        return arithmetic.run(self, prompts)

    def generate(self, prompts: list[str], *, progress: bool = True) -> list[Generation]:
        """Every prompt, `batch_size` at a time."""
        if not prompts:
            raise ValueError("no prompts to generate from")
        out: list[Generation] = []
        size = self.config.batch_size
        for start in tqdm(range(0, len(prompts), size), desc=f"generate ({self.config.decoder})", disable=not progress):
            out += self.decode(prompts[start : start + size])
        return out


def generate(config: GuideConfig | dict, prompts: list[str], *, progress: bool = True) -> list[Generation]:
    """Decodes `prompts` as the guide recipe `config` says (a `GuideConfig` or its dict)."""
    if isinstance(config, dict):
        config = GuideConfig.from_dict(dict(config))
    return Guide(config).generate(prompts, progress=progress)
