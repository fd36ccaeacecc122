"""The tiny world: w2s's miniature controlled-sentiment experiment (see ``data.world.grammar``)."""

from data.world.grammar import Review, ReviewGenerator, world_corpus, world_prompts
from data.world.reward import Score, gold_reward, score_review

__all__ = ["Review", "ReviewGenerator", "Score", "gold_reward", "score_review", "world_corpus", "world_prompts"]
