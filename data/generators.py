"""Generators: models that write N responses per prompt, each in its own chat template.

`kind: hf` samples a transformers model through w2s's engine (`guide.engine.Engine`: each
prompt prefilled once for its N samples, finished rows dropped, every sample keyed by the
shard's seed, its prompt and its number); `kind: openai` samples a served model the same way over
`/v1/completions` (guide/served.py); `kind: guide` hands the prompts to a `guide/`
decoder (`guide.generate(config, prompts)`), so weak-to-strong search over a strong model
can be a teacher. Every generator counts the tokens it wrote, for the benchmark and the card.
"""

from __future__ import annotations

import logging
from typing import Protocol

import torch

from w2s.data.prompts import Messages
from w2s.data.recipe import GeneratorConfig
from w2s.guide import Guide, GuideConfig
from w2s.guide.engine import Engine
from w2s.guide.files import RecipeError
from w2s.guide.models import default_device, load_model_and_tokenizer, load_tokenizer
from w2s.guide.served import ServedEngine, connect, served_stop
from w2s.guide.stopping import StopReason, StopRule
from w2s.guide.streams import SamplingParams, item_keys

logger = logging.getLogger(__name__)


class Generator(Protocol):
    """Writes `num_samples` responses per prompt; the same seed gives the same responses."""

    name: str
    num_samples: int
    tokens: int  # response tokens written so far

    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]: ...


class HFGenerator:
    """Batched sampling through the engine: a prompt's `num_samples` rows share its prefill, and a batch holds
    whole prompts, at most `batch_size` rows (one prompt when `num_samples` alone is more). A prompt's samples
    are a function of the seed and its content alone, not of the batch or shard it came in."""

    def __init__(self, config: GeneratorConfig):

        self.config = config
        self.name = config.name
        self.num_samples = config.num_samples
        self.tokens = 0
        self.model, self.tokenizer = load_model_and_tokenizer(
            config.model,
            dtype=config.dtype,
            device=default_device(config.device),
            attn_implementation=config.attn_implementation,
            trust_remote_code=config.trust_remote_code,
            prompt_format=config.prompt_format,
            format_key=f"generators ({config.name}).prompt_format",
        )
        sampling = SamplingParams(config.temperature, config.top_k, config.top_p)
        stop = StopRule.for_model(self.model, self.tokenizer, config.max_new_tokens)
        self.engine = Engine(self.model, self.tokenizer, sampling, stop, name=config.name)

    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]:
        engine, n = self.engine, self.num_samples
        engine.reseed(seed)
        items = item_keys(prompts)  # over the whole call: a prompt repeated in a shard draws another stream
        per_batch = max(1, self.config.batch_size // n)
        out: list[list[str]] = []
        for start in range(0, len(prompts), per_batch):
            batch = prompts[start : start + per_batch]
            rows = engine.start(batch, items[start : start + per_batch], copies=n)  # slots 0..n-1 of each prompt
            rows.sample(engine.stop.max_new_tokens)
            # each row up to and including its EOS
            self.tokens += sum(len(r.ids) + (r.stop == StopReason.EOS) for r in rows.rows)
            texts = [rows.text(r).strip() for r in rows.rows]
            out += [texts[i * n : (i + 1) * n] for i in range(len(batch))]
        return out


class GuideGenerator:
    """A `guide/` decoder as a generator: the `guide` settings are a guide recipe (`guide.GuideConfig` keys).

    For example weak-to-strong search over a strong model as a teacher:
    `{decoder: cbs, strong_model: ..., tuned: ..., untuned: ..., width: 4, successors: 4, chunk_len: 5}`.
    """

    def __init__(self, config: GeneratorConfig):

        self.guide = Guide(GuideConfig.from_dict(dict(config.guide), source=f"generator {config.name!r}: guide"))
        self.config = config
        self.name = config.name
        self.num_samples = config.num_samples
        self.tokens = 0

    def generate(self, prompts: list[Messages], *, seed: int) -> list[list[str]]:
        if any(len(p) != 1 for p in prompts):
            raise RecipeError(f"generator {self.name!r} (kind guide) takes single-turn prompts (one user message)")
        torch.manual_seed(seed)
        self.guide.engine.reseed(seed)  # each item's stream: this shard's seed, its prompt, its sample number
        n = self.num_samples
        expanded = [p[0]["content"] for p in prompts for _ in range(n)]
        generations = self.guide.generate(expanded, progress=False)
        self.tokens += sum(sum(g.tokens.values()) for g in generations)  # forward tokens over every model
        texts = [g.text.strip() for g in generations]
        return [texts[i * n : (i + 1) * n] for i in range(len(prompts))]


class OpenAIGenerator(HFGenerator):
    """A served model sampling `num_samples` responses per prompt over `/v1/completions` (guide/served.py):
    `model` is its served name, `tokenizer` renders prompts here and they travel as token ids; a prompt's
    samples are one request with n, seeded from the shard's seed and the prompt (the same server build gives
    the same samples, whatever the batch or shard)."""

    def __init__(self, config: GeneratorConfig):
        self.config = config
        self.name = config.name
        self.num_samples = config.num_samples
        self.tokens = 0
        source = config.tokenizer or config.model
        self.tokenizer = load_tokenizer(
            source,
            trust_remote_code=config.trust_remote_code,
            prompt_format=config.prompt_format,
            format_key=f"generators ({config.name}).prompt_format",
        )
        server = connect(config.base_url_env, config.api_key_env, config.model)
        sampling = SamplingParams(config.temperature, config.top_k, config.top_p)
        stop = served_stop(self.tokenizer, source, config.max_new_tokens)
        self.engine = ServedEngine(server, self.tokenizer, sampling, stop, name=config.name)


def make_generator(config: GeneratorConfig) -> Generator:
    """The generator a recipe entry describes (loads its model, or connects to its server)."""
    kinds = {"guide": GuideGenerator, "openai": OpenAIGenerator}
    return kinds.get(config.kind, HFGenerator)(config)
