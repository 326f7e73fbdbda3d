"""OCR of scanned PDF pages and of images, through Tesseract, where it is installed.

Tesseract is the engine every local tool uses (Debian's ``tesseract-ocr``,
Homebrew's ``tesseract``, the UB Mannheim build on Windows); pytesseract
(Apache-2.0) runs it, and pypdfium2 (PDFium, BSD/Apache) renders a PDF page to
an image. Both are small Python packages; Tesseract itself is optional. Where
it is missing, a scanned PDF or an image becomes a row that says how to
install it, and everything else indexes as before.

Memory is bounded by one page: a page is rendered, read and dropped before the
next, at 300 dpi, scaled down to at most ``MAX_PIXELS`` (a poster-sized page
would otherwise be a gigapixel bitmap).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .ingest import IngestError, IngestLimits, Page, clean_text

log = logging.getLogger(__name__)

DPI = 300
MAX_PIXELS = 40_000_000  # 300 dpi on A2; a bigger page is rendered smaller
PAGE_TIMEOUT_S = 300  # a page Tesseract cannot finish in five minutes is not text
#: a page with less text than this is read by OCR (a scanned page often has a stray header in its text layer)
MIN_TEXT_CHARS = 20


def has_image(page, depth: int = 2) -> bool:  # noqa: ANN001 - a pypdf page (or form XObject)
    """Whether a PDF page draws a raster image (a scan is one): a dictionary lookup in its resources, so a
    blank page or a vector drawing is never rendered and OCR'd for nothing. Inline images (rare in
    scans) are not seen. Unreadable resources count as an image: OCR decides."""
    try:
        resources = page.get("/Resources")
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        if xobjects is None:
            return False
        for ref in xobjects.get_object().values():
            obj = ref.get_object()
            kind = obj.get("/Subtype")
            if kind == "/Image" or (kind == "/Form" and depth > 0 and has_image(obj, depth - 1)):
                return True
        return False
    except Exception:  # noqa: BLE001 - a damaged resource dictionary
        return True


def install_hint(languages: str = "eng") -> str:
    """How to install Tesseract (and the languages asked for) on this platform."""
    extra = [lang for lang in languages.split("+") if lang not in ("eng", "osd")]
    if sys.platform == "darwin":
        return "install it with: brew install tesseract" + (" tesseract-lang" if extra else "")
    if sys.platform.startswith("win"):
        return "install it with: winget install UB-Mannheim.TesseractOCR, then restart the app"
    packs = " ".join(f"tesseract-ocr-{lang}" for lang in extra)
    return ("install it with: sudo apt install tesseract-ocr" + (f" {packs}" if packs else "")
            + " (Fedora: sudo dnf install tesseract)")


@functools.lru_cache(maxsize=8)
def unavailable(languages: str = "eng") -> str | None:
    """None where OCR can run in these languages ('eng', 'eng+deu'), else why not and how to fix it."""
    exe = shutil.which("tesseract")
    if exe is None:
        return f"OCR needs Tesseract, which is not installed; {install_hint(languages)}"
    for module in ("pytesseract", "pypdfium2", "PIL"):
        if importlib.util.find_spec(module) is None:
            return f"OCR needs the Python package {module}: reinstall the app (python3 launch.py --reinstall)"
    try:
        r = subprocess.run([exe, "--list-langs"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"Tesseract at {exe} does not run ({e})"
    have = set(r.stdout.split()[1:]) if r.returncode == 0 else set()
    missing = [lang for lang in languages.split("+") if lang not in have]
    if missing:
        return f"Tesseract has no {', '.join(missing)} language data; {install_hint(languages)}"
    return None


def version() -> str | None:
    """Tesseract's version, for the Library tab and the benchmark; None where it is missing."""
    if unavailable("eng") is not None:
        return None
    import pytesseract

    return str(pytesseract.get_tesseract_version())


def read_image(image, languages: str) -> str:  # noqa: ANN001 - a PIL image
    """The text Tesseract reads in one image (grey, at most MAX_PIXELS), cleaned."""
    import pytesseract

    if image.width * image.height > MAX_PIXELS:
        scale = (MAX_PIXELS / (image.width * image.height)) ** 0.5
        image = image.resize((max(1, int(image.width * scale)), max(1, int(image.height * scale))))
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    try:
        return clean_text(pytesseract.image_to_string(image, lang=languages, timeout=PAGE_TIMEOUT_S))
    except RuntimeError as e:  # pytesseract's timeout
        raise IngestError(f"OCR gave up on a page after {PAGE_TIMEOUT_S} s ({e})") from e
    except pytesseract.TesseractError as e:
        raise IngestError(f"Tesseract failed: {e}") from e


class PdfOcr:
    """Renders and reads pages of one PDF on demand; one owner, closed by ``close()``."""

    def __init__(self, path: Path, languages: str, total: int | None = None) -> None:
        self.path, self.languages, self.total = path, languages, total
        self._pdf = None
        self.pages_read = 0
        self.seconds = 0.0

    def page(self, index: int) -> str:
        """The OCR text of page ``index`` (0-based)."""
        import pypdfium2

        t0 = time.perf_counter()
        if self._pdf is None:
            try:
                self._pdf = pypdfium2.PdfDocument(str(self.path))
            except pypdfium2.PdfiumError as e:
                raise IngestError(f"PDF pages cannot be rendered for OCR ({e})") from e
        page = self._pdf[index]
        try:
            w, h = page.get_size()
            scale = min(DPI / 72, (MAX_PIXELS / max(w * h, 1.0)) ** 0.5)
            bitmap = page.render(scale=scale, grayscale=True)
            image = bitmap.to_pil()
            text = read_image(image, self.languages)
            image.close()
            bitmap.close()
        finally:
            page.close()
        self.pages_read += 1
        self.seconds += time.perf_counter() - t0
        # the progress of a long scan, where the indexer's progress line shows only the document
        log.info("OCR %s: page %d%s read in %.1f s (%d page(s) by OCR so far)", self.path.name, index + 1,
                 f" of {self.total}" if self.total else "", time.perf_counter() - t0, self.pages_read)
        return text

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()
            self._pdf = None


def image_pages(path: Path, limits: IngestLimits, on_ocr: Callable[[int, int], None] | None = None
                ) -> tuple[int | None, Iterator[Page]]:
    """An image (.png, .jpg, .tiff; every frame of a multi-page TIFF is a page) read by OCR."""
    why = unavailable(limits.ocr_languages) if limits.ocr else "OCR is turned off (--no-ocr)"
    if why:
        raise IngestError(f"an image's text can only be read by OCR: {why}")
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        image = Image.open(path)
        frames = getattr(image, "n_frames", 1)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise IngestError(f"not a readable image ({type(e).__name__}: {e})") from e
    if frames > limits.max_pages:
        image.close()
        raise IngestError(f"image has {frames} pages, over the {limits.max_pages}-page limit (--max-pages)", "skipped")
    if image.width * image.height > 4 * MAX_PIXELS:
        image.close()
        raise IngestError(f"image is {image.width}x{image.height} pixels, too large to read (a bomb?)", "skipped")

    def pages() -> Iterator[Page]:
        try:
            for n, frame in enumerate(ImageSequence.Iterator(image), 1):
                try:
                    text = read_image(frame.convert("L"), limits.ocr_languages)
                except (OSError, ValueError) as e:  # a truncated frame
                    raise IngestError(f"not a readable image ({type(e).__name__}: {e})") from e
                if on_ocr is not None:
                    on_ocr(n, frames)
                yield Page(n if frames > 1 else None, text)
        finally:
            image.close()

    return (frames if frames > 1 else None), pages()


def formats_note(languages: str = "eng") -> str:
    """What the Library tab says the app reads, and what it cannot read here and why (Markdown)."""
    note = ("Reads PDF, Word (.docx), PowerPoint (.pptx), Excel (.xlsx), OpenDocument (.odt, .odp, .ods), EPUB, "
            "e-mail (.eml, .mbox, .msg), text, Markdown, HTML, source code, CSV and JSON.")
    why = unavailable(languages)
    if why:
        return note + f"\n\n**Not available here: scanned PDF pages and images** (.png, .jpg, .tiff): {why}."
    return note + f" Scanned PDF pages and images are read by OCR (Tesseract {version()}, {languages})."
