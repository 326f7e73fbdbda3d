"""Spreadsheets (.xlsx, .ods) as one page per sheet, rows as lines, with the sheet's own row numbers.

openpyxl (MIT) in read-only mode streams an .xlsx row by row, so a sheet is never held whole; odfpy
reads .ods, whose runs of equal rows and cells are stored once with a repeat count and are never
expanded when empty. A header row makes each later row read 'Name: Ann; Age: 31', so the rows a segment
holds still say what their numbers mean; a citation names 'Sheet1 rows 20-40'.
"""

from __future__ import annotations

import re
from pathlib import Path

from .ingest import IngestError, IngestLimits, Page
from .office import PageBuilder, block_text, library_error, odf_load, odf_text, odf_name, check_zip


def _cell(v: object) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return " ".join(str(v).split())


class _Sheet:
    """A sheet as lines a reader can follow. When the first row is a header (all text), each later row
    reads 'Name: Ann; Age: 31', so any rows a segment holds still say what their numbers are."""

    def __init__(self, limits: IngestLimits, name: str) -> None:
        self.page, self.header, self.limits, self.name = PageBuilder(), None, limits, name

    def row(self, number: int, values: list[str]) -> None:
        while values and not values[-1]:
            values.pop()
        if not any(values):
            return
        if self.header is None and self.page.size == 0:
            if all(v and not re.fullmatch(r"[-+\d.,%]+", v) for v in values) and len(values) > 1:
                self.header = values
        if self.header is not None and values is not self.header:
            line = "; ".join(f"{h}: {v}" if h else v for h, v in zip(self.header + [""] * len(values), values) if v)
        else:
            line = " | ".join(values)
        self.page.mark(str(number))
        self.page.parts.append(line + "\n")
        self.page.size += len(line) + 1
        if self.page.size > self.limits.max_page_chars:
            raise IngestError(f"sheet {self.name!r} has over {self.limits.max_page_chars:,} characters of cells, "
                              "over the page limit (--max-page-chars)", "skipped")


def xlsx_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per sheet (streamed row by row: openpyxl's read-only mode never holds a sheet), the
    values as last computed, with the row numbers of each segment."""
    check_zip(path, limits, ".xlsx")
    import openpyxl

    try:
        book = openpyxl.load_workbook(str(path), read_only=True, data_only=True)
    except Exception as e:  # noqa: BLE001
        raise library_error(".xlsx", e) from e
    try:
        out = []
        for n, ws in enumerate(book.worksheets, 1):
            sheet = _Sheet(limits, ws.title)
            if hasattr(ws, "iter_rows"):  # a chart sheet has no cells
                for r, row in enumerate(ws.iter_rows(values_only=True), 1):
                    sheet.row(r, [block_text(_cell(v)) for v in row[:1000]])
            out.append(sheet.page.page(n, ws.title, rows=True))
        return out
    except IngestError:
        raise
    except Exception as e:  # noqa: BLE001
        raise library_error(".xlsx", e) from e
    finally:
        book.close()


def ods_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per sheet with row numbers. ODF stores a run of equal rows or cells once with a repeat
    count (an empty sheet is one row repeated a million times), so repeats advance the row number
    but an empty one is never expanded."""
    from odf import table

    doc = odf_load(path, limits, ".ods")
    try:
        out = []
        for n, t in enumerate(doc.spreadsheet.getElementsByType(table.Table), 1):
            name = t.getAttribute("name") or f"Sheet{n}"
            sheet, r = _Sheet(limits, name), 0
            for row in t.getElementsByType(table.TableRow):
                repeat = int(row.getAttribute("numberrowsrepeated") or 1)
                values: list[str] = []
                for cell in row.childNodes:
                    if odf_name(cell) not in ("table-cell", "covered-table-cell"):
                        continue
                    v = block_text(odf_text(cell))
                    cols = int(cell.getAttribute("numbercolumnsrepeated") or 1)
                    values.extend([v] * (min(cols, 1000 - len(values)) if v else min(cols, 1)))
                    if len(values) >= 1000:
                        break
                if any(values):
                    for k in range(min(repeat, 10_000)):
                        sheet.row(r + k + 1, list(values))
                r += repeat
            out.append(sheet.page.page(n, name, rows=True))
        return out
    except IngestError:
        raise
    except Exception as e:  # noqa: BLE001
        raise library_error(".ods", e) from e


READERS = {"xlsx": xlsx_pages, "ods": ods_pages}
