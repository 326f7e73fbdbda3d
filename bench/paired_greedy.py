"""Greedy reconstruction of two checkpoints, paired passage by passage: is the change more than noise?

    python bench/paired_greedy.py eval-a.json eval-b.json

Both files are ``python -m lclm_core.train.trainer eval --out`` reports on the same held-out
passages (their ``passages_sha256`` must agree). A greedy copy that slips early misaligns the rest,
so one passage scores near 0 or near 1 and a mean over 64 moves by points between checkpoints; the
paired standard error says how much of a change between two reports that noise accounts for.
Prints a markdown table: each report's mean and SE, then the paired change, its SE and how many
passages went up and down.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def load(path: Path) -> dict:
    r = json.loads(path.read_text())
    if not r.get("recon_greedy_each"):
        raise SystemExit(f"{path} has no per-passage greedy scores: re-run `trainer eval --out` (it writes them)")
    return r


def mean_se(xs: list[float]) -> tuple[float, float]:
    """Mean and standard error, as bench/assistant.py --paired computes them."""
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return statistics.mean(xs), se


def paired(a: dict, b: dict) -> dict:
    """Mean and SE of each side, and of b - a over the same passages (percentage points)."""
    if a.get("passages_sha256") != b.get("passages_sha256"):
        raise SystemExit("the two reports read different passages (passages_sha256 differs): no pairing")
    ea, eb = a["recon_greedy_each"], b["recon_greedy_each"]
    d = [100 * (y - x) for x, y in zip(ea, eb, strict=True)]
    (ma, sa), (mb, sb), (md, sd) = mean_se([100 * x for x in ea]), mean_se([100 * x for x in eb]), mean_se(d)
    return {"n": len(d), "a": ma, "a_se": sa, "b": mb, "b_se": sb, "change": md, "change_se": sd,
            "up": sum(x > 0 for x in d), "down": sum(x < 0 for x in d)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path, help="the baseline's eval report")
    p.add_argument("b", type=Path, help="the candidate's eval report")
    args = p.parse_args(argv)
    r = paired(load(args.a), load(args.b))
    print("| passages | A greedy exact (SE) | B greedy exact (SE) | B - A (paired SE) | passages up / down |")
    print("|---|---|---|---|---|")
    print(f"| {r['n']} | {r['a']:.1f}% ({r['a_se']:.1f}) | {r['b']:.1f}% ({r['b_se']:.1f}) | "
          f"{r['change']:+.1f} ({r['change_se']:.1f}) | {r['up']} / {r['down']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
