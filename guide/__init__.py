"""The decoding engine: model loading, guide pairs and their scores, and the decoders.

from w2s.guide import generate
gens = generate({"decoder": "cbs", "tuned": "tiny:guide", "untuned": "tiny:weak"}, prompts)

A new decoder is a `Decoder` dataclass registered by name (`register_decoder`) or by an entry point of the group
`w2s.decoders`; it decodes through a `DecodeContext` over the engine boundary (guide/decoders.py, guide/engine.py).

The names below load with their modules on first use (PEP 562), so that importing a light module of
this package (`w2s.guide.commands`, `w2s.guide.files`) does not import torch: `w2s <command> --help`
stays instant.
"""

import importlib

_EXPORTS = {
    "Decoder": "w2s.guide.decoders",
    "register_decoder": "w2s.guide.decoders",
    "DecodeContext": "w2s.guide.context",
    "Generation": "w2s.guide.types",
    "Output": "w2s.guide.types",
    "GuideConfig": "w2s.guide.config",
    "Guide": "w2s.guide.run",
    "generate": "w2s.guide.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'w2s.guide' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
