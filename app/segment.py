"""Cutting cleaned text into segments of at most ~512 tokens.

Why 512: it is the default encoder's window (a segment is encoded in one
window, never split mid-thought across two), the size of the chunks the
paper's EXPAND loop numbers and re-inserts, and small enough that a cited
segment is a passage a user can read.

How: the text is split at the strongest bound that makes pieces fit:
paragraphs (blank lines), then sentences, then lines, then words; a piece
with no bound at all (a base64 blob, a run of text whose spaces were lost in
extraction) is hard-cut at the longest prefix that fits. The pieces are then
packed greedily into segments of roughly equal size (a 600-token page becomes
two ~300-token segments, not 512 + 88), and every segment's token count is
measured exactly on its final text. Segments never cross a page: a citation
names one page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

DEFAULT_MAX_TOKENS = 512

CountTokens = Callable[[str], int]

# Each bound's match ends where the next piece starts, so pieces keep their
# trailing whitespace and tile the text with no gap.
_BOUNDS: tuple[re.Pattern[str], ...] = (
    re.compile(r"\n[ \t]*\n\s*"),  # paragraph
    re.compile(r"[.!?…][\"'”’)\]]*\s+"),  # sentence end (plus closing quotes/brackets)
    re.compile(r"\n\s*"),  # line
    re.compile(r"\s+"),  # word
)

Span = tuple[int, int, int]  # (start, end, n_tokens)


def _hard_cut(text: str, start: int, end: int, count: CountTokens, max_tokens: int) -> list[Span]:
    """Pieces of text[start:end] (which has no usable bound) of <= max_tokens each,
    each the longest prefix that fits (binary search on the character length)."""
    out: list[Span] = []
    while start < end:
        n = count(text[start:end])
        if n <= max_tokens:
            out.append((start, end, n))
            break
        lo, hi = 1, end - start  # lo always fits (one character is at most a few tokens)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count(text[start : start + mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        out.append((start, start + lo, count(text[start : start + lo])))
        start += lo
    return out


def _pieces(text: str, start: int, end: int, count: CountTokens, max_tokens: int, level: int = 0) -> list[Span]:
    """text[start:end] as consecutive pieces that each fit, split at the
    strongest bound (from ``level`` down) that divides an oversized piece."""
    n = count(text[start:end])
    if n <= max_tokens:
        return [(start, end, n)]
    while level < len(_BOUNDS):
        cuts = [m.end() for m in _BOUNDS[level].finditer(text, start, end) if start < m.end() < end]
        if cuts:
            out: list[Span] = []
            for a, b in zip([start, *cuts], [*cuts, end]):
                out += _pieces(text, a, b, count, max_tokens, level + 1)
            return out
        level += 1
    return _hard_cut(text, start, end, count, max_tokens)


def _strip(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _pack(pieces: list[Span], max_tokens: int) -> list[list[Span]]:
    """Group consecutive pieces into segments of about total/ceil(total/max)
    tokens each, none (by the pieces' own counts) over max_tokens."""
    total = sum(n for _, _, n in pieces)
    target = total / max(1, math.ceil(total / max_tokens))
    groups: list[list[Span]] = []
    cur: list[Span] = []
    cur_n = 0
    for piece in pieces:
        n = piece[2]
        if cur and (cur_n + n > max_tokens or cur_n + n / 2 > target):
            groups.append(cur)
            cur, cur_n = [], 0
        cur.append(piece)
        cur_n += n
    if cur:
        groups.append(cur)
    return groups


def segment_text(text: str, count_tokens: CountTokens, max_tokens: int = DEFAULT_MAX_TOKENS) -> list[Span]:
    """(char_start, char_end, n_tokens) of each segment of ``text``.

    Spans are stripped of surrounding whitespace, so ``text[start:end]`` is
    the segment's text exactly, and ``n_tokens`` is counted on that text.
    Whitespace-only text gives no segment.
    """
    if max_tokens < 8:
        raise ValueError(f"max_tokens must be at least 8, got {max_tokens}")
    a, b = _strip(text, 0, len(text))
    if a == b:
        return []
    out: list[Span] = []
    stack = _pack(_pieces(text, a, b, count_tokens, max_tokens), max_tokens)
    stack.reverse()
    while stack:
        group = stack.pop()
        s, e = _strip(text, group[0][0], group[-1][1])
        if s == e:
            continue
        n = count_tokens(text[s:e])
        if n > max_tokens and len(group) > 1:
            # joining pieces changed the count (tokenizer merges across a
            # bound); halve the group and measure each half again
            half = len(group) // 2
            stack += [group[half:], group[:half]]
            continue
        out.append((s, e, n))
    return out
