"""The document viewer: a cited passage shown in its document, marked.

``/view/{document_id}?segment={segment_id}`` opens the document at the passage.
- A PDF is rendered by PDF.js (``ui/pdfjs.py``, served from ``/pdfjs/``), one page with its text
  layer. ``static/viewer.mjs`` then marks the passage's own words on that page.
- Text, Markdown and HTML (shown as text) appear as the index read them, with the passage in
  ``<mark>``. The passage is found by its character span, or by its text where the file has
  changed since it was indexed.

Where PDF.js is not fetched, a PDF opens in the browser's viewer at the cited page, unmarked.
Every route serves only indexed documents under watched folders, as ``/document`` does. The
page loads nothing from outside this computer, and its content security policy says so.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse

from app.assistant import Citation
from app.runtime import Runtime

from . import pdfjs

STATIC = Path(__file__).resolve().parent / "static"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self' data: blob:; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'self'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; background: #f2f2f2; color: #222; }
header { position: sticky; top: 0; z-index: 10; background: #fff; padding: 0.6em 1em; border-bottom: 1px solid #ccc; }
#status { color: #555; margin-left: 0.8em; }
#page-box { position: relative; margin: 1em auto; background: #fff; box-shadow: 0 1px 4px rgba(0,0,0,.25);
            --user-unit: 1; --total-scale-factor: calc(var(--scale-factor) * var(--user-unit));
            --scale-round-x: 1px; --scale-round-y: 1px; }  /* what pdf_viewer.css sets on .pdfViewer .page */
#page-box canvas { display: block; }
.textLayer .passage-mark { background: rgba(255, 196, 0, 0.45); color: transparent; border-radius: 2px; }
pre.doc { white-space: pre-wrap; max-width: 60em; margin: 1em auto; padding: 1em 1.5em; background: #fff;
          font: 0.95em/1.5 ui-monospace, monospace; box-shadow: 0 1px 4px rgba(0,0,0,.25); }
pre.doc mark { background: #ffd54a; }
details { max-width: 60em; margin: 1em auto; }
"""


def _page(title: str, header: str, body: str, scripts: str = "", head: str = "") -> HTMLResponse:
    doc = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"{head}<style>{STYLE}</style></head><body><header>{header}</header>{body}{scripts}</body></html>")
    return HTMLResponse(doc, headers=HEADERS)


def locate(text: str, passage: str, start: int | None, end: int | None) -> tuple[int, int] | None:
    """Where the passage is in the text: its recorded span if the text there is still the passage,
    else the first place the passage's text occurs (the file changed), else None."""
    squeeze = lambda s: " ".join(s.split())  # noqa: E731
    if start is not None and end is not None and squeeze(text[start:end]) == squeeze(passage):
        return start, end
    at = text.find(passage.strip())
    return (at, at + len(passage.strip())) if at >= 0 else None


def document_url(c: Citation) -> str:
    """The file itself (a PDF at its page): what API clients get as ``url``."""
    return f"/document/{c.document_id}" + (f"#page={c.page}" if c.page else "")


def view_url(c: Citation) -> str:
    """The document in this viewer with the passage marked: what the chat's links open."""
    return f"/view/{c.document_id}?segment={c.segment_id}"


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter()

    @api.get("/view/{document_id}")
    def view(document_id: int, segment: int):  # noqa: ANN202 - a page or a redirect
        found = runtime.passage(document_id, segment)
        if found is None:
            raise HTTPException(status_code=404, detail="not a passage of an indexed document")
        doc, seg = found
        name = Path(doc.path).name
        raw = f"/document/{doc.id}"
        if doc.type == "pdf":
            page = seg.page or 1
            if pdfjs.assets_dir() is None:  # no PDF.js here: the browser's viewer, at the page
                return RedirectResponse(f"{raw}#page={page}", status_code=307)
            info = json.dumps({"url": raw, "page": page, "text": seg.text}).replace("</", "<\\/")
            header = (f"<b>{html.escape(name)}</b>, page {page} <a href='{raw}#page={page}'>open the PDF</a>"
                      f"<span id='status'>Loading the page…</span>")
            body = ("<div id='page-box'><canvas id='page-canvas'></canvas><div id='text-layer' class='textLayer'></div>"
                    f"</div><details><summary>The cited passage, as the index holds it</summary>"
                    f"<pre class='doc'>{html.escape(seg.text)}</pre></details>")
            scripts = (f"<script type='application/json' id='passage'>{info}</script>"
                       "<script type='module' src='/static/viewer.mjs'></script>")
            return _page(f"{name}, page {page}", header, body, scripts,
                         head="<link rel='stylesheet' href='/pdfjs/pdf_viewer.css'>")
        text = runtime.document_text(doc, seg.page) or ""
        span = locate(text, seg.text, seg.char_start, seg.char_end)
        if span is None:
            note, shown = "The passage is no longer in this file as it was indexed; it is shown above the text.", (
                f"<mark id='passage'>{html.escape(seg.text)}</mark>\n\n{html.escape(text)}")
        else:
            a, b = span
            note = "The cited passage is marked."
            shown = f"{html.escape(text[:a])}<mark id='passage'>{html.escape(text[a:b])}</mark>{html.escape(text[b:])}"
        where = f", {html.escape(seg.location)}" if seg.location else f", page {seg.page}" if seg.page else ""
        header = (f"<b>{html.escape(name)}</b>{where} <a href='{raw}'>open the file</a><span id='status' "
                  f"data-highlight='{'whole' if span else 'none'}'>{note}</span>")
        return _page(name, header, f"<pre class='doc'>{shown}</pre>",
                     "<script type='module' src='/static/scroll.mjs'></script>")

    @api.get("/pdfjs/{name}")
    def pdfjs_file(name: str) -> FileResponse:
        d = pdfjs.assets_dir()
        if d is None or name not in pdfjs.FILES.values():
            raise HTTPException(status_code=404, detail="no such file")
        media = "text/javascript" if name.endswith(".mjs") else "text/css" if name.endswith(".css") else "text/plain"
        return FileResponse(d / name, media_type=media, headers={"X-Content-Type-Options": "nosniff"})

    @api.get("/static/{name}")
    def static_file(name: str) -> FileResponse:
        if name not in ("viewer.mjs", "scroll.mjs"):
            raise HTTPException(status_code=404, detail="no such file")
        return FileResponse(STATIC / name, media_type="text/javascript", headers={"X-Content-Type-Options": "nosniff"})

    return api
