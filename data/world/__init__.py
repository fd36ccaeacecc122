"""The tiny world: w2s's miniature controlled-sentiment experiment (see ``w2s.data.world.grammar``)."""

from w2s.data.world.grammar import Review, ReviewGenerator, world_corpus, world_prompts
from w2s.data.world.reward import Score, gold_reward, score_review, sentiment_reward, topic_reward


def prompt_source(split: str, limit: int | None) -> list[str]:
    """`tiny:<split>` prompt sources (registered with the guide layer in pyproject.toml): 64 unless limited."""
    return world_prompts(split, limit or 64)


__all__ = [
    "Review",
    "ReviewGenerator",
    "Score",
    "gold_reward",
    "prompt_source",
    "score_review",
    "sentiment_reward",
    "topic_reward",
    "world_corpus",
    "world_prompts",
]
