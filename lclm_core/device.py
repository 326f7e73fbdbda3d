"""Where and in what precision the models run: chosen once, overridable.

CUDA (bf16) when a GPU is present, else the CPU in the fastest precision it
runs well: bf16 where the CPU has native bf16 arithmetic (AVX512-BF16, AMX or
ARM BF16; measured here ~2.7x fp32 for a 512-token forward), fp32 elsewhere.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


@dataclass(frozen=True)
class Placement:
    device: torch.device
    dtype: torch.dtype

    def __str__(self) -> str:
        return f"{self.device.type} {str(self.dtype).removeprefix('torch.')}"


def cpu_has_fast_bf16() -> bool:
    """True where the CPU does bf16 matmuls natively (oneDNN's own check)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def resolve(device: str | None = "auto", dtype: str | None = "auto") -> Placement:
    """Turn the user's --device / --dtype (or "auto") into a placement."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            dev = torch.device("mps")
        else:
            dev = torch.device("cpu")
    else:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU (is the CUDA build of torch installed?)")
    if dtype in (None, "auto"):
        if dev.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        elif dev.type == "mps":
            dt = torch.float16
        else:
            dt = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    else:
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)}")
        dt = _DTYPES[dtype]
    return Placement(dev, dt)
