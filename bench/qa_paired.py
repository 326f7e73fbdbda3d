"""Each condition of bench/eval_qa.py FAQ reports against a baseline condition, paired question by question.

Conditions of one run answer the same questions, so the difference per question removes what they share
(a hard question is hard for all): the mean change and its standard error are what to read, not two means
side by side. Rag (bm25's passage as text, no latents) is the bar.

    python bench/qa_paired.py bench/results/2026-12-07-faq-baselines/qa-n4.json qa-n8.json qa-n16.json
    python bench/qa_paired.py --base none REPORT.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Sequence


def mean_se(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample SD / sqrt n) of paired differences."""
    m = statistics.mean(xs)
    return m, (statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan"))


def paired_rows(report: dict, base: str = "rag", key: str = "f1") -> list[tuple[str, int, float, float, float]]:
    """(condition, questions, mean %, change vs base in points, its SE) for every condition of the FAQ measure."""
    recs = [r for r in report["records"] if r.get("measure") == "faq"]
    by = {(r["condition"], r["id"]): 100 * r[key] for r in recs}
    ids = sorted({r["id"] for r in recs})
    conds = list(dict.fromkeys(r["condition"] for r in recs))
    if base not in conds:
        raise SystemExit(f"no {base!r} condition in the report; it has {', '.join(conds)}")
    out = []
    for c in conds:
        both = [i for i in ids if (c, i) in by and (base, i) in by]
        d = [by[(c, i)] - by[(base, i)] for i in both]
        m, se = mean_se(d) if d else (float("nan"), float("nan"))
        out.append((c, len(both), statistics.mean(by[(c, i)] for i in both), m, se))
    return out


def table(reports: Sequence[tuple[str, dict]], base: str = "rag", key: str = "f1") -> str:
    lines = [f"| report | N | condition | questions | {key.upper()} % | change vs {base} (points) | SE |",
             "|---|---|---|---|---|---|---|"]
    for name, rep in reports:
        ratio = rep.get("compressor", {}).get("ratio", "")
        for c, n, m, d, se in paired_rows(rep, base, key):
            change = "-" if c == base else f"{d:+.1f}"
            lines.append(f"| {name} | {ratio} | {c} | {n} | {m:.1f} | {change} | {'-' if c == base else f'{se:.1f}'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reports", nargs="+", type=Path, help="bench/eval_qa.py --out REPORT (its .json)")
    p.add_argument("--base", default="rag", help="the condition every other is compared with (default rag)")
    p.add_argument("--metric", default="f1", choices=("f1", "em"))
    args = p.parse_args(argv)
    reports = [(r.stem, json.loads(r.with_suffix(".json").read_text())) for r in args.reports]
    print(table(reports, args.base, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
