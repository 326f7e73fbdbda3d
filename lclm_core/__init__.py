"""LCLM core: the encoder, pooling, adapter, decoder backends and checkpoint I/O.

Knows nothing of files, SQLite or UI. Importing it loads no model.
"""

from .backend import ContextLengthError, DecoderBackend, GenerationConfig, GenerationResult
from .config import LCLMConfig, MemoryTokens
from .inputs import DecoderInputs, InputBuilder, Latents, Text, TokenIds
from .latents import LatentArray
from .model import LCLMCompressor

__all__ = [
    "ContextLengthError",
    "DecoderBackend",
    "DecoderInputs",
    "GenerationConfig",
    "GenerationResult",
    "InputBuilder",
    "LCLMCompressor",
    "LCLMConfig",
    "LatentArray",
    "Latents",
    "MemoryTokens",
    "Text",
    "TokenIds",
]
