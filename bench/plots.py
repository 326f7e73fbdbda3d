"""The suite's three frontier plots (matplotlib, PNG): accuracy against TTFT, memory and context length.

Colour is the method family, the marker its compression ratio; for the LCLM
methods a hollow marker joined by a dotted line to the filled one shows the
same accuracy with compression timed in (a document seen for the first time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

COLOURS = {"none": "#9e9e9e", "raw": "#000000", "truncation": "#8c564b", "rag": "#17becf", "snapkv": "#d62728",
           "latents": "#1f77b4", "latents+exp": "#2ca02c"}
MARKERS = {None: "o", 4: "s", 8: "^", 16: "D"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on a server or in CI
    import matplotlib.pyplot as plt

    return plt


def _marker(ratio: int | None) -> str:
    return MARKERS.get(ratio, "P")


def _scatter(ax, points: Sequence[dict], x: str, y: str, cold_x: str | None = None) -> None:
    """points: dicts with method, family, ratio, x, y (and cold_x); one labelled marker per method."""
    for p in points:
        if p.get(x) is None or p.get(y) is None:
            continue
        c = COLOURS.get(p["family"], "#7f7f7f")
        ax.scatter(p[x], p[y], color=c, marker=_marker(p["ratio"]), s=46, label=p["method"], zorder=3)
        if cold_x and p.get(cold_x) is not None and p[cold_x] != p[x]:
            ax.scatter(p[cold_x], p[y], facecolors="none", edgecolors=c, marker=_marker(p["ratio"]), s=46, zorder=3)
            ax.plot([p[x], p[cold_x]], [p[y], p[y]], color=c, linestyle=":", linewidth=1, zorder=2)


def _legend(fig, axes) -> None:
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="center right", fontsize=8, frameon=False)


def accuracy_vs_ttft(panels: Sequence[tuple[str, str, Sequence[dict]]], path: Path) -> Path:
    """panels: (title, y label, points with ttft_s / ttft_cold_s / accuracy)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.8, 4.2), squeeze=False)
    for ax, (title, ylabel, pts) in zip(axes[0], panels):
        _scatter(ax, pts, "ttft_s", "accuracy", "ttft_cold_s")
        ax.set_xscale("log")
        ax.set(title=title, xlabel="median time to first token, s (log; hollow: compression included)", ylabel=ylabel)
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_memory(title: str, points: Sequence[dict], path: Path) -> Path:
    """Two panels: the prefill's added peak RSS, and the KV cache bytes."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12.2, 4.2), squeeze=False)
    _scatter(axes[0][0], points, "peak_mb", "accuracy")
    axes[0][0].set(title=f"{title}: peak RSS", xlabel="peak resident memory added by the prefill, MB (median)",
                   ylabel="accuracy %")
    _scatter(axes[0][1], points, "kv_mb", "accuracy")
    axes[0][1].set(title=f"{title}: KV cache", xlabel="KV cache held at the first token, MB (median)", ylabel="accuracy %")
    for ax in axes[0]:
        ax.grid(alpha=0.3)
    _legend(fig, axes[0])
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_length(title: str, series: Sequence[dict], path: Path) -> Path:
    """series: dicts with method, family, ratio, lengths, accuracy (lists; None where the method could not run)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.6, 4.6))
    styles = {None: "-", 4: "-", 8: "--", 16: ":"}
    for s in series:
        xs = [x for x, y in zip(s["lengths"], s["accuracy"]) if y is not None]
        ys = [y for y in s["accuracy"] if y is not None]
        if xs:
            ax.plot(xs, ys, color=COLOURS.get(s["family"], "#7f7f7f"), linestyle=styles.get(s["ratio"], "-."),
                    marker=_marker(s["ratio"]), label=s["method"])
    ax.set_xscale("log", base=2)
    lengths = sorted({x for s in series for x in s["lengths"]})
    ax.set_xticks(lengths, [f"{x / 1024:g}k" if x >= 1024 else str(x) for x in lengths])
    ax.set(title=title, xlabel="context length, tokens", ylabel="accuracy %")
    ax.grid(alpha=0.3)
    fig.legend(loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
