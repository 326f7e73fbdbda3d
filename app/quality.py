"""What a small decoder gets wrong in ways a reader can check: listing pages read as content, and replies
that are not answers.

Both checks are plain text rules, not models: they must hold for any
decoder and any document, cost nothing beside the answer, and be easy to
test. The rules are narrow on purpose: a false alarm hides a real answer.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

# A line of a table of contents or an index: dot leaders ("Intro . . . . 12", "Intro ....... 12"), or a few
# words that end in page numbers ("eye, 669", "matrix functions 312, 318").
_LEADERS = re.compile(r"(?:\.\s?){4,}|…{2,}|_{4,}")
_ENDS_IN_PAGES = re.compile(r"(?:[\s,]\d{1,4}(?:[-–]\d{1,4})?)+\s*$")


def listing_share(text: str) -> float:
    """The share of a passage's lines that read like a table of contents or an index (0 for prose)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        return 0.0
    hits = sum(1 for ln in lines if _LEADERS.search(ln) or (_ENDS_IN_PAGES.search(ln) and len(ln.split()) <= 8))
    return hits / len(lines)


def is_listing(text: str, min_lines: int = 4, share: float = 0.5) -> bool:
    """A contents or index page: at least ``min_lines`` lines, at least half of them entries with page numbers.

    Such a page holds every term of a manual and so matches any question word for word (bm25 ranks it
    first), yet answers none: it must not take the place of content among the passages read as text.
    """
    return sum(1 for ln in text.splitlines() if ln.strip()) >= min_lines and listing_share(text) >= share


# --- replies that are not answers ------------------------------------------------------------------
_PROMPT_WORDS = re.compile(r"^(?:answer|question|reply|passages?|document|text)\s*:?$", re.I)
_HEADERS = ("document:", "question:", "passages quoted from the documents", "read the documents below")
_QUOTE_LABEL = re.compile(r'^\[\d+\]\s+[^:\n]*:\s*"')  # [2] octave.pdf, page 677: "Chapter 22 ...


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def junk_reason(text: str, names: Iterable[str] = ()) -> str:
    """Why a reply is not an answer ('' where it may be one).

    - empty, or only punctuation;
    - only prompt words ("Answer:", "Answer: Answer:");
    - a copied prompt header ("Document: R-exts.pdf", "Question: ...", a quoted passage's label
      "[2] octave.pdf, page 677: ..."): the model went on copying its prompt;
    - only a document's file name ("R-exts.py" for R-exts.pdf): the model named a source, not an answer;
    - the same line three times or more, or one short phrase making up most of it: a loop.
    """
    t = text.strip()
    if not _words(t):
        return "empty"
    tokens = t.split()
    if all(_PROMPT_WORDS.match(tok) for tok in tokens):
        return "only the prompt's own words"
    if t.lower().startswith(_HEADERS) or _QUOTE_LABEL.match(t):
        return "a copied prompt header"
    stems = {re.sub(r"\.\w{1,5}$", "", n.rsplit("/", 1)[-1]).lower() for n in names}
    if re.sub(r"\.\w{1,5}$", "", t.rstrip(".")).lower() in stems - {""}:
        return "only a document's name"
    lines = [ln.strip().lower() for ln in t.splitlines() if ln.strip()]
    if lines and Counter(lines).most_common(1)[0][1] >= 3:
        return "the same line over and over"
    w = _words(t)
    for n in (1, 2, 3, 4):
        grams = Counter(tuple(w[i : i + n]) for i in range(0, len(w) - n + 1, n))
        if len(w) >= 6 and grams and grams.most_common(1)[0][1] * n >= 0.6 * len(w) and grams.most_common(1)[0][1] >= 3:
            return "one phrase over and over"
    return ""


def fallback_text(where: str | None, passage: str | None, limit: int = 600) -> str:
    """What the user reads in place of a reply that is not an answer: that, and the best passage quoted."""
    head = "No answer could be formed from the passages"
    if not passage:
        return head + "."
    body = " ".join(passage.split())
    if len(body) > limit:
        body = body[:limit].rsplit(" ", 1)[0] + " …"
    return f"{head}. The passage that matches your question best, from {where}:\n\n> {body}"


__all__ = ["listing_share", "is_listing", "junk_reason", "fallback_text"]
