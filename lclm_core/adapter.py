"""The adapter: maps pooled encoder latents into the decoder's input space.

Published layout (``adapter/adapter.safetensors``): ``norm.weight``,
``fc1.weight``, ``fc1.bias``, ``fc2.weight``, ``fc2.bias``. Its output is what
the decoder's first layer reads at a ``<|memory|>`` position, i.e. it lives in
the same space as the decoder's (already scaled) token embeddings.
"""

from __future__ import annotations

import torch
from torch import nn


class MLPAdapter(nn.Module):
    """RMSNorm(enc_dim) -> Linear(enc_dim, dec_dim) -> GELU -> Linear(dec_dim, dec_dim)."""

    def __init__(self, enc_dim: int, dec_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(enc_dim, eps=eps)
        self.fc1 = nn.Linear(enc_dim, dec_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dec_dim, dec_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., enc_dim) -> (..., dec_dim)
        return self.fc2(self.act(self.fc1(self.norm(x))))


class LinearAdapter(nn.Module):
    """RMSNorm -> Linear: the cheapest map, useful as an ablation."""

    def __init__(self, enc_dim: int, dec_dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.RMSNorm(enc_dim, eps=eps)
        self.fc1 = nn.Linear(enc_dim, dec_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc1(self.norm(x))


def build_adapter(adapter_type: str, enc_dim: int, dec_dim: int) -> nn.Module:
    if adapter_type == "mlp":
        return MLPAdapter(enc_dim, dec_dim)
    if adapter_type == "linear":
        return LinearAdapter(enc_dim, dec_dim)
    raise ValueError(f"unknown adapter_type {adapter_type!r}")
