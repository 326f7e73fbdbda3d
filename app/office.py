"""Word and PowerPoint documents (and their OpenDocument kin) as pages of text with a location a person
can follow, and what every zip-based format shares (app.sheets, app.epub use it).

Each reader returns :class:`app.ingest.Page` objects, so these formats are cut
into segments exactly as PDFs and text are, and each segment's citation names
where it is: "page 3, section Install" (.docx/.odt), "slide 4" (.pptx/.odp).

Libraries, each the reference reader of its format and kept up: python-docx and
python-pptx (MIT) for Office Open XML; odfpy (Apache-2.0, the OpenDocument
reader) for .odt/.odp.

Every one of these files is a zip, so :func:`check_zip` runs first: a zip bomb
(a member that inflates hundreds of times, or more text than any document
holds) and an encrypted Office file (stored as OLE, not as a zip) become an
error row before a library inflates anything.
"""

from __future__ import annotations

import io
import logging
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .ingest import IngestError, IngestLimits, Page, clean_text

log = logging.getLogger(__name__)

OLE_MAGIC = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
#: A member that inflates more than this many times is a bomb; real Office XML inflates 5-30x,
#: a spreadsheet of repeated cells up to ~100x.
MAX_ZIP_RATIO = 200


def check_zip(path: Path, limits: IngestLimits, kind: str) -> None:
    """Refuse what is not a sound zip before a library reads it: an encrypted Office file (OLE inside),
    a corrupted archive, or one whose members inflate past the limits."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == OLE_MAGIC:
        raise IngestError(f"password-protected (encrypted) {kind}, or an old binary Office file renamed: "
                          "save it without a password to index it")
    try:
        with zipfile.ZipFile(path) as z:
            members = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise IngestError(f"not a valid {kind} (corrupted zip: {e})") from e
    total = 0
    for m in members:
        total += m.file_size
        if m.file_size > (1 << 20) and m.file_size > MAX_ZIP_RATIO * max(m.compress_size, 1):
            raise IngestError(f"{m.filename} inflates {m.file_size / max(m.compress_size, 1):,.0f} times "
                              f"(zip bomb?): not read", "skipped")
    if total > limits.max_unzipped_bytes:
        raise IngestError(f"unpacks to {total / 2**20:,.0f} MB, over the {limits.max_unzipped_mb:g} MB limit "
                          "(zip bomb?): not read", "skipped")


def library_error(kind: str, e: Exception) -> IngestError:
    return IngestError(f"unreadable {kind} ({type(e).__name__}: {e})")


# ----------------------------------------------------------------- builder
class PageBuilder:
    """Text of one page being built, with where each section or row starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.marks: list[tuple[int, str]] = []

    def mark(self, label: str) -> None:
        self.marks.append((self.size, label))

    def add(self, text: str) -> None:
        text = text.strip("\n")
        if text.strip():
            self.parts.append(text + "\n\n")
            self.size += len(text) + 2

    def page(self, number: int | None, label: str | None, *, rows: bool = False) -> Page:
        """The page, its text cleaned block by block (so the marks' offsets stay true)."""
        return Page(number, "".join(self.parts).rstrip(), label, tuple(self.marks), rows)


def block_text(text: str) -> str:
    """One paragraph or cell, cleaned on its own: marks point at block starts, which cleaning keeps."""
    return clean_text(text).replace("\n\n", "\n")


# ----------------------------------------------------------------- .docx
def _docx_level(paragraph) -> int | None:  # noqa: ANN001 - python-docx Paragraph
    name = (paragraph.style.name if paragraph.style is not None else "") or ""
    if name == "Title":
        return 0
    m = re.match(r"Heading (\d)", name)
    return int(m.group(1)) if m else None


def _heading_path(path: list[tuple[int, str]], level: int, title: str) -> list[tuple[int, str]]:
    return [h for h in path if h[0] < level] + [(level, title)]


def _section(path: list[tuple[int, str]]) -> str:
    """'section Install' or 'section Building > Install': the two innermost headings, as a reader scans."""
    return "section " + " > ".join(t for _, t in path[-2:])


def docx_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """Paragraphs and tables in order; headings give the section path. Where Word recorded where its
    pages broke when it last laid the file out (``lastRenderedPageBreak``), each page is a page."""
    check_zip(path, limits, ".docx")
    import docx
    from docx.table import Table

    try:
        document = docx.Document(str(path))
        # Only Word's record of where it laid out each page: an explicit page break alone (LibreOffice's
        # export) would number a 60-page chapter "page 2".
        breaks = ".//w:lastRenderedPageBreak"
        pages: list[Page] = []
        page, number, heads = PageBuilder(), 1, []
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                text = "\n".join(" | ".join(block_text(c.text) for c in row.cells) for row in block.rows)
                n_breaks = len(block._tbl.xpath(breaks))
            else:
                text, level = block_text(block.text), _docx_level(block)
                n_breaks = len(block._p.xpath(breaks))
                if level is not None and text:
                    heads = _heading_path(heads, level, text.splitlines()[0])
                    page.mark(_section(heads))
            page.add(text)
            if n_breaks:  # the block starts on this page; what follows it is on the next
                pages.append(page.page(number, f"page {number}"))
                number += n_breaks
                page = PageBuilder()
                if heads:
                    page.mark(_section(heads))
        pages.append(page.page(number, f"page {number}"))
    except IngestError:
        raise
    except Exception as e:  # noqa: BLE001 - python-docx raises anything from lxml to KeyError on a bad file
        raise library_error(".docx", e) from e
    if number == 1:  # no page breaks recorded: one document with sections, no page numbers to claim
        return [Page(None, pages[0].text, None, pages[0].marks)]
    return [p for p in pages if p.text]


# ----------------------------------------------------------------- .pptx
def pptx_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per slide: title, text boxes, tables, then the speaker notes."""
    check_zip(path, limits, ".pptx")
    import pptx

    def shape_text(shape) -> Iterator[str]:  # noqa: ANN001 - python-pptx shape
        if getattr(shape, "shapes", None) is not None:  # a group
            for s in shape.shapes:
                yield from shape_text(s)
        if getattr(shape, "has_text_frame", False) and shape.has_text_frame:
            yield block_text(shape.text_frame.text)
        if getattr(shape, "has_table", False) and shape.has_table:
            yield "\n".join(" | ".join(block_text(c.text) for c in row.cells) for row in shape.table.rows)

    try:
        deck = pptx.Presentation(str(path))
        out = []
        for n, slide in enumerate(deck.slides, 1):
            page = PageBuilder()
            title = slide.shapes.title
            if title is not None and title.has_text_frame:
                page.add(block_text(title.text_frame.text))
            for shape in slide.shapes:
                if title is not None and shape.shape_id == title.shape_id:
                    continue
                for text in shape_text(shape):
                    page.add(text)
            if slide.has_notes_slide and slide.notes_slide.notes_text_frame is not None:
                notes = block_text(slide.notes_slide.notes_text_frame.text)
                if notes:
                    page.add("Notes: " + notes)
            out.append(page.page(n, f"slide {n}"))
        return out
    except Exception as e:  # noqa: BLE001
        raise library_error(".pptx", e) from e


# ----------------------------------------------------------------- sheets


def odf_load(path: Path, limits: IngestLimits, kind: str):  # noqa: ANN202 - an odfpy document
    check_zip(path, limits, kind)
    from odf.opendocument import load

    try:
        return load(str(path))
    except KeyError:  # the manifest lists a member the zip lacks (Debian's live-manual.odt lacks its thumbnail)
        try:
            return load(_without_missing(path))
        except Exception as e:  # noqa: BLE001
            raise library_error(kind, e) from e
    except Exception as e:  # noqa: BLE001
        raise library_error(kind, e) from e


def _without_missing(path: Path) -> io.BytesIO:
    """A copy of an OpenDocument zip whose manifest no longer lists members that are not in it (odfpy reads
    every listed member). Only after check_zip, so the copy's size is bounded."""
    out = io.BytesIO()
    with zipfile.ZipFile(path) as z, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as w:
        names = set(z.namelist())
        for info in z.infolist():
            data = z.read(info)
            if info.filename == "META-INF/manifest.xml":
                text = data.decode("utf-8")
                gone = lambda m: (m.group(1) not in names and not m.group(1).endswith("/"))  # noqa: E731
                text = re.sub(r"<manifest:file-entry\b[^>]*?manifest:full-path=\"([^\"]*)\"[^>]*?/>",
                              lambda m: "" if gone(m) else m.group(0), text)
                data = text.encode("utf-8")
            w.writestr(info, data)
    out.seek(0)
    return out


def odf_text(node) -> str:  # noqa: ANN001 - odfpy Element
    """Text of an element with ODF's spaces, tabs and line breaks (teletype's rules)."""
    from odf import teletype

    return teletype.extractText(node)


def odf_name(node) -> str:  # noqa: ANN001
    return getattr(node, "qname", ("", ""))[1]


def odt_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """Headings and paragraphs in order (lists and tables walked into). Page numbers where the file
    recorded its page breaks (``soft-page-break``, written by LibreOffice on save), else sections only."""
    from odf import text as odftext

    doc = odf_load(path, limits, ".odt")
    pages: list[Page] = []
    state = {"page": PageBuilder(), "number": 1, "heads": [], "breaks": 0}

    def new_page() -> None:
        pages.append(state["page"].page(state["number"], f"page {state['number']}"))
        state["number"] += 1
        state["page"] = PageBuilder()
        if state["heads"]:
            state["page"].mark(_section(state["heads"]))

    def walk(node) -> None:  # noqa: ANN001
        for child in node.childNodes:
            name = odf_name(child)
            if name == "soft-page-break":
                state["breaks"] += 1
                new_page()
            elif name in ("h", "p"):
                text = block_text(odf_text(child))
                if name == "h" and text:
                    level = int(child.getAttribute("outlinelevel") or 1)
                    state["heads"] = _heading_path(state["heads"], level, text.splitlines()[0])
                    state["page"].mark(_section(state["heads"]))
                state["page"].add(text)
                if child.getElementsByType(odftext.SoftPageBreak):
                    state["breaks"] += 1
                    new_page()
            elif name == "table-row":
                cells = [block_text(odf_text(c)) for c in child.childNodes if odf_name(c) in ("table-cell", "covered-table-cell")]
                state["page"].add(" | ".join(cells))
            elif getattr(child, "childNodes", None):
                walk(child)

    try:
        walk(doc.body)
    except Exception as e:  # noqa: BLE001
        raise library_error(".odt", e) from e
    last = state["page"].page(state["number"], f"page {state['number']}")
    if not state["breaks"]:
        return [Page(None, last.text, None, last.marks)]
    return [p for p in pages + [last] if p.text]


def odp_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per slide (draw:page), its text boxes and notes in order."""
    from odf import draw

    doc = odf_load(path, limits, ".odp")
    try:
        out = []
        for n, slide in enumerate(doc.presentation.getElementsByType(draw.Page), 1):
            page = PageBuilder()
            for node in _paragraphs(slide):
                page.add(block_text(odf_text(node)))
            out.append(page.page(n, f"slide {n}"))
        return out
    except Exception as e:  # noqa: BLE001
        raise library_error(".odp", e) from e


def _paragraphs(node) -> Iterator:  # noqa: ANN001
    for child in node.childNodes:
        if odf_name(child) in ("p", "h"):
            yield child
        elif getattr(child, "childNodes", None):
            yield from _paragraphs(child)


READERS = {"docx": docx_pages, "odt": odt_pages, "pptx": pptx_pages, "odp": odp_pages}
