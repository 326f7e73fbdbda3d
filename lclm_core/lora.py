"""Low-rank adapters (LoRA) on the Linear layers of a module, and merging them back.

Why our own ~60 lines rather than a library: we need exactly three things —
wrap named Linear layers, save only the small A/B matrices (the shipped parts
must be a few MB), and merge them into plain weights at load time so that
inference runs the ordinary model with no wrapper.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

# The projections of a transformer block (HF naming, shared by Gemma, Qwen, Llama).
DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoRALinear(nn.Module):
    """y = base(x) + (x A^T B^T) * alpha / r, with base frozen and B starting at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.rank, self.scale = rank, alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features, dtype=torch.float32, device=base.weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank, dtype=torch.float32, device=base.weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        base.requires_grad_(False)
        self.enabled = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return self.base(x)
        # The low-rank path runs in fp32 (trainable), the base in its own dtype.
        delta = (x.float() @ self.lora_A.t() @ self.lora_B.t()) * self.scale
        return self.base(x) + delta.to(x.dtype)

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scale


def apply_lora(module: nn.Module, rank: int, alpha: float, targets: Iterable[str] = DEFAULT_TARGETS) -> list[str]:
    """Wrap every Linear whose attribute name is in targets; returns their qualified names."""
    targets = set(targets)
    wrapped = []
    for name, parent in list(module.named_modules()):
        for child_name, child in list(parent.named_children()):
            if child_name in targets and isinstance(child, nn.Linear):
                setattr(parent, child_name, LoRALinear(child, rank, alpha))
                wrapped.append(f"{name}.{child_name}" if name else child_name)
    return wrapped


@contextmanager
def lora_disabled(module: nn.Module) -> Iterator[None]:
    """Run the base model: the teacher of a distillation step must not see the student's LoRA."""
    layers = [m for m in module.modules() if isinstance(m, LoRALinear)]
    for m in layers:
        m.enabled = False
    try:
        yield
    finally:
        for m in layers:
            m.enabled = True


def lora_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """Only the A/B matrices, keyed by the wrapped layer's qualified name."""
    return {k: v.detach().cpu() for k, v in module.state_dict().items() if k.endswith(("lora_A", "lora_B"))}


def merge_lora_state(module: nn.Module, state: dict[str, torch.Tensor], scale: float) -> int:
    """Add B @ A * scale into the plain Linear weights of module (no wrappers); returns layers merged."""
    merged = 0
    for key, a in state.items():
        if not key.endswith(".lora_A"):
            continue
        path = key[: -len(".lora_A")]
        b = state[path + ".lora_B"]
        layer = module.get_submodule(path.removesuffix(".base"))
        if isinstance(layer, LoRALinear):
            layer = layer.base
        with torch.no_grad():
            layer.weight += ((b.float() @ a.float()) * scale).to(layer.weight.dtype, copy=False).to(layer.weight.device)
        merged += 1
    return merged
