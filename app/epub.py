"""EPUB as one page per chapter, in reading order, titled from the book's own table of contents.

No well-kept EPUB reader is under a licence we can ship (EbookLib is AGPL), and an EPUB is a zip with
an XML package file: its spine gives the reading order, its NCX (EPUB 2) or nav document (EPUB 3) the
chapter titles a reader sees. Those XML files are parsed with defusedxml (no entity expansion, no DTD
fetches); each chapter's text comes from our HTML reader, as an .html file's does.
"""

from __future__ import annotations

import logging
import posixpath
import re
import zipfile
from pathlib import Path

from .ingest import IngestError, IngestLimits, Page, clean_text, decode_html, html_to_text
from .office import library_error, check_zip

log = logging.getLogger(__name__)

_CONTAINER_NS = {"c": "urn:oasis:names:tc:opendocument:xmlns:container"}
_OPF_NS = {"opf": "http://www.idpf.org/2007/opf"}
_NCX_NS = {"ncx": "http://www.daisy.org/z3986/2005/ncx/"}
_HEADING = re.compile(r"<h[1-3][^>]*>(.*?)</h[1-3]>", re.IGNORECASE | re.DOTALL)
_NAV_LINK = re.compile(r"<a\b[^>]*href\s*=\s*[\"']([^\"'#]+)[^\"']*[\"'][^>]*>(.*?)</a>", re.IGNORECASE | re.DOTALL)


def _title(html: str) -> str:
    return " ".join(clean_text(html_to_text(html)).split())[:80]


def _toc_titles(z: zipfile.ZipFile, opf, base: str, manifest: dict) -> dict[str, str]:  # noqa: ANN001
    """Chapter file -> its title in the book's table of contents (EPUB 2's NCX or EPUB 3's nav document):
    the names a reader sees in the contents, where a chapter's first heading is often the book's title."""
    from defusedxml import ElementTree

    titles: dict[str, str] = {}
    spine = opf.find(".//opf:spine", _OPF_NS)
    ncx = manifest.get(spine.get("toc")) if spine is not None else None
    nav = next((i.get("href") for i in opf.findall(".//opf:manifest/opf:item", _OPF_NS)
                if "nav" in (i.get("properties") or "").split()), None)
    for href, parse in ((ncx, "ncx"), (nav, "nav")):
        if not href:
            continue
        at = posixpath.normpath(posixpath.join(base, href))
        try:
            raw = z.read(at)
        except KeyError:
            continue
        if parse == "ncx":
            links = [(p.find("ncx:content", _NCX_NS).get("src", ""), "".join(p.find("ncx:navLabel", _NCX_NS).itertext()))
                     for p in ElementTree.fromstring(raw).iter("{%s}navPoint" % _NCX_NS["ncx"])
                     if p.find("ncx:content", _NCX_NS) is not None and p.find("ncx:navLabel", _NCX_NS) is not None]
        else:
            links = _NAV_LINK.findall(raw.decode("utf-8", "replace"))
        for src, label in links:
            key = posixpath.normpath(posixpath.join(posixpath.dirname(at), src.split("#")[0]))
            titles.setdefault(key, _title(label))
    return titles


def epub_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per chapter in the reading order (the package's spine), labelled 'chapter N: Title'."""
    check_zip(path, limits, ".epub")
    from defusedxml import ElementTree

    try:
        with zipfile.ZipFile(path) as z:
            container = ElementTree.fromstring(z.read("META-INF/container.xml"))
            rootfile = container.find(".//c:rootfile", _CONTAINER_NS)
            if rootfile is None:
                raise IngestError("not a valid .epub (no package file in META-INF/container.xml)")
            opf_path = rootfile.get("full-path", "")
            opf = ElementTree.fromstring(z.read(opf_path))
            base = posixpath.dirname(opf_path)
            manifest = {i.get("id"): i.get("href") for i in opf.findall(".//opf:manifest/opf:item", _OPF_NS)}
            spine = [manifest.get(r.get("idref")) for r in opf.findall(".//opf:spine/opf:itemref", _OPF_NS)]
            toc = _toc_titles(z, opf, base, manifest)
            out, n, seen = [], 0, set()
            for href in filter(None, spine):
                name = posixpath.normpath(posixpath.join(base, href.split("#")[0]))
                if name in seen:  # a spine that lists a chapter once per section (sisu's EPUBs do)
                    continue
                seen.add(name)
                try:
                    html = decode_html(z.read(name))
                except KeyError:
                    log.warning("%s: spine item %s is missing", path, name)
                    continue
                text = clean_text(html_to_text(html))
                if not text:
                    continue
                n += 1
                m = _HEADING.search(html)
                title = toc.get(name) or (_title(m.group(1)) if m else "")
                out.append(Page(n, text, f"chapter {n}" + (f": {title}" if title else "")))
            return out
    except IngestError:
        raise
    except Exception as e:  # noqa: BLE001 - defusedxml refusals (entities, DTDs) land here too
        raise library_error(".epub", e) from e
