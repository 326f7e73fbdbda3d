"""Test inputs: real documents (installed from Debian packages when missing), small generated files, and compressors.

The PDFs are ones no one here wrote (Debian's R manuals, the Debian
Reference), so the ingestion is tested against what users actually have.
When a file is missing and we run as root with apt-get (CI containers), the
package is installed; otherwise the caller skips with the reason returned.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

R_INTRO = Path("/usr/share/R/doc/manual/R-intro.pdf")
DEBIAN_REFERENCE = Path("/usr/share/debian-reference/debian-reference.en.pdf")
OCTAVE = Path("/usr/share/doc/octave/octave.pdf")  # 1,158 pages: longer than the decoder's context at any N
R_LANG = Path("/usr/share/R/doc/manual/R-lang.pdf")  # never R-FAQ.pdf: held out of everything

#: file -> the Debian package that ships it
PACKAGES: dict[Path, str] = {R_INTRO: "r-doc-pdf", DEBIAN_REFERENCE: "debian-reference-en", OCTAVE: "octave-doc",
                             R_LANG: "r-doc-pdf"}

_attempted: set[str] = set()


def _apt_install(packages: list[str]) -> str | None:
    """Install packages with apt-get; None on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get is not available (not a Debian/Ubuntu system)"
    if os.geteuid() != 0:
        return "not running as root, cannot apt-get install"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:  # a fresh container has no package lists yet
            subprocess.run(["apt-get", "update"], env=env, capture_output=True, text=True, timeout=600)
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{' '.join(cmd)}` failed: {e}"
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or [""]
        return f"`{' '.join(cmd)}` failed ({r.returncode}): {tail[0]}"
    return None


def ensure_files(*files: Path) -> str | None:
    """Make sure each file exists, installing its package once if needed.

    Returns None when all are present, else a reason to skip with.
    """
    if all(f.exists() for f in files):
        return None
    # one apt-get run for every missing test package (apt-get update is slow in CI)
    todo = sorted({pkg for f, pkg in PACKAGES.items() if not f.exists()} - _attempted)
    if todo:
        _attempted.update(todo)
        log.info("installing %s for the tests", " ".join(todo))
        why = _apt_install(todo)
        if why:
            return f"needs Debian package(s) {', '.join(todo)}: {why}"
    still = [f for f in files if not f.exists()]
    if still:
        return f"{', '.join(map(str, still))} missing (Debian package(s) {', '.join(sorted({PACKAGES[f] for f in still}))})"
    return None


# ------------------------------------------------------------- compressors

_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass(frozen=True)
class FakeLatents:
    """Satisfies app.indexer.LatentLike without torch: bytes derived from the text."""

    data: bytes
    dtype_name: str
    shape: tuple[int, int]
    fingerprint: str
    ratio: int

    def payload(self) -> bytes:
        return self.data


class FakeCompressor:
    """A compressor with the indexer's interface that costs microseconds.

    Tokens are words and punctuation; latents are (ceil(tokens / ratio), dim)
    float16 values derived from the text's hash, so equal text gives equal
    bytes. It records what it encoded (``encoded``), can sleep per batch
    (``delay``), fail on texts containing ``fail_on``, or call ``on_compress``
    (tests use it to edit a file while the indexer is busy).
    """

    def __init__(self, fingerprint: str = "fake-fp-1", ratio: int = 4, dim: int = 8, delay: float = 0.0,
                 fail_on: str | None = None, on_compress: Callable[[Sequence[str]], None] | None = None) -> None:
        self.fingerprint = fingerprint
        self.ratio = ratio
        self.dim = dim
        self.delay = delay
        self.fail_on = fail_on
        self.on_compress = on_compress
        self.encoded: list[str] = []
        self.batches = 0
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(_TOKEN.findall(text))

    def compress(self, texts: Sequence[str], windows_per_batch: int = 8) -> list[FakeLatents]:
        if self.on_compress is not None:
            self.on_compress(texts)
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and any(self.fail_on in t for t in texts):
            raise RuntimeError(f"fake encoder failure on {self.fail_on!r}")
        out = []
        for t in texts:
            n = max(1, math.ceil(self.count_tokens(t) / self.ratio))
            seed = hashlib.sha256((self.fingerprint + t).encode()).digest()
            raw = (seed * (n * self.dim * 2 // len(seed) + 1))[: n * self.dim * 2]
            out.append(FakeLatents(raw, "float16", (n, self.dim), self.fingerprint, self.ratio))
        with self._lock:
            self.encoded += list(texts)
            self.batches += 1
        return out


def tiny_compressor(ratio: int = 4, window: int = 32):
    """A real LCLMCompressor on a tiny random Qwen-like encoder (built in ~1 s)."""
    import tiny
    from lclm_core.config import LCLMConfig
    from lclm_core.model import LCLMCompressor

    cfg = LCLMConfig(compression_ratio=ratio, encoder_window_size=window)
    return LCLMCompressor.build(cfg, tiny.encoder_backbone("qwen"), tiny.tokenizer("qwen"), 48)


# ------------------------------------------------------------- small files
#: Paragraphs of plain English for generated documents (distinct sentences,
#: so segments of different files differ unless a test copies them).
WORDS = ("latent context model encoder decoder segment page folder watcher index store query answer "
         "citation window token ratio paragraph sentence document cache vector").split()


def prose(seed: int, paragraphs: int = 3, sentences: int = 4) -> str:
    """Deterministic text: ``paragraphs`` blank-line separated paragraphs."""
    import random

    rnd = random.Random(seed)
    paras = []
    for p in range(paragraphs):
        sents = []
        for s in range(sentences):
            words = [rnd.choice(WORDS) for _ in range(rnd.randint(6, 14))]
            sents.append(f"Doc {seed} part {p}.{s}: " + " ".join(words) + ".")
        paras.append(" ".join(sents))
    return "\n\n".join(paras) + "\n"


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> None:
    """Poll until predicate() is true; AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------- browser
CHROMIUM = Path("/usr/bin/chromium")


def ensure_chromium() -> str | None:
    """Debian's Chromium for the browser tests, installed once if missing; None when ready, else why not."""
    if CHROMIUM.exists():
        return None
    if "chromium" not in _attempted:
        _attempted.add("chromium")
        log.info("installing Debian's chromium for the browser tests")
        why = _apt_install(["chromium", "fonts-dejavu-core"])
        if why:
            return f"needs Debian's chromium: {why}"
    return None if CHROMIUM.exists() else f"{CHROMIUM} missing (Debian package chromium)"


def ensure_tesseract() -> str | None:
    """Debian's Tesseract with English for the OCR tests, installed once if missing; None when ready, else why
    not. The app only reports a missing Tesseract (launch.py --ocr installs it); the tests need it."""
    if shutil.which("tesseract"):
        return None
    if "tesseract" not in _attempted:
        _attempted.add("tesseract")
        why = _apt_install(["tesseract-ocr", "tesseract-ocr-eng"])
        if why:
            return f"needs Debian's tesseract-ocr: {why}"
    return None if shutil.which("tesseract") else "tesseract missing (Debian package tesseract-ocr)"


def ensure_pdfjs() -> str | None:
    """PDF.js for the viewer tests, fetched as launch.py fetches it (npm, installed from Debian if missing);
    None when ready, else why not."""
    from ui import pdfjs

    if pdfjs.assets_dir() is not None:
        return None
    if shutil.which("npm") is None and "npm" not in _attempted:
        _attempted.add("npm")
        why = _apt_install(["npm"])
        if why:
            return f"needs npm to fetch PDF.js: {why}"
    try:
        pdfjs.fetch()
    except pdfjs.PdfjsUnavailable as e:
        return str(e)
    return None


def require(why: str | None) -> None:
    """Skip with ``why``, except in CI, where a missing prerequisite is a failure, not a skip."""
    if why is None:
        return
    import pytest

    if os.environ.get("CI"):
        pytest.fail(f"CI must run this test: {why}")
    pytest.skip(why)
