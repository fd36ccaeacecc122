"""The decode context: what a decoder decodes one batch with, and the duties done around every decoder.

`Guide.decode` makes one per batch and hands it to `Decoder.run`. Through it a decoder opens rows on the
models it declared (`start`), a row scorer (`scorer`) or several models in lockstep (`lockstep`), and
returns an `Output` per prompt. The context then does what every decoder must and none may forget:
it timed the batch, it passed each prompt's random stream (`items`) to every model it opened, and it
builds each `Generation` with the item's own tokens per model, read from every state it handed out and
checked to sum to each model's total.
"""

from __future__ import annotations

from w2s.guide.commands import GuideError
from w2s.guide.engine import Engine, Follower, Rows
from w2s.guide.scorers import GuideScorer, RewardModelScorer
from w2s.guide.stopping import StopRule
from w2s.guide.streams import Prompt, SamplingParams
from w2s.guide.types import Generation, Output


def check_shared_vocabulary(tokenizers: dict[str, object]) -> None:
    """Raises a clear error unless every tokenizer has the same vocabulary."""
    names = list(tokenizers)
    first = tokenizers[names[0]].get_vocab()
    for name in names[1:]:
        if tokenizers[name].get_vocab() != first:
            raise GuideError(
                f"logit arithmetic needs one shared vocabulary, but {names[0]!r} and {name!r} have different "
                "vocabularies: use chunk-level beam search (decoder: cbs) or draft-switch decoding (decoder: wsd), "
                "which pass text between models"
            )


class DecodeContext:
    """One batch of `prompts` (their random streams `items`) for the decoder named `decoder`, over the strong
    model's `engine` and the `models` a `Guide` loaded for the decoder's roles."""

    def __init__(self, engine: Engine, models: dict, prompts: list[Prompt], items: list[int], decoder: str):
        self.prompts, self.items, self.decoder = prompts, items, decoder
        self.strong, self._models = engine, models
        self._meters: list = []  # every state and scorer handed out: each item's tokens are read from them

    @property
    def sampling(self) -> SamplingParams:
        """The recipe's sampling settings (the strong model's)."""
        return self.strong.sampling

    @property
    def max_new_tokens(self) -> int:
        return self.strong.stop.max_new_tokens

    def model(self, role: str):
        """What the recipe loaded for `role` (one the decoder declared): e.g. the pairs, or (model, tokenizer)."""
        models = self._models
        if role not in models:
            raise GuideError(f"decoder {self.decoder}: model role {role!r} is not among its declared needs")
        return models[role]

    def engine(self, role: str = "strong") -> Engine:
        """The engine of a model that writes: the strong one, or a (model, tokenizer) role such as the pilot,
        which samples with the strong engine's settings and token limit."""
        if role == "strong":
            return self.strong
        model, tokenizer = self.model(role)
        stop = StopRule.for_model(model, tokenizer, self.max_new_tokens)
        return Engine(model, tokenizer, self.sampling, stop, role, self.strong.share_prefixes)

    def start(self, role: str = "strong", copies: int = 1) -> Rows:
        """`copies` rows per prompt on `role`'s model, each prompt prefilled once."""
        rows = self.engine(role).start(self.prompts, self.items, copies)
        self._meters.append(rows)
        return rows

    def scorer(self, rows: Rows) -> GuideScorer | RewardModelScorer:
        """A scorer of `rows` (the reward model if the recipe names one, else the guide pairs), kept aligned
        with them as they are selected."""
        row_prompts = [r.prompt for r in rows.rows]
        models = self._models
        if models.get("reward_model") is not None:
            scorer = RewardModelScorer(models["reward_model"], self.prompts, row_prompts)
        else:
            scorer = GuideScorer(models.get("pairs") or [], self.prompts, row_prompts)
        rows.attach(scorer)
        self._meters.append(scorer)
        return scorer

    def lockstep(self) -> Rows:
        """One row per prompt in the strong model, every tuned expert and the one untuned model, stepped together
        (logit arithmetic: `Rows.sample(steps, combine=...)` gets their logits in that order)."""
        pairs = self._models.get("pairs") or []
        if not pairs:
            raise GuideError("logit arithmetic needs a guide pair: set tuned and untuned (or adapter)")
        if not self.strong.full_logits:
            raise GuideError(
                f"decoder {self.decoder} needs the strong model's full next-token logits at every step: "
                "use strong_backend: hf"
            )
        if any(p.is_adapter for p in pairs) and len(pairs) > 1:
            raise GuideError("dynamic fusion over several adapters is not supported: give experts as model folders")
        untuned = pairs[0].untuned
        if any(p.untuned is not untuned and p.untuned.name_or_path != untuned.name_or_path for p in pairs):
            raise GuideError("logit fusion needs every expert to share one untuned model")
        check_shared_vocabulary(
            {"strong": self.strong.tokenizer} | {f"guide {i}": p.tokenizer for i, p in enumerate(pairs)}
        )
        followers = [
            Follower("tuned" if len(pairs) == 1 else f"tuned_{i}", p.tuned, p.tokenizer, True if p.is_adapter else None)
            for i, p in enumerate(pairs)
        ]
        followers.append(Follower("untuned", untuned, pairs[0].tokenizer, False if pairs[0].is_adapter else None))
        rows = self.strong.lockstep(self.prompts, self.items, followers)
        self._meters.append(rows)
        return rows

    def generations(self, outputs: list[Output], seconds: float) -> list[Generation]:
        """Each item's `Generation`: the decoder's output, the item's tokens per model (the strong model first),
        and its share of the batch's wall time."""
        n = len(self.prompts)
        if len(outputs) != n:
            raise GuideError(f"decoder {self.decoder}: {len(outputs)} outputs for {n} prompts")
        tokens: dict[str, list[int]] = {}
        for meter in self._meters:
            totals = meter.tokens_run()
            for model, counts in meter.item_tokens().items():
                if sum(counts) != totals[model]:
                    raise GuideError(
                        f"decoder {self.decoder}: {model}'s tokens per item sum to {sum(counts)}, "
                        f"but it ran {totals[model]}"
                    )
                tokens[model] = [a + b for a, b in zip(tokens.get(model, [0] * n), counts, strict=True)]
        order = sorted(tokens, key=lambda model: model != self.strong.name)  # the strong model first
        return [
            Generation(
                out.text,
                out.score,
                out.switch_at,
                tokens={model: tokens[model][p] for model in order},
                seconds=seconds / n,
                stop=getattr(out.stop, "value", out.stop) or "",
                batch_seconds=seconds,
            )
            for p, out in enumerate(outputs)
        ]
