"""LCLM configuration: the keys of a published checkpoint's ``model_config.json``.

The published checkpoints (``latent-context/0.6b-4b-LCLM-{4,8,16}x``) describe
their compressor with a handful of keys; we read them as they are and keep any
key we do not know, so a save -> load round trip never loses information.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

POOLINGS = ("mean", "concat", "eos")
MASK_TYPES = ("causal", "bidirectional")
ADAPTER_TYPES = ("mlp", "linear")

# The paper's decoder-side convention for a compressed block.
MEMORY_START = "<|memory_start|>"
MEMORY = "<|memory|>"
MEMORY_END = "<|memory_end|>"


@dataclass
class MemoryTokens:
    """The three marker strings that frame a compressed block in the prompt.

    Published LCLM decoders add ``<|memory_start|>``, ``<|memory|>`` and
    ``<|memory_end|>`` to their vocabulary. Decoders without them (the default
    Gemma) name three tokens of their own vocabulary instead; only the token
    *positions* of the placeholder matter, because its input embedding is
    replaced by a latent.
    """

    start: str = MEMORY_START
    placeholder: str = MEMORY
    end: str = MEMORY_END


@dataclass
class LCLMConfig:
    """How text is compressed into latents and handed to the decoder.

    compression_ratio: N, tokens per latent (any int >= 1; 4, 8, 16 published).
    encoder_window_size: W, tokens per encoder window; windows do not see each
        other and position ids restart at 0 in every window.
    pooling: how a group of N encoder states becomes one latent.
        mean   - average of the group (the paper's choice);
        concat - the N states concatenated (enc_dim * N wide, zero-padded tail);
        eos    - the state at the group's last token (with a causal mask it has
                 read the whole group).
    encoder_mask_type: causal or bidirectional attention inside a window.
    boundary_overlap: tokens of left context that each window after the first
        re-reads from its predecessor; they shape the window's states but are
        not pooled, so the latent count stays ceil(T / N).
    adapter_type: mlp (RMSNorm -> Linear -> GELU -> Linear) or linear.
    """

    compression_ratio: int = 8
    encoder_window_size: int = 1024
    pooling: str = "mean"
    encoder_mask_type: str = "causal"
    boundary_overlap: int = 0
    adapter_type: str = "mlp"
    memory_tokens: MemoryTokens = field(default_factory=MemoryTokens)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.memory_tokens, dict):
            self.memory_tokens = MemoryTokens(**self.memory_tokens)
        self.validate()

    def validate(self) -> None:
        n, w = self.compression_ratio, self.encoder_window_size
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"compression_ratio must be an int >= 1, got {n!r}")
        if not isinstance(w, int) or w < 1:
            raise ValueError(f"encoder_window_size must be an int >= 1, got {w!r}")
        if w % n:
            # A group must never straddle two windows: it would pool states that
            # were computed without seeing each other.
            raise ValueError(f"encoder_window_size ({w}) must be a multiple of compression_ratio ({n})")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.encoder_mask_type not in MASK_TYPES:
            raise ValueError(f"encoder_mask_type must be one of {MASK_TYPES}, got {self.encoder_mask_type!r}")
        if not 0 <= self.boundary_overlap < w:
            raise ValueError(f"boundary_overlap must be in [0, {w}), got {self.boundary_overlap}")
        if self.adapter_type not in ADAPTER_TYPES:
            raise ValueError(f"adapter_type must be one of {ADAPTER_TYPES}, got {self.adapter_type!r}")

    def n_latents(self, n_tokens: int) -> int:
        """ceil(T / N): every started group gives one latent."""
        return -(-n_tokens // self.compression_ratio)

    # --- model_config.json ---------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "memory_tokens")}
        d["memory_tokens"] = asdict(self.memory_tokens)
        return {**self.extra, **d}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LCLMConfig":
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        return cls(**kwargs, extra=extra)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "LCLMConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
