"""Years of downloads: broken, hostile and odd files in one folder. Each gets a clear row; the rest is indexed.

Plus a fuzz test (hypothesis) over the PDF and text parsers: whatever the
bytes, parsing ends in segments or an IngestError with a reason, never
another exception, within a bounded time.
"""

import io
import os
import subprocess
import sys
import zipfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pypdf import PdfReader, PdfWriter
from pypdf.generic import NameObject

import data
from app.indexer import IndexerConfig
from app.ingest import IngestError, IngestLimits, parse_document
from app.services import IndexingService
from latent_store import LatentStore
from test_ingest import one_page_pdf

GOOD = "The Zorblax cluster listens on port 7431.\n\nBackups run nightly to the Lisbon vault.\n"


def count(text: str) -> int:
    return len(text.split())


def nested_pdf(dest, depth: int = 20000):
    """A one-page PDF whose catalog carries an array nested ``depth`` deep (a recursion bomb).

    pypdf cannot write such an object (it recurses too), so a placeholder is
    swapped for the brackets in the written bytes; the xref offsets go stale,
    which readers must survive too."""
    w = PdfWriter()
    w.add_blank_page(200, 200)
    w._root_object[NameObject("/Deep")] = NameObject("/PLACEHOLDER")
    buf = io.BytesIO()
    w.write(buf)
    dest.write_bytes(buf.getvalue().replace(b"/PLACEHOLDER", b"[" * depth + b"]" * depth))
    return dest


def zip_bomb(dest, inner: str, mb: int = 64):
    """A zip named like an Office file or e-book whose one member inflates ~1000x (zeros)."""
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr(inner, b"\0" * (mb << 20))
    return dest


def office_samples(folder) -> dict[str, bytes]:
    """Small, valid files of each zip format, written by the libraries that read them (fuzz seeds)."""
    import docx
    import openpyxl
    import pptx
    from odf.opendocument import OpenDocumentText
    from odf.text import P

    d = docx.Document()
    d.add_heading("Install", 1)
    d.add_paragraph("Run the installer, then restart.")
    d.save(folder / "seed.docx")
    wb = openpyxl.Workbook()
    wb.active.append(["Name", "Age"])
    wb.active.append(["Ann", 31])
    wb.save(folder / "seed.xlsx")
    deck = pptx.Presentation()
    slide = deck.slides.add_slide(deck.slide_layouts[1])
    slide.shapes.title.text = "Budget"
    slide.placeholders[1].text = "Travel is cut by a third."
    deck.save(folder / "seed.pptx")
    odt = OpenDocumentText()
    odt.text.addElement(P(text="The vault opens at nine."))
    odt.save(str(folder / "seed.odt"))
    with zipfile.ZipFile(folder / "seed.epub", "w") as z:
        z.writestr("mimetype", "application/epub+zip")
        z.writestr("META-INF/container.xml", '<container xmlns="urn:oasis:names:tc:opendocument:xmlns:container">'
                   '<rootfiles><rootfile full-path="c.opf"/></rootfiles></container>')
        z.writestr("c.opf", '<package xmlns="http://www.idpf.org/2007/opf"><manifest><item id="a" href="a.xhtml"/>'
                   '</manifest><spine><itemref idref="a"/></spine></package>')
        z.writestr("a.xhtml", "<html><body><h1>One</h1><p>The ferry leaves at noon.</p></body></html>")
    return {p.suffix: p.read_bytes() for p in folder.glob("seed.*")}


def mailbox_file(dest, messages: int):
    with open(dest, "w") as f:
        for i in range(messages):
            f.write(f"From sender{i}@example.org Mon Jan  1 00:00:00 2024\nFrom: sender{i}@example.org\n"
                    f"Subject: note {i}\n\nMessage number {i} of the mailbox.\n\n")
    return dest


def many_pages_pdf(src, dest, pages: int):
    """``pages`` pages, all sharing R-intro's page 21 resources: small file, lots of text."""
    reader = PdfReader(src)
    w = PdfWriter()
    page = reader.pages[20]
    for _ in range(pages):
        w.add_page(page)
    with open(dest, "wb") as f:
        w.write(f)
    return dest


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, r_intro_pdf):
    """A folder of bad files beside good ones, indexed once; returns {file name: document row}."""
    root = tmp_path_factory.mktemp("hostile")
    d = (root / "downloads").resolve()
    d.mkdir()
    pdf = r_intro_pdf.read_bytes()
    (d / "good.txt").write_text(GOOD)
    (d / "with spaces and ünïcödé — notes.md").write_text("# Notes\n\nThe vault door code is 5512.\n")
    (d / "new\nline.txt").write_text("A name with a newline is still a document.\n")
    (d / "truncated.pdf").write_bytes(pdf[: len(pdf) // 3])
    corrupt = bytearray(pdf)
    for i in range(2000, len(corrupt), 997):  # flip bytes all through the body
        corrupt[i] ^= 0x5A
    (d / "corrupted.pdf").write_bytes(bytes(corrupt))
    one_page_pdf(r_intro_pdf, d / "encrypted.pdf", user_password="secret", owner_password="o")
    nested_pdf(d / "nested.pdf")
    many_pages_pdf(r_intro_pdf, d / "thousand-pages.pdf", 1200)
    many_pages_pdf(r_intro_pdf, d / "too-many-pages.pdf", 2100)
    (d / "binary.txt").write_bytes(os.urandom(4096) + b"\x00" * 64)
    (d / "latin1.txt").write_bytes("Caf\xe9 cr\xe8me: the caf\xe9 opens at nine.\n".encode("latin-1"))
    (d / "empty.txt").write_bytes(b"")
    (d / "huge.txt").write_text("word " * 300_000)  # 1.5 MB, over the 1 MB cap below
    (d / "loop").mkdir()
    os.symlink(d / "loop", d / "loop" / "again")  # a symlink loop
    os.symlink(d / "good.txt", d / "link-to-good.txt")  # symlinks are not followed: no duplicate
    os.mkfifo(d / "pipe.txt")  # opening it for reading would block forever
    zip_bomb(d / "bomb.docx", "word/document.xml")
    zip_bomb(d / "bomb.epub", "OEBPS/chapter.xhtml")
    (d / "encrypted.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + os.urandom(4096))  # what Office writes
    seeds = office_samples(root)
    (d / "truncated.pptx").write_bytes(seeds[".pptx"][: len(seeds[".pptx"]) // 2])
    (d / "not-a-sheet.xlsx").write_text("Name,Age\nAnn,31\n")
    (d / "good.docx").write_bytes(seeds[".docx"])
    mailbox_file(d / "huge-mailbox.mbox", 2100)
    mailbox_file(d / "big-mailbox.mbox", 1500)
    (d / "broken.msg").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 600)

    comp = data.FakeCompressor()
    limits = IngestLimits(max_file_mb=1, max_pages=2000)
    with LatentStore(root / "store.sqlite") as store:
        svc = IndexingService.create(store, comp, [d], config=IndexerConfig(limits=limits))
        with svc:
            assert svc.indexer.wait_idle(600)
        rows = {os.path.basename(doc.path): doc for doc in store.list_documents()}
        assert store.integrity_check() == "ok"
    return rows


@pytest.mark.parametrize("name, status, reason", [
    ("truncated.pdf", "error", "unreadable PDF"),
    ("encrypted.pdf", "error", "encrypted PDF (password required)"),
    ("too-many-pages.pdf", "skipped", "2100 pages, over the 2000-page limit"),
    ("binary.txt", "error", "binary content"),
    ("empty.txt", "skipped", "empty file"),
    ("huge.txt", "skipped", "over the 1 MB limit"),
    ("bomb.docx", "skipped", "inflates 1,0"),
    ("bomb.epub", "skipped", "(zip bomb?)"),
    ("encrypted.docx", "error", "password-protected (encrypted) .docx"),
    ("truncated.pptx", "error", "not a valid .pptx (corrupted zip"),
    ("not-a-sheet.xlsx", "error", "not a valid .xlsx (corrupted zip"),
    ("huge-mailbox.mbox", "skipped", "mailbox has 2,100 messages, over the 2000-message limit"),
    ("broken.msg", "error", "unreadable .msg"),
])
def test_a_bad_file_is_a_row_with_its_reason(hostile, name, status, reason):
    doc = hostile[name]
    assert doc.status == status and reason in (doc.error or ""), (doc.status, doc.error)


@pytest.mark.parametrize("name", ["good.txt", "with spaces and ünïcödé — notes.md", "new\nline.txt", "latin1.txt",
                                  "thousand-pages.pdf", "good.docx", "big-mailbox.mbox"])
def test_the_good_and_the_odd_are_indexed(hostile, name):
    doc = hostile[name]
    assert doc.status == "indexed" and doc.n_segments > 0, (doc.status, doc.error)


def test_damaged_pdfs_end_as_a_row_either_way(hostile):
    for name in ("corrupted.pdf", "nested.pdf"):
        doc = hostile[name]
        assert doc.status in ("indexed", "error", "skipped"), doc
        assert doc.status == "indexed" or doc.error, doc


def test_links_loops_and_pipes_are_not_documents(hostile):
    assert "link-to-good.txt" not in hostile and "again" not in hostile
    assert hostile.get("pipe.txt") is None or hostile["pipe.txt"].status == "skipped"


def test_a_file_deleted_while_being_read_is_dropped(tmp_path):
    folder = (tmp_path / "docs").resolve()
    folder.mkdir()
    victim = folder / "victim.txt"
    victim.write_text(data.prose(1))
    (folder / "keeper.txt").write_text(GOOD)

    def delete_during_encode(texts):
        if victim.exists():
            victim.unlink()

    comp = data.FakeCompressor(on_compress=delete_during_encode)
    with LatentStore(tmp_path / "store.sqlite") as store:
        with IndexingService.create(store, comp, [folder]) as svc:
            assert svc.indexer.wait_idle(60)
            svc.sync.reconcile(folder)
            assert svc.indexer.wait_idle(60)
        rows = {os.path.basename(d.path): d.status for d in store.list_documents()}
        assert rows == {"keeper.txt": "indexed"}
        assert store.integrity_check() == "ok"


def test_a_file_rewritten_while_being_read_ends_with_its_last_content(tmp_path):
    folder = (tmp_path / "docs").resolve()
    folder.mkdir()
    target = folder / "draft.txt"
    target.write_text("First draft about the Zorblax cluster.\n")
    edits = iter(["Second draft: the cluster listens on port 7431.\n"])

    def rewrite(texts):
        text = next(edits, None)
        if text is not None:
            target.write_text(text)

    comp = data.FakeCompressor(on_compress=rewrite)
    with LatentStore(tmp_path / "store.sqlite") as store:
        with IndexingService.create(store, comp, [folder]) as svc:
            assert svc.indexer.wait_idle(60)
        [doc] = store.list_documents()
        assert doc.status == "indexed"
        assert [s.text for s in store.get_segments(doc.id)] == ["Second draft: the cluster listens on port 7431."]


def test_a_thousand_page_pdf_is_read_in_bounded_memory(tmp_path, r_intro_pdf):
    """Pages are streamed: peak RSS for 1,200 pages stays within a small margin of the RSS for 100 pages."""
    small = many_pages_pdf(r_intro_pdf, tmp_path / "p100.pdf", 100)
    big = many_pages_pdf(r_intro_pdf, tmp_path / "p1200.pdf", 1200)
    code = ("import resource, sys; from app.ingest import parse_document; "
            "d = parse_document(sys.argv[1], lambda t: len(t.split())); "
            "print(len(d.segments), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")

    def peak(path):
        out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        segs, kb = out.stdout.split()
        return int(segs), int(kb)

    (s1, kb1), (s2, kb2) = peak(small), peak(big)
    assert s2 >= 10 * s1  # the big one really has 12x the text
    assert kb2 < kb1 + 150_000, (kb1, kb2)  # < 150 MB more for 12x the pages: the text is not all held at once


def test_a_giant_page_is_skipped_with_the_page_and_the_limit(tmp_path, r_intro_pdf):
    from pypdf.generic import StreamObject

    reader = PdfReader(r_intro_pdf)
    w = PdfWriter()
    page = w.add_page(reader.pages[20])
    giant = StreamObject()
    giant.set_data(page.get_contents().get_data() * 60)  # one page drawing its text 60 times over
    page.replace_contents(giant)
    w.add_page(reader.pages[21])
    with open(tmp_path / "giant.pdf", "wb") as f:
        w.write(f)
    with pytest.raises(IngestError) as e:
        parse_document(tmp_path / "giant.pdf", count, limits=IngestLimits(max_page_chars=100_000))
    assert e.value.status == "skipped" and "page 1 has" in e.value.reason and "100,000-character page limit" in e.value.reason
    # the same file within a higher limit is read whole
    assert parse_document(tmp_path / "giant.pdf", count, limits=IngestLimits(max_page_chars=10_000_000)).segments


def test_a_long_text_file_is_not_a_giant_page(tmp_path):
    (tmp_path / "long.txt").write_text("A sentence of a long plain text file. " * 5000)
    assert parse_document(tmp_path / "long.txt", count, limits=IngestLimits(max_page_chars=1000)).segments


# ------------------------------------------------------------------ fuzz
def parses_or_gives_a_reason(path) -> None:
    """Text in non-empty segments, or an IngestError with a status and a reason: never anything else."""
    try:
        doc = parse_document(path, count, limits=IngestLimits(ocr=False))
    except IngestError as e:
        assert e.reason and e.status in ("error", "skipped")
    else:
        assert all(s.text.strip() for s in doc.segments)


SEEDS = [b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", b"plain text\n",
         b"<html><body><p>x</p></body></html>"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.sampled_from(SEEDS), tail=st.binary(max_size=2048), suffix=st.sampled_from([".pdf", ".txt", ".html"]))
def test_any_bytes_parse_or_fail_with_a_reason(tmp_path, seed, tail, suffix):
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(seed + tail)
    parses_or_gives_a_reason(path)


@pytest.fixture(scope="module")
def office_seeds(tmp_path_factory):
    return office_samples(tmp_path_factory.mktemp("seeds"))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".docx", ".xlsx", ".pptx", ".odt", ".epub"]), seed=st.integers(0, 2**32 - 1),
       flips=st.integers(1, 40), cut=st.floats(0.05, 1.0))
def test_damaged_office_files_parse_or_fail_with_a_reason(tmp_path, office_seeds, suffix, seed, flips, cut):
    """Valid files of each zip format with bytes flipped and their tails cut: a row with its reason, or text."""
    import random

    raw = bytearray(office_seeds[suffix])
    rng = random.Random(seed)
    for _ in range(flips):
        raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(bytes(raw[: max(1, int(len(raw) * cut))]))
    parses_or_gives_a_reason(path)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(suffix=st.sampled_from([".eml", ".mbox", ".msg"]), body=st.binary(max_size=4096))
def test_any_bytes_as_mail_parse_or_fail_with_a_reason(tmp_path, suffix, body):
    head = {".eml": b"From: a@b.c\nSubject: x\n\n", ".mbox": b"From a@b.c Mon Jan  1 00:00:00 2024\nSubject: x\n\n",
            ".msg": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"}[suffix]
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(head + body)
    parses_or_gives_a_reason(path)


def test_an_office_file_over_the_unpacked_limit_is_skipped(tmp_path, office_seeds):
    (tmp_path / "a.xlsx").write_bytes(office_seeds[".xlsx"])
    with pytest.raises(IngestError) as e:
        parse_document(tmp_path / "a.xlsx", count, limits=IngestLimits(max_unzipped_mb=0.001))
    assert e.value.status == "skipped" and "over the 0.001 MB limit (zip bomb?)" in e.value.reason


def test_an_unreadable_file_is_an_error_row_with_the_reason(tmp_path, monkeypatch):
    """Real permissions where we are not root; as root (CI containers) nothing is unreadable,
    so the OS's refusal is raised where the parser opens the file."""
    path = tmp_path / "private.txt"
    path.write_text("Not for the indexer.\n")
    if os.geteuid() == 0:
        real_open = open

        def refusing_open(file, *a, **kw):
            if os.fspath(file) == str(path):
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(file, *a, **kw)

        monkeypatch.setattr("builtins.open", refusing_open)
    else:
        path.chmod(0)
    with pytest.raises(IngestError) as e:
        parse_document(path, count)
    assert e.value.status == "error" and "permission denied" in e.value.reason
