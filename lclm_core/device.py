"""Where and in what precision the models run: chosen once, overridable.

CUDA (bf16) when a GPU is present, else the CPU in the fastest precision it
runs well: bf16 where the CPU has native bf16 arithmetic (AVX512-BF16, AMX or
ARM BF16) and a quick probe finds it faster than fp32, fp32 elsewhere.
"""

from __future__ import annotations

import functools
import logging
import math
import time
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


def _matmul_seconds(dtype: torch.dtype, size: int = 1024, reps: int = 3) -> float:
    """Best of a few square matmuls: the best, since the noise on a busy laptop only adds time."""
    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b  # warm-up: oneDNN picks and caches its kernel on the first call
    best = math.inf
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return best


def _onednn_has_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True where bf16 matmuls beat fp32 on this CPU, measured once per process (~0.1 s).

    oneDNN's own check says only that bf16 *runs* natively. On one 2-core EPYC that reported
    support, bf16 ran at 149 GFLOP/s against fp32's 226; on another, 840 against 201. So the
    check gates a side-by-side probe, and bf16 must be clearly faster (1.3x) to be chosen.
    """
    if not _onednn_has_bf16():
        return False
    fp32, bf16 = _matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)
    log.info("CPU matmul probe: bf16 %.1f ms, fp32 %.1f ms", bf16 * 1e3, fp32 * 1e3)
    return bf16 * 1.3 < fp32


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
