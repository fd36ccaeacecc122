"""The decoding engine: model loading, guide pairs and their scores, and the decoders.

from guide import generate
gens = generate({"decoder": "cbs", "tuned": "tiny:guide", "untuned": "tiny:weak"}, prompts)
"""

from guide.config import GuideConfig
from guide.engine import Generation
from guide.run import Guide, generate

__all__ = ["Generation", "Guide", "GuideConfig", "generate"]
