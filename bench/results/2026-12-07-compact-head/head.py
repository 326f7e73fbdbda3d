"""The output head on one row, strided (sliced out of a prefill) against compact, bfloat16 on the CPU.

From the repository root: .venv/bin/python bench/results/2026-12-07-compact-head/head.py
(the figures in README.md came from the same calls on the loaded default decoder's head, Gemma-3's 262,144 x 640)
"""
import time

import torch


def timed(x: torch.Tensor, w: torch.Tensor) -> float:
    torch.nn.functional.linear(x, w)  # warm
    t = time.perf_counter()
    torch.nn.functional.linear(x, w)
    return time.perf_counter() - t


with torch.no_grad():
    w = torch.randn(262144, 640, dtype=torch.bfloat16)
    h = torch.randn(1, 200, 640, dtype=torch.bfloat16)
    for k in (1, 5):
        print(f"last {k}: sliced (logits_to_keep={k}) {timed(h[:, -k:, :], w):.3f} s, "
              f"indexed (last_position) {timed(h[:, torch.arange(-k, 0), :], w):.3f} s")
