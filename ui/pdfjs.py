"""PDF.js for the document viewer, from the npm registry, kept in the user cache and served locally.

Why PDF.js: the browser's own PDF viewer opens a page but cannot mark a passage on it. PDF.js
renders the page and a text layer of positioned spans, which the viewer highlights.

Why from npm: ``pdfjs-dist`` is Mozilla's own build, and the npm registry is where it is
published. It is fetched once with the npm client as the user has it set up (``npm pack``),
and the tarball is checked against its published sha512. Only the three files the viewer
uses are kept. The page never loads them from a CDN: nothing leaves this computer.

Without npm, or offline on first use, PDFs open in the browser's viewer at the cited page,
with nothing marked, and the log says how to fetch PDF.js.

    python -m ui.pdfjs     # fetch now (launch.py does this after installing)
"""

from __future__ import annotations

import base64
import hashlib
import logging
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

VERSION = "6.5.438"
INTEGRITY = "sha512-vg8Pw1x+AFKy4AMDvhuWl5cOYV8d698UoEANoFFhc79hqXDnZQqnOXoxw3HG907WHOg1JYOvLhP756boddFxpA=="
FILES = {"build/pdf.min.mjs": "pdf.min.mjs", "build/pdf.worker.min.mjs": "pdf.worker.min.mjs",
         "web/pdf_viewer.css": "pdf_viewer.css", "LICENSE": "LICENSE"}


class PdfjsUnavailable(RuntimeError):
    """PDF.js could not be fetched; the message says how to get it."""


def default_cache() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("latent-context-docs"))


def assets_dir(cache: Path | None = None) -> Path | None:
    """The folder holding this version's files, or None if they are not fetched yet."""
    d = (cache or default_cache()) / f"pdfjs-{VERSION}"
    return d if all((d / name).is_file() for name in FILES.values()) else None


def _integrity_ok(tgz: Path) -> bool:
    algo, _, want = INTEGRITY.partition("-")
    digest = hashlib.new(algo, tgz.read_bytes()).digest()
    return base64.b64encode(digest).decode() == want


def fetch(cache: Path | None = None, timeout: float = 300.0) -> Path:
    """The assets folder, fetching ``pdfjs-dist`` with ``npm pack`` first if needed."""
    found = assets_dir(cache)
    if found:
        return found
    npm = shutil.which("npm")
    how = f"install Node.js (it brings npm), then run `python -m ui.pdfjs`; it fetches pdfjs-dist@{VERSION} once"
    if npm is None:
        raise PdfjsUnavailable(f"npm is not installed, so PDF.js cannot be fetched: {how}")
    dest = (cache or default_cache()) / f"pdfjs-{VERSION}"
    with tempfile.TemporaryDirectory(prefix="lclm-pdfjs-") as tmp:
        try:
            subprocess.run([npm, "pack", f"pdfjs-dist@{VERSION}", "--pack-destination", tmp, "--silent"], check=True,
                           capture_output=True, text=True, timeout=timeout)
        except (subprocess.SubprocessError, OSError) as e:
            detail = getattr(e, "stderr", "") or e
            raise PdfjsUnavailable(f"npm could not fetch pdfjs-dist@{VERSION} ({str(detail).strip()[:200]}); {how}") from e
        tgz = Path(tmp) / f"pdfjs-dist-{VERSION}.tgz"
        if not tgz.is_file() or not _integrity_ok(tgz):
            raise PdfjsUnavailable(f"the pdfjs-dist@{VERSION} tarball does not match its published sha512; not used")
        staging = Path(tmp) / "out"
        staging.mkdir()
        with tarfile.open(tgz) as tar:
            for member, name in FILES.items():
                src = tar.extractfile(f"package/{member}")
                if src is None:
                    raise PdfjsUnavailable(f"pdfjs-dist@{VERSION} lacks {member}")
                (staging / name).write_bytes(src.read())
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(staging), dest)  # whole or not at all: assets_dir checks every file
    log.info("PDF.js %s fetched into %s", VERSION, dest)
    return dest


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(f"PDF.js {VERSION}: {fetch()}")
    except PdfjsUnavailable as e:
        print(f"PDF.js not fetched: {e}. PDFs will open in the browser's own viewer, unmarked.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
