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


def _plain_log_ticks(ax) -> None:
    """Log-scale x ticks at 1, 2, 5 per decade as plain numbers (0.2, 0.5, 1), the minor ones unlabelled."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _length_label(n: int) -> str:
    return f"{n // 1024}k" if n % 1024 == 0 else (f"{n / 1000:g}k" if n >= 1000 else str(n))


def _marker(ratio: int | None) -> str:
    return MARKERS.get(ratio, "P")


def _scatter(ax, points: Sequence[dict], x: str, y: str, cold_x: str | None = None) -> None:
    """points: dicts with method, family, ratio, x, y (and cold_x); one labelled marker per method."""
    for p in points:
        if p.get(x) is None or p.get(y) is None:
            continue
        c = COLOURS.get(p["family"], "#7f7f7f")
        big = p["family"] == "raw"  # drawn larger and on top: SnapKV shares its prefill and often its point
        ax.scatter(p[x], p[y], color=c, marker=_marker(p["ratio"]), s=90 if big else 46, label=p["method"],
                   zorder=2.5 if big else 3, edgecolors="white" if not big else c, linewidths=0.5)
        if cold_x and p.get(cold_x) is not None and p[cold_x] != p[x]:
            ax.scatter(p[cold_x], p[y], facecolors="none", edgecolors=c, marker=_marker(p["ratio"]), s=46, zorder=3)
            ax.plot([p[x], p[cold_x]], [p[y], p[y]], color=c, linestyle=":", linewidth=1, zorder=2)


def _save(fig, axes, path: Path, plt) -> Path:
    """One legend on the right for every panel, then the PNG."""
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="center right", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1 - 1.8 / fig.get_figwidth(), 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def accuracy_vs_ttft(panels: Sequence[tuple[str, str, Sequence[dict]]], path: Path) -> Path:
    """panels: (title, y label, points with ttft_s / ttft_cold_s / accuracy)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels) + 1.8, 4.2), squeeze=False)
    for ax, (title, ylabel, pts) in zip(axes[0], panels):
        _scatter(ax, pts, "ttft_s", "accuracy", "ttft_cold_s")
        ax.set_xscale("log")
        _plain_log_ticks(ax)
        ax.set(title=title, xlabel="median time to first token, s (log; hollow: compression included)", ylabel=ylabel)
        ax.grid(alpha=0.3)
    return _save(fig, axes[0], path, plt)


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
    return _save(fig, axes[0], path, plt)


def accuracy_vs_length(title: str, series: Sequence[dict], path: Path) -> Path:
    """One panel per method family (lines overlap otherwise), raw in each as the reference.

    series: dicts with method, family, ratio, lengths, accuracy (lists; None where the method could not run).
    """
    plt = _pyplot()
    styles = {None: "-", 4: "-", 8: "--", 16: ":"}
    raw = [s for s in series if s["family"] == "raw"]
    families = [f for f in COLOURS if f != "raw" and any(s["family"] == f for s in series)]
    fig, axes = plt.subplots(1, len(families), figsize=(2.9 * len(families) + 1.8, 3.6), sharey=True, squeeze=False)
    lengths = sorted({x for s in series for x in s["lengths"]})
    for ax, fam in zip(axes[0], families):
        for s in raw + [s for s in series if s["family"] == fam]:
            pts = [(x, y) for x, y in zip(s["lengths"], s["accuracy"]) if y is not None]
            if pts:
                ax.plot(*zip(*pts), color=COLOURS.get(s["family"], "#7f7f7f"), linestyle=styles.get(s["ratio"], "-."),
                        marker=_marker(s["ratio"]), label=s["method"], alpha=0.45 if s["family"] == "raw" else 1.0)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [_length_label(x) for x in lengths])
        ax.xaxis.set_minor_formatter(plt.NullFormatter())
        ax.set(title=fam, xlabel="context, tokens", ylim=(-5, 105))
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy %")
    fig.suptitle(title)
    return _save(fig, axes[0], path, plt)
