"""app.ingest and app.segment: clean-up, formats, segmentation, failures, real PDFs.

No model: token counts come from the fake compressor's counter (words and
punctuation) or the tiny tokenizer; the real PDFs are Debian's.
"""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest
from pypdf import PdfReader, PdfWriter

import data
from app.ingest import (
    IngestError,
    IngestLimits,
    clean_text,
    decode_text,
    file_type,
    html_to_text,
    parse_document,
)
from app.segment import segment_text

COUNT = data.FakeCompressor().count_tokens
KNOWN = "There is a large collection of functions of the form"  # R-intro.pdf, "3.1 Intrinsic attributes"


def pdf_page_texts(path: Path) -> list[str]:
    """Each page's text as pypdf gives it, cleaned the way ingestion cleans it."""
    return [clean_text(p.extract_text() or "") for p in PdfReader(path).pages]


@pytest.fixture(scope="module")
def r_intro(r_intro_pdf):
    return parse_document(r_intro_pdf, COUNT)


@pytest.fixture(scope="module")
def r_intro_pages(r_intro_pdf):
    return pdf_page_texts(r_intro_pdf)


# ------------------------------------------------------------------ clean-up
def test_clean_text_joins_hyphenation_and_normalises_whitespace():
    raw = "The statis-\ntical  environ-\n   ment\r\nis \ufb01ne\u00a0here.  \n\n\n\nNew para\u00ad graph\x0c end"
    assert clean_text(raw) == "The statistical environment\nis fine here.\n\nNew para graph\nend"


def test_clean_text_keeps_real_hyphens_and_indentation_when_asked():
    assert clean_text("R-\nIntro and x-\n2") == "R-\nIntro and x-\n2"  # capital / digit after: not a broken word
    code = "Example:\n\n    def f():\n        return 1\n"
    assert clean_text(code, keep_indent=True) == "Example:\n\n    def f():\n        return 1"
    assert clean_text(code) == "Example:\n\ndef f():\nreturn 1"


def test_html_text_only_no_script_or_style():
    html = """<html><head><title>My page</title><style>p {color: red}</style>
    <script>var secret = "do not index";</script></head>
    <body><h1>Heading</h1><p>Caf&eacute; &amp; <b>bold</b> text<br>next line</p>
    <noscript>enable js</noscript><pre>x =  1
  y</pre><table><tr><td>a</td><td>b</td></tr></table></body></html>"""
    text = clean_text(html_to_text(html))
    assert "secret" not in text and "color" not in text and "enable js" not in text
    assert text.startswith("My page\n\nHeading\n\nCafé & bold text\nnext line")
    assert "x = 1\ny" in text  # <pre> keeps its lines
    assert "a b" in text


def test_decode_text_encodings_and_binary():
    assert decode_text(codecs.BOM_UTF16_LE + "héllo".encode("utf-16-le")) == "héllo"
    assert decode_text("naïve".encode("cp1252")) == "naïve"
    assert decode_text(codecs.BOM_UTF8 + b"x") == "x"
    with pytest.raises(IngestError, match="binary"):
        decode_text(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(IngestError, match="binary"):
        decode_text(bytes(range(1, 9)) * 100)


def test_file_types():
    assert [file_type(n) for n in ["a.PDF", "b.md", "c.rst", "d.htm", "e.txt", "f.docx", "g"]] == [
        "pdf", "md", "rst", "html", "txt", "docx", None]
    assert [file_type(n) for n in ["a.py", "b.TS", "c.csv", "d.json", "e.yaml", "f.exe", "g.PNG"]] == [
        "code", "code", "csv", "json", "code", None, "image"]
    assert [file_type(n) for n in ["a.pptx", "b.xlsx", "c.odt", "d.odp", "e.ods", "f.epub", "g.eml", "h.mbox",
                                   "i.msg", "j.tiff", "k.doc"]] == [
        "pptx", "xlsx", "odt", "odp", "ods", "epub", "eml", "mbox", "msg", "image", None]


# ---------------------------------------------------------------- segmenting
def check_spans(text: str, spans, max_tokens: int, count=COUNT) -> None:
    prev_end = 0
    for s, e, n in spans:
        seg = text[s:e]
        assert seg == seg.strip() and seg
        assert s >= prev_end
        assert n == count(seg) <= max_tokens
        prev_end = e
    # nothing but whitespace is left out
    covered = "".join(text[s:e] for s, e, _ in spans)
    assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", text)


def test_segments_cut_on_paragraphs_when_they_fit():
    paras = [data.prose(i, paragraphs=1, sentences=3).strip() for i in range(6)]
    text = "\n\n".join(paras)
    spans = segment_text(text, COUNT, max_tokens=COUNT(paras[0]) + COUNT(paras[1]) + 5)
    check_spans(text, spans, 10_000)
    for s, e, _ in spans:  # every cut is at a paragraph bound
        assert text[s:e].split("\n\n")[0] in paras


def test_segments_cut_on_sentences_inside_a_long_paragraph_and_are_balanced():
    text = data.prose(7, paragraphs=1, sentences=40)
    spans = segment_text(text, COUNT, max_tokens=100)
    check_spans(text, spans, 100)
    for s, e, _ in spans:
        assert text[s:e].endswith(".")  # sentence bounds
    sizes = [n for _, _, n in spans]
    assert max(sizes) - min(sizes) < 40, sizes  # balanced, no tiny tail


def test_monster_sentence_is_hard_cut():
    blob = "x" * 3000  # no bound at all: one token per char for this counter? no: one word
    count = lambda t: len(t) // 3 + 1  # noqa: E731 - ~3 chars per token
    text = "Intro sentence. " + blob + " tail words here."
    spans = segment_text(text, count, max_tokens=64)
    check_spans(text, spans, 64, count)
    assert len(spans) >= 3000 // (64 * 3)


def test_segment_with_the_real_tokenizer_counts_exactly():
    import tiny

    tok = tiny.tokenizer("qwen")
    count = lambda t: len(tok(t, add_special_tokens=False)["input_ids"])  # noqa: E731
    text = "\n\n".join(data.prose(i, paragraphs=2, sentences=5) for i in range(5))
    spans = segment_text(text, count, max_tokens=48)
    check_spans(text, spans, 48, count)


def test_empty_text_has_no_segments():
    assert segment_text("  \n\n \t", COUNT) == []


# ------------------------------------------------------------------ failures
def write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def one_page_pdf(src: Path, dest: Path, page: int = 20, algorithm: str = "RC4-128", **encrypt) -> Path:
    w = PdfWriter()
    w.add_page(PdfReader(src).pages[page])
    if encrypt:
        w.encrypt(algorithm=algorithm, **encrypt)
    with open(dest, "wb") as f:
        w.write(f)
    return dest


def test_encrypted_pdf_is_an_error_but_owner_only_encryption_opens(tmp_path, r_intro_pdf):
    locked = one_page_pdf(r_intro_pdf, tmp_path / "locked.pdf", user_password="secret", owner_password="o")
    with pytest.raises(IngestError) as e:
        parse_document(locked, COUNT)
    assert e.value.status == "error" and "encrypted" in e.value.reason and "password" in e.value.reason
    opened = parse_document(one_page_pdf(r_intro_pdf, tmp_path / "perm.pdf", user_password="", owner_password="o"), COUNT)
    assert any(KNOWN in s.text for s in opened.segments)
    # AES (what current tools write) opens too: pypdf decrypts it with `cryptography`.
    aes = one_page_pdf(r_intro_pdf, tmp_path / "aes.pdf", algorithm="AES-256", user_password="", owner_password="o")
    assert any(KNOWN in s.text for s in parse_document(aes, COUNT).segments)


def test_pdf_without_text_layer_says_scanned(tmp_path):
    w = PdfWriter()
    for _ in range(3):
        w.add_blank_page(612, 792)
    with open(tmp_path / "scan.pdf", "wb") as f:
        w.write(f)
    with pytest.raises(IngestError) as e:
        parse_document(tmp_path / "scan.pdf", COUNT, limits=IngestLimits(ocr=False))
    assert e.value.status == "error" and "no text layer (scanned?)" in e.value.reason
    assert "OCR is turned off" in e.value.reason  # with OCR on, tests/test_ocr.py


def test_unreadable_empty_binary_oversized_and_page_capped(tmp_path, r_intro_pdf):
    cases = {
        write(tmp_path / "garbage.pdf", "%PDF-1.4 this is not a pdf"): ("error", "unreadable PDF"),
        write(tmp_path / "cut.pdf", r_intro_pdf.read_bytes()[:20_000]): ("error", "unreadable PDF"),
        write(tmp_path / "empty.txt", b""): ("skipped", "empty file"),
        write(tmp_path / "blank.md", "  \n\n  \n"): ("skipped", "no text"),
        write(tmp_path / "image.txt", b"\x89PNG\r\n\x1a\n" + bytes(2000)): ("error", "binary content"),
        write(tmp_path / "big.txt", "word " * 300_000): ("skipped", "over the 1 MB limit"),
    }
    limits = IngestLimits(max_file_mb=1)
    for path, (status, reason) in cases.items():
        with pytest.raises(IngestError) as e:
            parse_document(path, COUNT, limits=limits)
        assert (e.value.status, path.name) == (status, path.name) and reason in e.value.reason, (path.name, e.value.reason)
    with pytest.raises(IngestError) as e:
        parse_document(r_intro_pdf, COUNT, limits=IngestLimits(max_pages=50))
    assert e.value.status == "skipped" and "113 pages, over the 50-page limit" in e.value.reason


def test_text_formats_give_document_spans(tmp_path):
    text = data.prose(1, paragraphs=6, sentences=6)
    doc = parse_document(write(tmp_path / "notes.md", text), COUNT, max_tokens=80)
    cleaned = clean_text(text, keep_indent=True)
    assert doc.page_count is None and doc.info.type == "md" and len(doc.segments) > 2
    for i, s in enumerate(doc.segments):
        assert s.ordinal == i and s.page is None
        assert cleaned[s.char_start:s.char_end] == s.text  # spans index the document's cleaned text


# ------------------------------------------------------------------ real PDFs
def test_r_intro_segment_pages_match_the_pdf(r_intro, r_intro_pages):
    """Every segment's (page, span) points at its text in pypdf's own page text,
    and the known sentence is on the page pypdf finds it on."""
    assert r_intro.page_count == len(r_intro_pages) == 113
    pages = [s.page for s in r_intro.segments]
    assert pages == sorted(pages) and set(pages) <= set(range(1, 114))
    for s in r_intro.segments:
        assert r_intro_pages[s.page - 1][s.char_start:s.char_end] == s.text
        assert s.n_tokens <= 512
    expected = [i + 1 for i, t in enumerate(r_intro_pages) if KNOWN in t]
    assert len(expected) == 1
    found = [s.page for s in r_intro.segments if KNOWN in s.text]
    assert found == expected  # physical page 21 (printed page number 15)
    # hyphenation joined: pypdf gives "excep-\ntions" on the "--debugger" page
    assert any("exceptions are valgrind" in s.text for s in r_intro.segments)
