"""Turning what a user typed into an FTS5 MATCH expression.

Questions arrive as natural language ("what's the default port?"), and raw
FTS5 syntax would reject the apostrophe or treat NOT/OR/NEAR as operators.
So by default every word becomes a quoted term: "any" ORs them (bm25 then
ranks segments that hold more and rarer terms first, which is what the
assistant's skim wants), "all" ANDs them, "phrase" asks for the exact
sequence, and "raw" passes FTS5 syntax through for callers who mean it.
"""

from __future__ import annotations

import re
from typing import Literal

MatchMode = Literal["any", "all", "phrase", "raw"]

_WORD = re.compile(r"\w+", re.UNICODE)


def match_expression(query: str, mode: MatchMode = "any") -> str | None:
    """The MATCH argument for ``query``, or None when it holds no searchable word."""
    if mode == "raw":
        return query.strip() or None
    words = _WORD.findall(query)
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]  # \w+ holds no double quote to escape
    if mode == "any":
        return " OR ".join(quoted)
    if mode == "all":
        return " AND ".join(quoted)
    if mode == "phrase":
        return '"' + " ".join(words) + '"'
    raise ValueError(f"unknown match mode {mode!r} (any, all, phrase, raw)")
