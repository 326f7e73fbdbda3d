"""The Gradio Blocks app: chat, library, settings. It calls only :class:`app.runtime.Runtime`.

Layout: a chat tab (chat history on the left; the conversation with each
answer's passages as collapsible boxes; the last answer's passages with
"open" links and a control to read one more passage and answer again), a
library tab (folders, documents with status and reason, live progress) and a
settings tab. Under the question: Stop (the answer so far is kept, marked as
stopped), Regenerate (the last question answered again, a second stored answer)
and Export (the chat as Markdown with its sources). The same operations are
exposed as API endpoints for ``gradio_client`` (``/ask``, ``/expand``,
``/regenerate``, ``/stop``, ``/export``, ``/library``, ``/add_folder``).

Document text is never trusted: every passage is HTML-escaped (and
markdown-escaped in the chat) before it reaches the page, so a document
containing markup shows it as text.
"""

from __future__ import annotations

import html
import logging
import re
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from app.assistant import AssistantError, Citation, Scope, raw_notice
from app.ocr import formats_note
from app.runtime import Reply, Runtime, citation_from_row
from app.services import ServiceError
from latent_store import NotFound

from .viewer import document_url, view_url

log = logging.getLogger(__name__)

TITLE = "Latent Context Docs"
MODES = ["latent", "full", "rag"]
BACKENDS = ["torch", "llama.cpp"]
RATIOS = [4, 8, 16]
DOC_HEADERS = ["id", "status", "document", "pages", "segments", "reason", "open"]
DOC_TYPES = ["number", "str", "str", "str", "number", "str", "markdown"]
CSS = """
.passage { white-space: pre-wrap; font-size: 0.92em; margin: 0.3em 0 0.6em 0; }
.passages details { border: 1px solid var(--border-color-primary); border-radius: 6px; padding: 0.3em 0.6em; margin: 0.3em 0; }
.passages summary { cursor: pointer; }
"""



def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts: the stock theme loads Google Fonts, and a local
    document assistant makes no request off this computer."""
    return gr.themes.Default(font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
                             font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"])


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>$])")


# ------------------------------------------------------------ rendering
def md_text(text: str) -> str:
    """Text shown literally inside markdown: HTML escaped, markdown's specials backslashed."""
    return _MD_SPECIAL.sub(r"\\\1", html.escape(text, quote=False))


def where(c: Citation) -> str:
    return c.where


def citation_messages(cites: list[Citation]) -> list[dict]:
    """One collapsed chat box per cited passage: title '[n] file, page p', body the passage."""
    out = []
    for c in cites:
        body = md_text(c.text.strip()) + f"\n\n[open {md_text(Path(c.path).name)}]({view_url(c)})"
        out.append({"role": "assistant", "content": body,
                    "metadata": {"title": f"[{c.number}] {where(c)}", "status": "done"}})
    return out


def passages_html(cites: list[Citation], more: list[Citation]) -> str:
    """The last answer's passages as escaped HTML <details>, cited first, then those it could read next."""
    if not cites and not more:
        return "<div class='passages'><p>No passages yet: ask a question.</p></div>"

    def block(c: Citation, label: str) -> str:
        return (f"<details><summary>{html.escape(label)} {html.escape(where(c))} "
                f"<a href='{html.escape(view_url(c))}' target='_blank' rel='noopener'>open</a></summary>"
                f"<div class='passage'>{html.escape(c.text.strip())}</div></details>")

    parts = ["<div class='passages'>"]
    if cites:
        parts.append("<p><b>Cited</b> (read as text for this answer)</p>")
        parts += [block(c, f"[{c.number}]") for c in cites]
    if more:
        parts.append("<p><b>Also relevant</b> (read only in compressed form; pick one below to read it too)</p>")
        parts += [block(c, "·") for c in more]
    parts.append("</div>")
    return "".join(parts)


def more_choices(more: list[Citation]) -> list[tuple[str, int]]:
    return [(f"{where(c)}: {' '.join(c.text.split())[:70]}…", c.segment_id) for c in more]


def notice_messages(notes: dict | None) -> list[dict]:
    """What an answer could not read, as chat messages: the same words live and in a reopened chat."""
    notes = notes or {}
    msgs = []
    if notes.get("left_out"):
        msgs.append({"role": "assistant", "content": md_text(
            "Not read (did not fit the context): " + ", ".join(Path(p).name for p in notes["left_out"]))})
    if notes.get("partial"):
        msgs.append({"role": "assistant", "content": md_text(
            "Read in part (the most relevant passages; the rest did not fit the context): " + ", ".join(
                f"{Path(p).name} ({read:,} of {total:,} passages)" for p, (read, total) in notes["partial"].items()))})
    if notes.get("stopped"):
        msgs.append({"role": "assistant", "content": md_text("Stopped before the end: the answer above is what had "
                                                             "been written.")})
    if notes.get("regenerated"):
        msgs.append({"role": "assistant", "content": md_text("Answered again (regenerated).")})
    if notes.get("raw_segments"):
        msgs.append({"role": "assistant", "content": md_text(
            raw_notice(int(notes["raw_segments"])) + " (they are compressed in the background; later answers read less)")})
    return msgs


def history_messages(runtime: Runtime, chat_id: int) -> tuple[list[dict], list[Citation], list[Citation], int | None]:
    """A stored chat as chatbot messages, plus the last answer's passages and id."""
    msgs: list[dict] = []
    cites: list[Citation] = []
    more: list[Citation] = []
    last_id = None
    for m in runtime.messages(chat_id):
        msgs.append({"role": m.role, "content": m.content if m.role == "user" else md_text(m.content)})
        if m.role == "assistant":
            rows = m.citations or []
            cites = [citation_from_row(r) for r in rows if r.get("kind", "cited") == "cited"]
            more = [citation_from_row(r) for r in rows if r.get("kind") == "more"]
            msgs += notice_messages(m.notes)
            msgs += citation_messages(cites)
            last_id = m.id
    return msgs, cites, more, last_id


def chat_choices(runtime: Runtime) -> list[tuple[str, int]]:
    return [(f"{c.title or 'untitled'} · {time.strftime('%d %b %H:%M', time.localtime(c.updated_at))}", c.id)
            for c in runtime.chats()]


def documents_rows(runtime: Runtime) -> list[list]:
    rows = []
    for d in runtime.documents():
        rows.append([d.id, d.status, d.path, d.page_count or "", d.n_segments, d.error or "",
                     f"[open](/document/{d.id})" if d.status == "indexed" else ""])
    return rows


def scope_of(folders: list[str] | None) -> Scope | None:
    """The folders picked in the chat's "Ask over" box, or None for every document."""
    picked = tuple(f for f in (folders or []) if f)
    return Scope(folders=picked) if picked else None


def answer_payload(reply: Reply) -> dict:
    a = reply.answer
    cite = lambda c: {"number": c.number, "document_id": c.document_id, "document": c.path, "page": c.page,  # noqa: E731
                      "location": c.location, "where": c.where,
                      "segment_id": c.segment_id, "char_start": c.char_start, "char_end": c.char_end,
                      "text": c.text, "url": document_url(c), "view_url": view_url(c)}
    return {"done": True, "chat_id": reply.chat_id, "message_id": reply.message_id, "text": a.text, "found": a.found,
            "mode": a.mode, "citations": [cite(c) for c in a.citations], "more": [cite(c) for c in a.more],
            "left_out": a.left_out, "partial": a.partial, "no_answer": a.junk, "raw_segments": a.raw_segments,
            "stopped": a.stopped, "regenerated": bool(reply.notes.get("regenerated")),
            "timings": a.timings}


def _payloads(start) -> Iterator[dict]:  # noqa: ANN001 - a callable that starts a runtime stream
    """An answer stream as API dicts: ``{'done': False, 'text': so far}``, then the answer's payload.
    Errors become messages for the client (the log keeps the traceback of unexpected ones)."""
    try:
        text = ""
        for piece in start():
            if isinstance(piece, Reply):
                yield answer_payload(piece)
            else:
                text += piece
                yield {"done": False, "text": text}
    except Exception as e:  # noqa: BLE001 - the user sees a message, the log the traceback
        raise _user_error(e) from e


def _user_error(e: Exception) -> gr.Error:
    if isinstance(e, (AssistantError, ServiceError, NotFound, ValueError)):
        return gr.Error(str(e))
    log.exception("unexpected error")
    return gr.Error(f"something went wrong ({type(e).__name__}); the log has the details")


# ------------------------------------------------------------------ app
def build_blocks(runtime: Runtime) -> gr.Blocks:
    """The whole UI over a started runtime."""

    # ---------------- API endpoints (gradio_client), also used by the UI
    def api_ask(question: str, chat_id: int = 0, folders: list[str] | None = None) -> Iterator[dict]:
        """Stream an answer: {'done': False, 'text': so far}, then the answer with its citations.
        ``folders``: ask over these watched folders only (default: every document)."""
        yield from _payloads(lambda: runtime.ask(question, int(chat_id) or None, scope=scope_of(folders)))

    def api_expand(chat_id: int, message_id: int, segment_id: int, folders: list[str] | None = None) -> Iterator[dict]:
        """Answer again with one more passage read as text (over the same ``folders`` as the question)."""
        yield from _payloads(lambda: runtime.expand(int(chat_id), int(message_id), int(segment_id),
                                                    scope=scope_of(folders)))

    def api_regenerate(chat_id: int, folders: list[str] | None = None) -> Iterator[dict]:
        """Answer the chat's last question again (a second stored answer), streamed like ``/ask``."""
        yield from _payloads(lambda: runtime.regenerate(int(chat_id), scope=scope_of(folders)))

    def api_stop() -> str:
        """Stop the answer being generated; it is kept, marked as stopped."""
        runtime.stop()
        return "stopping"

    def api_export(chat_id: int) -> str:
        """The chat as Markdown, with the passages each answer cites."""
        try:
            return runtime.export_markdown(int(chat_id))
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e

    def api_library() -> dict:
        """Folders, documents (status, reason) and indexing progress."""
        st = runtime.status()
        return {"folders": runtime.folders(), "status": st.line(), "indexing": st.active, "by_status": st.by_status,
                "documents": [dict(zip(DOC_HEADERS, r)) for r in documents_rows(runtime)]}

    def api_add_folder(path: str) -> str:
        try:
            return runtime.add_folder(path)
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e

    # ---------------- UI handlers
    def on_ask(question, chat_id, history, folders):
        history = list(history or [])
        question = (question or "").strip()
        if not question:
            raise gr.Error("type a question first")
        history.append({"role": "user", "content": question})
        history.append({"role": "assistant", "content": "…"})
        yield history, "", chat_id, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        yield from _stream_into(history, runtime.ask(question, int(chat_id or 0) or None, scope=scope_of(folders)),
                                chat_id)

    def on_expand(segment_id, chat_id, message_id, history, folders):
        if not (chat_id and message_id):
            raise gr.Error("ask a question first")
        if segment_id is None:
            raise gr.Error("choose a passage to read too")
        history = list(history or [])
        name = runtime.describe_segment(int(segment_id))
        history.append({"role": "user", "content": md_text(f"Read {name} too and answer again.")})
        history.append({"role": "assistant", "content": "…"})
        yield history, gr.skip(), chat_id, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        yield from _stream_into(history, runtime.expand(int(chat_id), int(message_id), int(segment_id),
                                                        scope=scope_of(folders)), chat_id)

    def _stream_into(history, stream, chat_id):
        text = ""
        try:
            for piece in stream:
                if isinstance(piece, Reply):
                    a = piece.answer
                    history[-1] = {"role": "assistant", "content": md_text(a.text)}
                    history += notice_messages(piece.notes or a.notes())
                    history += citation_messages(a.citations)
                    yield (history, "", piece.chat_id, piece.message_id, passages_html(a.citations, a.more),
                           gr.update(choices=more_choices(a.more), value=None),
                           gr.update(choices=chat_choices(runtime), value=piece.chat_id))
                    return
                text += piece
                history[-1] = {"role": "assistant", "content": md_text(text)}
                yield history, "", chat_id, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e

    def on_regenerate(chat_id, history, folders):
        if not chat_id:
            raise gr.Error("ask a question first")
        history = list(history or [])
        history.append({"role": "assistant", "content": "…"})
        yield history, gr.skip(), chat_id, gr.skip(), gr.skip(), gr.skip(), gr.skip()
        yield from _stream_into(history, runtime.regenerate(int(chat_id), scope=scope_of(folders)), chat_id)

    def on_export(chat_id):
        if not chat_id:
            raise gr.Error("open or start a chat first")
        try:
            text = runtime.export_markdown(int(chat_id))
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        title = next((c.title for c in runtime.chats() if c.id == int(chat_id)), "") or "chat"
        name = re.sub(r"[^\w-]+", "-", title).strip("-")[:50] or "chat"
        path = Path(tempfile.mkdtemp(prefix="lclm-export-")) / f"{name}.md"
        path.write_text(text, encoding="utf-8")
        return gr.update(value=str(path), visible=True)

    def on_open_chat(chat_id):
        if not chat_id:
            return [], 0, None, passages_html([], []), gr.update(choices=[], value=None)
        msgs, cites, more, last = history_messages(runtime, int(chat_id))
        return msgs, int(chat_id), last, passages_html(cites, more), gr.update(choices=more_choices(more), value=None)

    def on_new_chat():
        return [], 0, None, passages_html([], []), gr.update(choices=[], value=None), gr.update(value=None)

    def on_delete_chat(chat_id):
        if chat_id:
            runtime.delete_chat(int(chat_id))
        return ([], 0, None, passages_html([], []), gr.update(choices=[], value=None),
                gr.update(choices=chat_choices(runtime), value=None))

    def on_add_folder(path):
        try:
            msg = runtime.add_folder(path)
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        return msg, "", gr.update(choices=runtime.folders(), value=None), documents_rows(runtime)

    def on_remove_folder(path):
        try:
            msg = runtime.remove_folder(path)
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        return msg, gr.update(choices=runtime.folders(), value=None), documents_rows(runtime)

    def _exclusion(change, arg):  # noqa: ANN001 - take out / include again, then the library as it is now
        try:
            msg = change(arg)
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        return msg, documents_rows(runtime), gr.update(choices=runtime.excluded(), value=None)

    def on_exclude(doc_id):
        if not doc_id:
            raise gr.Error("type the id of the document to take out (the first column)")
        return _exclusion(runtime.exclude_document, int(doc_id))

    def on_include(path):
        return _exclusion(runtime.include, path)

    def on_reindex(doc_id):
        try:
            return runtime.reindex(int(doc_id) if doc_id else None)
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e

    last_seen: dict[str, object] = {}

    def on_tick():
        st = runtime.status()
        sig = (st.by_status, st.docs_done, st.active)
        rows = gr.skip() if last_seen.get("sig") == sig else documents_rows(runtime)
        last_seen["sig"] = sig
        return st.line(), rows

    def on_apply(ratio, backend, checkpoint, mode, expand_k, expand_tokens):
        try:
            runtime.set_answering(mode=mode, expand_k=int(expand_k), expand_tokens=int(expand_tokens))
            msg = runtime.configure(ratio=int(ratio), backend=backend, checkpoint=checkpoint or "")
        except Exception as e:  # noqa: BLE001
            raise _user_error(e) from e
        return f"Saved. {msg}. Model: {runtime.models.source if runtime.models else '?'}"

    # ---------------- layout
    s, cfg = runtime.settings, runtime.ask_config
    with gr.Blocks(title=TITLE, analytics_enabled=False) as demo:
        chat_id = gr.State(0)
        message_id = gr.State(None)
        gr.Markdown(f"## {TITLE}")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row():
                    with gr.Column(scale=1, min_width=220):
                        new_chat = gr.Button("New chat", variant="secondary")
                        chats = gr.Radio(choices=chat_choices(runtime), label="Chats", elem_id="chats")
                        delete_chat = gr.Button("Delete this chat", size="sm")
                    with gr.Column(scale=4):
                        chatbot = gr.Chatbot(label="Conversation", height=520, elem_id="chatbot",
                                             sanitize_html=True, buttons=["copy"], feedback_options=None)
                        scope = gr.Dropdown(choices=runtime.folders(), value=[], multiselect=True,
                                            label="Ask over (empty: every document)", elem_id="scope")
                        with gr.Row():
                            question = gr.Textbox(placeholder="Ask about your documents…", show_label=False,
                                                  scale=6, elem_id="question", autofocus=True)
                            send = gr.Button("Ask", variant="primary", scale=1, elem_id="ask")
                        with gr.Row():
                            stop = gr.Button("Stop", size="sm", elem_id="stop")
                            regenerate = gr.Button("Regenerate", size="sm", elem_id="regenerate")
                            export = gr.Button("Export chat (Markdown)", size="sm", elem_id="export")
                        exported = gr.File(label="Exported chat", visible=False, elem_id="exported", interactive=False)
                        with gr.Accordion("Passages of the last answer", open=True):
                            passages = gr.HTML(passages_html([], []), elem_id="passages", js_on_load=None)
                            with gr.Row():
                                more = gr.Dropdown(choices=[], label="Read one more passage as text",
                                                   elem_id="more", scale=4)
                                expand = gr.Button("Read it too and answer again", elem_id="expand", scale=1)
            with gr.Tab("Library", id="library"):
                status = gr.Markdown(runtime.status().line(), elem_id="status")
                gr.Markdown(formats_note(), elem_id="formats")
                with gr.Row():
                    folder = gr.Textbox(label="Folder to add", placeholder="/home/me/Documents", scale=4,
                                        elem_id="folder")
                    add = gr.Button("Add folder", variant="primary", scale=1, elem_id="add-folder")
                with gr.Row():
                    folders = gr.Dropdown(choices=runtime.folders(), label="Watched folders", scale=4)
                    remove = gr.Button("Remove folder", scale=1)
                library_msg = gr.Markdown("", elem_id="library-msg")
                docs = gr.Dataframe(documents_rows(runtime), headers=DOC_HEADERS, datatype=DOC_TYPES,
                                    interactive=False, elem_id="documents", wrap=True, max_height=480,
                                    show_search="search")  # a library of thousands: find a file by name
                with gr.Row():
                    reindex_id = gr.Number(label="Document id (first column; empty: all, to re-index)", precision=0,
                                           elem_id="doc-id")
                    reindex = gr.Button("Re-index", elem_id="reindex")
                    exclude = gr.Button("Take out of the library", elem_id="exclude")
                with gr.Row():
                    excluded = gr.Dropdown(choices=runtime.excluded(), label="Taken out (the files stay where they "
                                           "are)", scale=4, elem_id="excluded")
                    include = gr.Button("Include again", scale=1, elem_id="include")
            with gr.Tab("Settings", id="settings"):
                checkpoint = gr.Textbox(value=s.checkpoint or "", label="Published LCLM checkpoint (directory; "
                                        "empty: the embedded default)")
                ratio = gr.Radio(RATIOS, value=s.ratio, label="Compression ratio N (embedded default: tokens per "
                                 "latent; a change re-encodes the library)")
                backend = gr.Radio(BACKENDS, value=s.backend, label="Decoder backend (torch reads attention to pick "
                                   "passages; llama.cpp is faster on a CPU)")
                mode = gr.Radio(MODES, value=cfg.mode, label="Mode: latent (compressed + expanded passages), full "
                                "(raw text), rag (retrieved passages only)")
                expand_k = gr.Slider(0, 8, value=cfg.expand_k, step=1, label="Passages read as text per answer")
                expand_tokens = gr.Slider(200, 4000, value=cfg.expand_tokens, step=100,
                                          label="Token budget of those passages")
                apply = gr.Button("Apply", variant="primary")
                settings_msg = gr.Markdown(f"Model: {runtime.models.source if runtime.models else '?'}")

        chat_outputs = [chatbot, question, chat_id, message_id, passages, more, chats]
        send.click(on_ask, [question, chat_id, chatbot, scope], chat_outputs, api_visibility="private")
        question.submit(on_ask, [question, chat_id, chatbot, scope], chat_outputs, api_visibility="private")
        expand.click(on_expand, [more, chat_id, message_id, chatbot, scope], chat_outputs, api_visibility="private")
        regenerate.click(on_regenerate, [chat_id, chatbot, scope], chat_outputs, api_visibility="private")
        # Not queued: it must run while the answer it stops holds the queue's one slot.
        stop.click(lambda: runtime.stop(), None, None, queue=False, api_visibility="private")
        export.click(on_export, [chat_id], [exported], api_visibility="private")
        hide_export = (lambda: gr.update(value=None, visible=False), None, [exported])
        chats.select(on_open_chat, [chats], [chatbot, chat_id, message_id, passages, more],
                     api_visibility="private").then(*hide_export, api_visibility="private")
        new_chat.click(on_new_chat, None, [chatbot, chat_id, message_id, passages, more, chats],
                       api_visibility="private").then(*hide_export, api_visibility="private")
        delete_chat.click(on_delete_chat, [chat_id], [chatbot, chat_id, message_id, passages, more, chats],
                          api_visibility="private")
        def scope_choices():  # the chat's "Ask over" box follows the library
            return gr.update(choices=runtime.folders())

        for ev in (add.click(on_add_folder, [folder], [library_msg, folder, folders, docs], api_visibility="private"),
                   folder.submit(on_add_folder, [folder], [library_msg, folder, folders, docs],
                                 api_visibility="private"),
                   remove.click(on_remove_folder, [folders], [library_msg, folders, docs], api_visibility="private")):
            ev.then(scope_choices, None, [scope], api_visibility="private")
        reindex.click(on_reindex, [reindex_id], [library_msg], api_visibility="private")
        exclude.click(on_exclude, [reindex_id], [library_msg, docs, excluded], api_visibility="private")
        include.click(on_include, [excluded], [library_msg, docs, excluded], api_visibility="private")
        apply.click(on_apply, [ratio, backend, checkpoint, mode, expand_k, expand_tokens], [settings_msg],
                    api_visibility="private")
        gr.Timer(1.0).tick(on_tick, None, [status, docs], api_visibility="private", queue=False)
        demo.load(lambda: (gr.update(choices=chat_choices(runtime)), gr.update(choices=runtime.folders())), None,
                  [chats, scope], api_visibility="private")

        gr.api(api_ask, api_name="ask")
        gr.api(api_expand, api_name="expand")
        gr.api(api_regenerate, api_name="regenerate")
        gr.api(api_stop, api_name="stop", queue=False)
        gr.api(api_export, api_name="export")
        gr.api(api_library, api_name="library")
        gr.api(api_add_folder, api_name="add_folder")
    return demo


def document_response_headers(path: Path) -> tuple[str, dict[str, str]]:
    """Media type and headers for serving a document: PDFs to the browser's viewer, everything else as plain text.

    An HTML document is never rendered in the app's origin (it could run
    script there); ``sandbox`` and ``nosniff`` make sure of it.
    """
    name = quote(path.name)
    headers = {"X-Content-Type-Options": "nosniff", "Content-Disposition": f"inline; filename*=UTF-8''{name}",
               "Cache-Control": "no-store"}
    if path.suffix.lower() == ".pdf":
        return "application/pdf", headers
    headers["Content-Security-Policy"] = "sandbox; default-src 'none'"
    return "text/plain; charset=utf-8", headers
