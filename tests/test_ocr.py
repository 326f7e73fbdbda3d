"""OCR of scanned pages and images, through Debian's Tesseract.

The scanned page is made as the issue asks: a page of R-intro.pdf rendered to an image and wrapped as an
image-only PDF, so its true text is the original page's text layer.
"""

from __future__ import annotations

import shutil

import pypdfium2
import pytest
from PIL import Image
from pypdf import PdfReader, PdfWriter

import data
from app import ocr
from app.indexer import IndexerConfig
from app.ingest import IngestError, parse_document
from app.services import IndexingService
from latent_store import LatentStore

COUNT = data.FakeCompressor().count_tokens
PAGE = 21  # R-intro.pdf, "3.1 Intrinsic attributes"
SHORT = 13  # two lines of text: a second of OCR where a full page takes ten
KNOWN = "There is a large collection of functions of the form"


@pytest.fixture(scope="module")
def tesseract():
    data.require(data.ensure_tesseract())
    ocr.unavailable.cache_clear()
    assert ocr.unavailable("eng") is None


def render(src, page: int, dpi: int = 200) -> Image.Image:
    pdf = pypdfium2.PdfDocument(str(src))
    try:
        return pdf[page - 1].render(scale=dpi / 72, grayscale=True).to_pil().copy()  # off the bitmap closed below
    finally:
        pdf.close()


def scanned_pdf(src, page: int, dest):
    """An image-only PDF of one page: what a scanner gives."""
    render(src, page).save(dest, "PDF", resolution=200)
    assert not (PdfReader(dest).pages[0].extract_text() or "").strip()
    return dest


def words(text: str) -> str:
    return " ".join(text.split())


def test_a_scanned_page_is_read_by_ocr_at_its_page_number(tesseract, r_intro_pdf, tmp_path):
    doc = parse_document(scanned_pdf(r_intro_pdf, PAGE, tmp_path / "scan.pdf"), COUNT)
    assert doc.page_count == 1 and {s.page for s in doc.segments} == {1}
    assert KNOWN in words(" ".join(s.text for s in doc.segments))
    assert any("read by OCR" in w for w in doc.warnings)


def test_only_pages_without_text_get_ocr(tesseract, r_intro_pdf, tmp_path, monkeypatch):
    """Pages 19-20 keep their text layer; the scan of page 21 appended as page 3 is the one page OCR reads."""
    w = PdfWriter()
    for i in (18, 19):
        w.add_page(PdfReader(r_intro_pdf).pages[i])
    w.append(str(scanned_pdf(r_intro_pdf, PAGE, tmp_path / "scan.pdf")))
    w.write(tmp_path / "mixed.pdf")
    read = []
    original = ocr.PdfOcr.page
    monkeypatch.setattr(ocr.PdfOcr, "page", lambda self, i: read.append(i) or original(self, i))
    doc = parse_document(tmp_path / "mixed.pdf", COUNT)
    assert read == [2]  # 0-based: the third page only
    assert {s.page for s in doc.segments} == {1, 2, 3}
    assert KNOWN in words(" ".join(s.text for s in doc.segments if s.page == 3))


def test_blank_pages_and_drawings_are_not_ocr(tesseract, r_intro_pdf, tmp_path, monkeypatch):
    """A digital book's blank pages (octave.pdf has 24) have no image to read: no OCR, no time spent."""
    w = PdfWriter()
    w.add_blank_page(612, 792)
    w.add_page(PdfReader(r_intro_pdf).pages[PAGE - 1])
    w.add_blank_page(612, 792)
    w.write(tmp_path / "book.pdf")
    monkeypatch.setattr(ocr.PdfOcr, "page", lambda self, i: pytest.fail(f"page {i + 1} was OCR'd"))
    doc = parse_document(tmp_path / "book.pdf", COUNT)
    assert {s.page for s in doc.segments} == {2}
    w = PdfWriter()
    w.add_blank_page(612, 792)
    w.write(tmp_path / "blank.pdf")
    with pytest.raises(IngestError) as e:
        parse_document(tmp_path / "blank.pdf", COUNT)
    assert e.value.status == "skipped" and "has a text layer or an image with text" in e.value.reason


def test_images_are_read_and_a_multipage_tiff_keeps_its_pages(tesseract, r_intro_pdf, tmp_path):
    page = render(r_intro_pdf, PAGE)
    page.save(tmp_path / "page.png")
    png = parse_document(tmp_path / "page.png", COUNT)
    assert png.info.type == "image" and png.page_count is None and KNOWN in words(" ".join(s.text for s in png.segments))
    blank = Image.new("L", page.size, 255)
    blank.save(tmp_path / "two.tiff", save_all=True, append_images=[render(r_intro_pdf, SHORT)])
    tiff = parse_document(tmp_path / "two.tiff", COUNT)
    assert tiff.page_count == 2 and {s.page for s in tiff.segments} == {2}
    assert "in the same directory" in words(" ".join(s.text for s in tiff.segments))


def test_an_image_without_text_is_skipped_with_its_reason(tesseract, tmp_path):
    Image.radial_gradient("L").resize((600, 600)).save(tmp_path / "photo.jpg")
    with pytest.raises(IngestError) as e:
        parse_document(tmp_path / "photo.jpg", COUNT)
    assert e.value.status == "skipped" and "OCR found no text" in e.value.reason


def test_without_tesseract_the_rows_say_how_to_install_it_and_the_folder_indexes(r_intro_pdf, tmp_path,
                                                                                  monkeypatch):
    folder = tmp_path / "docs"
    folder.mkdir()
    scanned_pdf(r_intro_pdf, PAGE, folder / "scan.pdf")
    render(r_intro_pdf, PAGE).save(folder / "page.png")
    (folder / "notes.txt").write_text("Plain notes index as always.\n")
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "tesseract" else real_which(cmd, *a, **k))
    ocr.unavailable.cache_clear()
    try:
        assert "not installed" in ocr.formats_note() and "install it with" in ocr.formats_note()
        with LatentStore(tmp_path / "store.sqlite") as store:
            with IndexingService.create(store, data.FakeCompressor(), [folder], config=IndexerConfig()) as svc:
                assert svc.indexer.wait_idle(60)
            rows = {d.path.rsplit("/", 1)[-1]: d for d in store.list_documents()}
    finally:
        ocr.unavailable.cache_clear()
    assert rows["notes.txt"].status == "indexed"
    for name in ("scan.pdf", "page.png"):
        assert rows[name].status == "error" and "Tesseract" in rows[name].error and "install it with" in rows[name].error


def test_the_indexers_progress_names_the_page_ocr_is_on(tesseract, r_intro_pdf, tmp_path):
    """A scanned book reads for minutes: the progress line (the Library tab's, the CLI's) says which page."""
    folder = tmp_path / "scans"
    folder.mkdir()
    w = PdfWriter()
    for _ in range(2):
        w.append(str(scanned_pdf(r_intro_pdf, SHORT, tmp_path / "one.pdf")))
    w.write(folder / "book.pdf")
    seen: list[str] = []
    with LatentStore(tmp_path / "store.sqlite") as store:
        with IndexingService.create(store, data.FakeCompressor(), [folder], config=IndexerConfig(),
                                    callbacks=[lambda p: seen.append(p.current or "")]) as svc:
            assert svc.indexer.wait_idle(120)
        assert store.list_documents()[0].status == "indexed"
    book = str(folder / "book.pdf")
    assert f"{book} (OCR: page 1 of 2)" in seen and f"{book} (OCR: page 2 of 2)" in seen
