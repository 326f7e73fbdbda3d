"""Reading files into cleaned pages of text, then into segments.

Formats: PDF (pypdf, page by page: the page number of every segment is the
PDF's physical page, 1-based, which is what a viewer's "go to page" takes),
plain text (.txt, .md, .rst: markup kept as it is, it is what a reader sees),
source code, configuration and data files read as text (.py, .js, .c, .yaml,
.csv, .json, ...: ``FILE_TYPES``) and HTML (.html, .htm: text only, through
the standard library's parser).

Every way a file can fail to give text ends in an :class:`IngestError` that
carries the document status ("error": the file could not be read as what it
claims to be; "skipped": we chose not to index it) and a reason a user can
act on. The indexer turns it into a document row; it never stops the run.

Where the character spans point: ``char_start``/``char_end`` of a segment
index into the *cleaned* text of its page for PDFs (so
``pages[page - 1].text[char_start:char_end] == segment.text``), and into the
cleaned text of the whole document for formats without pages (page None).
Page-relative spans keep a citation valid when another page is edited, and
let a viewer highlight the passage on the page it shows.
"""

from __future__ import annotations

import bisect
import codecs
import functools
import hashlib
import logging
import os
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from latent_store import SegmentIn

from .segment import DEFAULT_MAX_TOKENS, segment_text

log = logging.getLogger(__name__)

#: File suffix -> document type. Anything else is not ours to index.
FILE_TYPES: dict[str, str] = {
    ".pdf": "pdf",
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".rst": "rst",
    ".html": "html",
    ".htm": "html",
    # Office documents and e-books (app.office), e-mail (app.mail), images read by OCR (app.ocr)
    ".docx": "docx",
    ".odt": "odt",
    ".pptx": "pptx",
    ".odp": "odp",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
    ".ods": "ods",
    ".epub": "epub",
    ".eml": "eml",
    ".mbox": "mbox",
    ".msg": "msg",
    **dict.fromkeys((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"), "image"),
    # Read as text, markup and syntax kept: it is what a reader of the file sees.
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    **dict.fromkeys((".py", ".pyi"), "code"),
    **dict.fromkeys((".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".java", ".kt", ".kts", ".scala",
                     ".go", ".rs", ".swift", ".m", ".mm", ".js", ".mjs", ".cjs", ".jsx", ".ts", ".tsx", ".vue",
                     ".svelte", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".hs", ".ml", ".mli", ".ex",
                     ".exs", ".erl", ".clj", ".dart", ".zig", ".sql", ".sh", ".bash", ".zsh", ".fish", ".ps1",
                     ".bat", ".cmake", ".gradle", ".css", ".scss", ".tex", ".bib", ".org", ".adoc", ".toml",
                     ".yaml", ".yml", ".ini", ".cfg", ".conf", ".xml", ".proto", ".graphql", ".tf"), "code"),
}


def file_type(path: str | os.PathLike[str]) -> str | None:
    """The document type by suffix (case-insensitive), None if unsupported."""
    return FILE_TYPES.get(Path(path).suffix.lower())


class IngestError(Exception):
    """A file that gives no text. ``status`` is the document status to record."""

    def __init__(self, reason: str, status: str = "error") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class IngestLimits:
    """Guards against files that would exhaust memory or time.

    A file over a limit is *skipped with a reason*, never silently truncated:
    an index that holds half a book answers wrongly without saying so.
    """

    max_file_mb: float = 256.0
    max_pages: int = 5000
    # One page's extracted text: a normal page holds a few thousand characters; a
    # "page" of millions is a generated dump or a decompression bomb.
    max_page_chars: int = 2_000_000
    # What an Office file or e-book (a zip) may unpack to: real ones unpack to a few times their size,
    # a zip bomb to gigabytes. Checked before any library inflates it.
    max_unzipped_mb: float = 512.0
    # OCR of scanned PDF pages and images, where Tesseract is installed (app.ocr).
    ocr: bool = True
    ocr_languages: str = "eng"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_unzipped_bytes(self) -> int:
        return int(self.max_unzipped_mb * 1024 * 1024)


@dataclass(frozen=True)
class Page:
    """Cleaned text of one page (number 1-based), or of a whole document (number None).

    A page is whatever a reader of the format turns to: a PDF page, a slide, a sheet, a chapter, a
    message. ``label`` names it ("slide 4", "Sheet1", "chapter 3: Install"; None for a PDF page, which
    a citation names by its number). ``marks`` are (offset, label) where a section starts, or, with
    ``rows``, (offset, row number) where a spreadsheet row starts.
    """

    number: int | None
    text: str
    label: str | None = None
    marks: tuple[tuple[int, str], ...] = ()
    rows: bool = False

    @functools.cached_property
    def _offsets(self) -> list[int]:
        """The marks' offsets, once a page: a sheet of 100k rows is asked for each of its segments."""
        return [o for o, _ in self.marks]

    def location(self, start: int, end: int) -> str | None:
        """Where text[start:end] is, as a citation names it: 'Sheet1 rows 20-40', 'page 3, section
        Install', 'slide 4'; None where the page number says it all (PDF)."""
        offsets = self._offsets
        if self.rows and self.marks:
            first = self.marks[max(bisect.bisect_right(offsets, start) - 1, 0)][1]
            last = self.marks[max(bisect.bisect_right(offsets, max(end - 1, start)) - 1, 0)][1]
            return f"{self.label} " + (f"row {first}" if first == last else f"rows {first}-{last}")
        at = bisect.bisect_right(offsets, start) - 1
        parts = [self.label] if self.label else []
        if at >= 0:
            parts.append(self.marks[at][1])
        return ", ".join(parts) or None


@dataclass(frozen=True)
class FileInfo:
    """What the file looked like when it was read (stored with the document)."""

    path: str
    size: int
    mtime: float
    sha256: str
    type: str


@dataclass
class ParsedDocument:
    info: FileInfo
    page_count: int | None
    segments: list[SegmentIn] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens or 0 for s in self.segments)


# ------------------------------------------------------------------ clean-up
_TRANSLATE = {
    0xFB00: "ff", 0xFB01: "fi", 0xFB02: "fl", 0xFB03: "ffi", 0xFB04: "ffl", 0xFB05: "st", 0xFB06: "st",
    0x00A0: " ", 0x2007: " ", 0x202F: " ",  # no-break spaces
    0x00AD: "", 0x200B: "", 0x200C: "", 0x200D: "", 0xFEFF: "",  # soft hyphen, zero-width, BOM
    0x0000: "", 0x000B: "\n", 0x000C: "\n", 0x2028: "\n", 0x2029: "\n\n",
}
# other C0 controls (tab and newline excepted) become spaces
_TRANSLATE.update({c: " " for c in range(0x01, 0x20) if c not in (0x09, 0x0A, 0x0B, 0x0C, 0x0D)})
_TRANSLATE[0x7F] = " "

# "statis-\ntical" -> "statistical": a hyphen after a letter at a line end,
# followed by a lowercase letter. A real compound broken at its hyphen
# ("well-\nknown") loses its hyphen too; without a dictionary the two cannot
# be told apart, and the joined word is what a search for it will type.
_EOL_HYPHEN = re.compile(r"(?<=[^\W\d_])-[ \t]*\n[ \t]*(?=[^\W\d_])")
_INNER_SPACES = re.compile(r"(?<=\S)[ \t]{2,}")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n(?:[ \t]*\n){2,}")


def _join_hyphen(m: re.Match[str]) -> str:
    nxt = m.string[m.end()] if m.end() < len(m.string) else ""
    return "" if nxt.islower() else m.group(0)


def clean_text(text: str, *, keep_indent: bool = False) -> str:
    """Normalise extracted text so that equal content hashes equal and FTS finds words.

    NFC, ligatures unfolded, no-break/zero-width/soft-hyphen characters
    removed, CR/LF unified, end-of-line hyphenation joined, runs of spaces
    inside a line collapsed, trailing spaces and runs of blank lines dropped.
    ``keep_indent`` keeps leading indentation (code blocks in .md/.rst); PDF
    text has no meaningful indentation.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = unicodedata.normalize("NFC", text).translate(_TRANSLATE)
    text = _TRAILING.sub("\n", text + "\n")
    text = _EOL_HYPHEN.sub(_join_hyphen, text)
    text = _INNER_SPACES.sub(" ", text)
    if not keep_indent:
        text = re.sub(r"\n[ \t]+", "\n", text)
    text = _BLANK_LINES.sub("\n\n", text)
    text = re.sub(r"^(?:[ \t]*\n)+", "", text)  # leading blank lines (keeps the first line's indent)
    return text.rstrip() if keep_indent else text.strip()


# ------------------------------------------------------------------ reading
def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of the file's bytes, streamed (a 200 MB PDF is never held twice)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _read_bytes(path: Path, limits: IngestLimits) -> bytes:
    with open(path, "rb") as f:
        data = f.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise _too_big(len(data), limits)
    return data


def _too_big(size: int, limits: IngestLimits) -> IngestError:
    shown = f"{size / 2**20:.1f} MB" if size >= 2**20 else f"{size / 1024:.0f} KB"
    return IngestError(f"file is {shown}, over the {limits.max_file_mb:g} MB limit (--max-file-mb)", "skipped")


_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")


def decode_text(data: bytes) -> str:
    """Bytes of a text file as str: BOM if any, else UTF-8, else Windows-1252.

    Raises IngestError for binary content (a NUL byte, or many control
    characters), so an image renamed to .txt becomes an error row instead of
    megabytes of mojibake in the index.
    """
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return data.decode(codec, errors="replace")
    head = data[:8192]
    if b"\x00" in head:
        raise IngestError("binary content, not text (NUL bytes): is it really a text file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    sample = text[:8192]
    if sample and len(_CONTROL.findall(sample)) > 0.05 * len(sample):
        raise IngestError("binary content, not text (control characters): is it really a text file?")
    return text


_HTML_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.IGNORECASE)


def decode_html(data: bytes) -> str:
    """HTML bytes as str, honouring a <meta charset> in the first 4 KB."""
    m = _HTML_CHARSET.search(data[:4096])
    if m and not data.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return data.decode(m.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return decode_text(data)


class _HTMLText(HTMLParser):
    """Visible text of an HTML page: no script/style, blocks become paragraphs."""

    SKIP = {"script", "style", "noscript", "template", "svg", "math", "iframe", "object", "canvas"}
    BLOCK = {
        "p", "div", "section", "article", "header", "footer", "nav", "aside", "main", "h1", "h2", "h3", "h4", "h5",
        "h6", "ul", "ol", "li", "dl", "dt", "dd", "table", "tr", "blockquote", "pre", "hr", "figure", "figcaption",
        "form", "fieldset", "address", "details", "summary", "title", "caption", "body", "html",
    }

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skip = 0
        self._pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self.SKIP:
            self._skip += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in ("td", "th"):
            self.parts.append(" ")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self.parts.append("\n")
        elif tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self._skip = max(0, self._skip - 1)
        elif tag in self.BLOCK:
            self.parts.append("\n\n")
            if tag == "pre":
                self._pre = max(0, self._pre - 1)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.parts.append(data if self._pre else re.sub(r"\s+", " ", data))


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    return "".join(parser.parts)


#: told (page number, pages in all) after each page OCR reads: minutes a page on a slow machine, so the
#: indexer's progress line shows it
OcrProgress = Callable[[int, int], None]


def _pdf_pages(path: Path, limits: IngestLimits, warnings: list[str], on_ocr: OcrProgress | None = None
               ) -> tuple[int, Iterator[Page]]:
    """(page count, lazy iterator of cleaned pages). Pages are extracted one at
    a time and dropped after use, so a big PDF costs one page of text at a time
    beyond the segments kept."""
    import pypdf
    from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError

    try:
        reader = pypdf.PdfReader(path)
        if reader.is_encrypted:
            try:
                ok = reader.decrypt("")  # an owner-password-only PDF opens with the empty user password
            except DependencyError as e:
                raise IngestError(f"encrypted PDF; decrypting it needs the 'cryptography' package ({e})") from e
            if not ok:
                raise IngestError("encrypted PDF (password required)")
        n_pages = len(reader.pages)
    except IngestError:
        raise
    except FileNotDecryptedError as e:
        raise IngestError("encrypted PDF (password required)") from e
    except (PdfReadError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as e:
        raise IngestError(f"unreadable PDF ({type(e).__name__}: {e})") from e
    if n_pages == 0:
        raise IngestError("PDF has no pages", "skipped")
    if n_pages > limits.max_pages:
        raise IngestError(f"PDF has {n_pages} pages, over the {limits.max_pages}-page limit (--max-pages)", "skipped")

    def pages() -> Iterator[Page]:
        from . import ocr

        why_not = None if limits.ocr else "OCR is turned off"
        reader_ocr = None
        try:
            for i in range(n_pages):
                try:
                    raw = reader.pages[i].extract_text() or ""
                except Exception as e:  # noqa: BLE001 - one bad page must not lose the book
                    warnings.append(f"page {i + 1}: text extraction failed ({type(e).__name__}: {e})")
                    log.warning("%s: page %d: text extraction failed: %s", path, i + 1, e)
                    raw = ""
                text = clean_text(raw)
                # a scanned page is an image with little or no text layer; a blank page or a drawing is not
                if len(text) < ocr.MIN_TEXT_CHARS and why_not is None and ocr.has_image(reader.pages[i]):
                    why_not = ocr.unavailable(limits.ocr_languages)
                    if why_not is None:
                        reader_ocr = reader_ocr or ocr.PdfOcr(path, limits.ocr_languages, n_pages)
                        text = reader_ocr.page(i) or text
                        if on_ocr is not None:
                            on_ocr(i + 1, n_pages)
                yield Page(i + 1, text)
        finally:
            if reader_ocr is not None:
                reader_ocr.close()
                warnings.append(f"{reader_ocr.pages_read} page(s) read by OCR in {reader_ocr.seconds:.0f} s")
            elif why_not and why_not != "OCR is turned off":
                warnings.append(f"pages without a text layer were not read: {why_not}")

    return n_pages, pages()


def read_pages(path: str | os.PathLike[str], doc_type: str, limits: IngestLimits, warnings: list[str] | None = None,
               on_ocr: OcrProgress | None = None) -> tuple[int | None, Iterator[Page]]:
    """(page count or None, iterator of cleaned pages) for a supported file."""
    p = Path(path)
    warnings = [] if warnings is None else warnings
    if doc_type == "pdf":
        return _pdf_pages(p, limits, warnings, on_ocr)
    if doc_type == "image":
        from .ocr import image_pages

        return image_pages(p, limits, on_ocr)
    from . import epub, mail, office, sheets

    read = {**office.READERS, **sheets.READERS, **mail.READERS, "epub": epub.epub_pages}.get(doc_type)
    if read is not None:
        pages = read(p, limits)
        numbered = [pg.number for pg in pages if pg.number is not None]
        return (max(numbered) if numbered else None), iter(pages)
    data = _read_bytes(p, limits)
    if doc_type == "html":
        text = clean_text(html_to_text(decode_html(data)))
    else:
        text = clean_text(decode_text(data), keep_indent=True)
    return None, iter([Page(None, text)])


# ------------------------------------------------------------------ parsing
def stat_info(path: str | os.PathLike[str], limits: IngestLimits) -> tuple[int, float, str]:
    """(size, mtime, type) of a supported, not oversized, non-empty file; IngestError otherwise."""
    p = Path(path)
    doc_type = file_type(p)
    if doc_type is None:
        raise IngestError(f"unsupported file type {p.suffix or '(no suffix)'!r}", "skipped")
    try:
        st = p.stat()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise IngestError(f"cannot read the file: {e.strerror or e}") from e
    if not p.is_file():
        raise IngestError("not a regular file", "skipped")
    if st.st_size > limits.max_file_bytes:
        raise _too_big(st.st_size, limits)
    if st.st_size == 0:
        raise IngestError("empty file", "skipped")
    return st.st_size, st.st_mtime, doc_type


#: a section shorter than this joins the next one in a segment (a run of headings is not cut into crumbs)
MIN_SECTION_CHARS = 600


def _page_spans(page: Page, count_tokens: Callable[[str], int], max_tokens: int) -> Iterator[tuple[int, int, int]]:
    """Segments of a page, cut at its section starts as at its end: a passage cited as 'section 10.3
    Persistence' then never begins in 10.2. Spreadsheet rows are not sections: rows pack together."""
    cuts = [0]
    if not page.rows:
        for offset, _ in page.marks:
            if offset - cuts[-1] >= MIN_SECTION_CHARS:
                cuts.append(offset)
    cuts.append(len(page.text))
    for a, b in zip(cuts, cuts[1:]):
        for start, end, n in segment_text(page.text[a:b], count_tokens, max_tokens):
            yield a + start, a + end, n


def parse_document(
    path: str | os.PathLike[str],
    count_tokens: Callable[[str], int],
    *,
    limits: IngestLimits = IngestLimits(),
    max_tokens: int = DEFAULT_MAX_TOKENS,
    on_ocr: OcrProgress | None = None,
) -> ParsedDocument:
    """Read, clean and segment one file.

    ``count_tokens`` is the compressor's token counter: segments are sized in
    the tokens the encoder will see (for the default model the encoder and
    decoder share Gemma's tokenizer). Raises IngestError (with status and
    reason) for files that give no text, FileNotFoundError if it vanished.
    """
    p = Path(path)
    size, mtime, doc_type = stat_info(p, limits)
    try:
        sha = file_sha256(p)
        warnings: list[str] = []
        page_count, pages = read_pages(p, doc_type, limits, warnings, on_ocr)
        info = FileInfo(str(p), size, mtime, sha, doc_type)
        doc = ParsedDocument(info, page_count, warnings=warnings)
        pages_with_text = 0
        for page in pages:
            if page.number is not None and len(page.text) > limits.max_page_chars:
                raise IngestError(f"page {page.number} has {len(page.text):,} characters of text, over the "
                                  f"{limits.max_page_chars:,}-character page limit (--max-page-chars)", "skipped")
            if page.text:
                pages_with_text += 1
            for start, end, n in _page_spans(page, count_tokens, max_tokens):
                doc.segments.append(SegmentIn(ordinal=len(doc.segments), text=page.text[start:end], page=page.number,
                                              char_start=start, char_end=end, n_tokens=n,
                                              location=page.location(start, end)))
    except FileNotFoundError:
        raise
    except PermissionError as e:
        raise IngestError(f"cannot read the file: permission denied ({e.filename or p})") from e
    except (OSError, MemoryError) as e:
        raise IngestError(f"cannot read the file: {e}") from e
    if not doc.segments:
        if doc_type == "pdf":
            from .ocr import unavailable

            why = "OCR is turned off" if not limits.ocr else unavailable(limits.ocr_languages)
            if why:
                raise IngestError(f"no text layer (scanned?): none of its {page_count} page(s) has extractable "
                                  f"text. {why}")
            raise IngestError(f"no text: none of its {page_count} page(s) has a text layer or an image with "
                              "text in it", "skipped")
        if doc_type == "image":
            raise IngestError("OCR found no text in the image (a photo or a drawing?)", "skipped")
        raise IngestError("no text in the file", "skipped")
    if page_count and pages_with_text < page_count / 2:
        warnings.append(f"only {pages_with_text} of {page_count} pages have text (partly scanned?)")
    for w in warnings:
        log.info("%s: %s", p, w)
    return doc
