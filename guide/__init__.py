"""The decoding engine: model loading, guide pairs and their scores, and the decoders.

from w2s.guide import generate
gens = generate({"decoder": "cbs", "tuned": "tiny:guide", "untuned": "tiny:weak"}, prompts)

A new decoder is a `Decoder` dataclass registered by name (`register_decoder`, see guide/decoders.py).
"""

from w2s.guide.config import GuideConfig
from w2s.guide.decoders import Decoder, register_decoder
from w2s.guide.engine import Generation
from w2s.guide.run import Guide, generate

__all__ = ["Decoder", "Generation", "Guide", "GuideConfig", "generate", "register_decoder"]
