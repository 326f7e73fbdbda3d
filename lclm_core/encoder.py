"""The LCLM encoder: fixed windows of tokens -> transformer states -> pooled latents.

Following the paper: the text is cut into windows of W tokens that never see
each other (position ids restart at 0 in each), a transformer reads each
window with a causal or bidirectional mask, and its last hidden states are
split into groups of N consecutive tokens, each pooled into one latent. T
tokens give ceil(T / N) latents. Many windows, from many texts, go through
one forward pass.

Two optional extras, neither pooled:
- a *prefix* of special tokens that the backbone expects at position 0
  (Gemma's ``<bos>``; Qwen3 has none), taken from what the tokenizer adds;
- ``boundary_overlap`` tokens of left context re-read from the previous
  window, so a window's first tokens are not encoded blind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .config import LCLMConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Window:
    """One encoder window of one text: ``context`` ids are read, ``content`` ids are pooled."""

    text_index: int
    context: tuple[int, ...]  # prefix + overlap, not pooled
    content: tuple[int, ...]  # 1..W tokens, pooled into ceil(len / N) latents


def make_windows(token_ids: Sequence[Sequence[int]], config: LCLMConfig, prefix: Sequence[int] = ()) -> list[Window]:
    """Cut every text into windows of W content tokens (plus unpooled context)."""
    w, ov = config.encoder_window_size, config.boundary_overlap
    out: list[Window] = []
    for i, ids in enumerate(token_ids):
        ids = list(ids)
        for start in range(0, len(ids), w):
            overlap = ids[max(0, start - ov) : start]
            out.append(Window(i, tuple(prefix) + tuple(overlap), tuple(ids[start : start + w])))
    return out


def pool_groups(states: torch.Tensor, valid: torch.Tensor, n: int, pooling: str) -> torch.Tensor:
    """Pool groups of n consecutive states.

    states: (B, L, D) content states, right-padded; L a multiple of n.
    valid:  (B, L) bool, True on real tokens (a prefix of each row).
    returns (B, L // n, D) for mean/eos, (B, L // n, n * D) for concat; rows of
    groups with no valid token are zeros (callers drop them).
    """
    b, length, d = states.shape
    g = length // n
    s = states.reshape(b, g, n, d)
    m = valid.reshape(b, g, n, 1).to(states.dtype)
    if pooling == "mean":
        count = m.sum(dim=2).clamp_min(1.0)
        return (s * m).sum(dim=2) / count
    if pooling == "concat":
        return (s * m).reshape(b, g, n * d)
    if pooling == "eos":
        # The last valid state of each group: index = (valid count - 1), clamped for empty groups.
        last = (valid.reshape(b, g, n).sum(dim=2) - 1).clamp_min(0)
        picked = torch.gather(s, 2, last[:, :, None, None].expand(b, g, 1, d)).squeeze(2)
        return picked * (valid.reshape(b, g, n).any(dim=2, keepdim=True)).to(states.dtype)
    raise ValueError(f"unknown pooling {pooling!r}")


def _bidirectional_masks(backbone: nn.Module, key_valid: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
    """Explicit (B, 1, L, L) boolean masks: every token sees every real token of its window.

    Passing a prepared mask makes transformers use it as is (and SDPA drop its
    causal flag). Models with several layer types (Gemma's sliding layers) get
    one mask per type; sliding layers keep their window, in both directions.
    """
    b, length = key_valid.shape
    full = key_valid[:, None, None, :].expand(b, 1, length, length)
    layer_types = getattr(backbone.config, "layer_types", None)
    if not layer_types:
        return full
    masks: dict[str, torch.Tensor] = {}
    pos = torch.arange(length, device=key_valid.device)
    for kind in set(layer_types):
        if kind == "sliding_attention" and getattr(backbone.config, "sliding_window", None):
            near = (pos[:, None] - pos[None, :]).abs() < backbone.config.sliding_window
            masks[kind] = full & near[None, None]
        else:
            masks[kind] = full
    return masks


class LatentEncoder(nn.Module):
    """Wraps a transformer backbone (an HF base model returning ``last_hidden_state``)."""

    def __init__(self, backbone: nn.Module, config: LCLMConfig, pad_token_id: int = 0, prefix_ids: Sequence[int] = ()) -> None:
        super().__init__()
        self.backbone = backbone
        self.config = config
        self.pad_token_id = pad_token_id
        self.prefix_ids = tuple(prefix_ids)

    @property
    def hidden_size(self) -> int:
        return self.backbone.config.hidden_size

    @property
    def latent_dim(self) -> int:
        """Width of a pooled latent (the adapter's input)."""
        d = self.hidden_size
        return d * self.config.compression_ratio if self.config.pooling == "concat" else d

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    def forward_windows(self, windows: Sequence[Window]) -> torch.Tensor:
        """Encode and pool a batch of windows.

        returns (B, W // N, latent_dim); row i's first ceil(len(content_i) / N)
        latents are real, the rest zeros.
        """
        cfg = self.config
        n, w = cfg.compression_ratio, cfg.encoder_window_size
        # Right padding only: a left-padded causal row would be a query that sees
        # no key at all, whose NaN spreads through the values of later layers.
        length = max(len(x.context) + len(x.content) for x in windows)
        ids = torch.full((len(windows), length), self.pad_token_id, dtype=torch.long)
        valid = torch.zeros((len(windows), length), dtype=torch.bool)
        take = torch.zeros((len(windows), w), dtype=torch.long)  # column of each content token
        take_valid = torch.zeros((len(windows), w), dtype=torch.bool)
        for r, x in enumerate(windows):
            row = x.context + x.content
            ids[r, : len(row)] = torch.tensor(row)
            valid[r, : len(row)] = True
            take[r, : len(x.content)] = torch.arange(len(x.context), len(row))
            take_valid[r, : len(x.content)] = True
        # Position ids restart at 0 in every window (pads get positions too; they are masked).
        pos = torch.arange(length).expand(len(windows), length)
        dev = self.device
        ids, valid, pos, take, take_valid = (t.to(dev) for t in (ids, valid, pos, take, take_valid))
        if cfg.encoder_mask_type == "causal":
            mask: torch.Tensor | dict[str, torch.Tensor] = valid.long()
        else:
            mask = _bidirectional_masks(self.backbone, valid)
        states = self.backbone(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        content = torch.gather(states, 1, take[:, :, None].expand(-1, -1, states.shape[-1]))  # (B, W, D)
        return pool_groups(content.float(), take_valid, n, cfg.pooling)

    @torch.inference_mode()
    def encode(self, token_ids: Sequence[Sequence[int]], windows_per_batch: int = 8) -> list[torch.Tensor]:
        """Pooled latents for each text: a list of (ceil(T_i / N), latent_dim) float32 tensors."""
        cfg = self.config
        windows = make_windows(token_ids, cfg, self.prefix_ids)
        parts: list[list[tuple[int, torch.Tensor]]] = [[] for _ in token_ids]
        # Longest windows first keeps padding low inside a batch; order is restored per text.
        order = sorted(range(len(windows)), key=lambda k: -len(windows[k].content))
        for s in range(0, len(order), windows_per_batch):
            chunk = [windows[k] for k in order[s : s + windows_per_batch]]
            pooled = self.forward_windows(chunk)
            for k, x, lat in zip(order[s : s + windows_per_batch], chunk, pooled):
                parts[x.text_index].append((k, lat[: cfg.n_latents(len(x.content))]))
        out = []
        for i, p in enumerate(parts):
            p.sort(key=lambda kv: kv[0])
            rows = [lat for _, lat in p]
            out.append(torch.cat(rows).cpu() if rows else torch.zeros((0, self.latent_dim)))
        return out
