"""The compressor: text -> encoder -> pooled latents -> adapter -> decoder-space latents.

The decoder is not part of this object: it is a :class:`DecoderBackend`
(torch or llama.cpp) that reads what this produces. What ties the two together
is the decoder's input space (``dec_dim``) and the compressor's fingerprint,
which travels with every latent array so a store can tell stale latents.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Sequence

import torch
from torch import nn

from .adapter import build_adapter
from .config import LCLMConfig
from .encoder import LatentEncoder
from .inputs import tokenize_text
from .latents import LatentArray

log = logging.getLogger(__name__)


def tensor_digest(modules: Sequence[nn.Module]) -> str:
    """sha256 of every parameter and buffer (name, shape, values rounded to bfloat16).

    Rounded to bfloat16 first so that the same weights loaded in float32 or bfloat16 hash alike:
    ``--dtype auto`` picks either on a CPU (by a speed probe) and bfloat16 on a GPU, and the
    workers of one cluster must agree with the driver on whose latents they make.
    """
    h = hashlib.sha256()
    for m in modules:
        for name, t in sorted(m.state_dict().items()):
            h.update(name.encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to("cpu", torch.bfloat16).to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


class LCLMCompressor(nn.Module):
    """Encoder + adapter, with the encoder's tokenizer.

    weights_id: a stable identity of the weights (e.g. sha256 of the files they
    were loaded from). Without one, the fingerprint hashes the tensors.
    trained: False for a randomly initialised adapter; the app says so rather
    than pretend its latents carry content.
    """

    def __init__(
        self,
        config: LCLMConfig,
        encoder: LatentEncoder,
        adapter: nn.Module,
        tokenizer,
        weights_id: str | None = None,
        trained: bool = True,
        description: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.adapter = adapter
        self.tokenizer = tokenizer
        self.weights_id = weights_id
        self.trained = trained
        self.description = description
        self._fingerprint: str | None = None

    @classmethod
    def build(cls, config: LCLMConfig, backbone: nn.Module, tokenizer, dec_dim: int, **kw) -> "LCLMCompressor":
        """A compressor around a backbone, with a freshly initialised adapter."""
        prefix = tokenizer("", add_special_tokens=True)["input_ids"]  # what the backbone expects at position 0
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        encoder = LatentEncoder(backbone, config, pad_token_id=pad, prefix_ids=prefix)
        adapter = build_adapter(config.adapter_type, encoder.latent_dim, dec_dim)
        return cls(config, encoder, adapter, tokenizer, **kw)

    @property
    def fingerprint(self) -> str:
        """Who makes these latents: config + weights. Latents with another fingerprint are stale."""
        if self._fingerprint is None:
            h = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
            h.update((self.weights_id or tensor_digest([self.encoder, self.adapter])).encode())
            self._fingerprint = h.hexdigest()[:32]
        return self._fingerprint

    @property
    def dec_dim(self) -> int:
        return self.adapter.fc2.out_features if hasattr(self.adapter, "fc2") else self.adapter.fc1.out_features

    def tokenize(self, text: str) -> list[int]:
        """The encoder's token ids for text (what the compression ratio counts)."""
        return tokenize_text(self.tokenizer, text)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenize(text))

    def forward_ids(self, token_ids: Sequence[Sequence[int]], windows_per_batch: int = 8) -> list[torch.Tensor]:
        """Decoder-space latents (ceil(T_i / N), dec_dim) float32 for each token sequence."""
        pooled = self.encoder.encode(token_ids, windows_per_batch=windows_per_batch)
        p = next(self.adapter.parameters())
        with torch.inference_mode():
            return [self.adapter(x.to(p.device, p.dtype)).float().cpu() for x in pooled]

    def compress(
        self, texts: Sequence[str], windows_per_batch: int = 8, dtype: torch.dtype = torch.float16
    ) -> list[LatentArray]:
        """Latents of each text, ready to store (float16 by default: half the bytes, same answers)."""
        lats = self.forward_ids([self.tokenize(t) for t in texts], windows_per_batch)
        return [LatentArray(x.to(dtype), self.fingerprint, self.config.compression_ratio) for x in lats]
