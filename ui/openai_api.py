"""An OpenAI-compatible API over the user's documents: ``/v1/models`` and ``/v1/chat/completions``.

Why: editors, scripts and other assistants already speak OpenAI's chat API. Pointed at
``http://127.0.0.1:PORT/v1`` they can use the user's folders as a model, with no plug-in.

What a request means here:
- The question is the last user message; earlier turns are not read. Each answer is
  grounded in the documents, not in the chat so far.
- The model picks the mode. ``latent-context-docs`` uses the app's current setting;
  ``latent-context-docs:latent``, ``:rag`` and ``:full`` pick one.
- An optional ``folders`` field (a list of paths, sent as extra body) limits the documents.
- The answer is stored as a chat in the app's history, like one asked in the UI.

Citations travel twice:
- as numbered sources at the end of the text, for clients that only show text;
- as data, in a ``citations`` field of the response. When streaming, that field is on the
  last chunk. Each citation has number, document, path, page, document_id, segment_id, url
  (the file), view_url (the app's viewer with the passage marked) and text.

The UI's rules apply: loopback only unless a password is set. With a password, send it as
the API key (``Authorization: Bearer <password>``).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Body
from fastapi.responses import JSONResponse, StreamingResponse

from app.assistant import AssistantError, Scope, place
from app.runtime import Reply, Runtime
from app.services import ServiceError

from .viewer import document_url, view_url

MODEL = "latent-context-docs"
MODES = ("latent", "rag", "full")
SOURCE_CHARS = 200  # of each passage in the sources list (the whole passage is in `citations`)


def model_ids() -> list[str]:
    return [MODEL, *(f"{MODEL}:{m}" for m in MODES)]


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "param": None, "code": None}}, status_code=status)


def _question(messages: object) -> str:
    """The last user message's text (a string, or content parts of type text)."""
    if not isinstance(messages, list):
        return ""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                content = " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
            return content if isinstance(content, str) else ""
    return ""


def citation_data(reply: Reply) -> list[dict]:
    out = []
    for c in reply.answer.citations:
        out.append({"number": c.number, "document": Path(c.path).name, "path": c.path, "page": c.page,
                    "location": c.location, "where": c.where,
                    "document_id": c.document_id, "segment_id": c.segment_id, "url": document_url(c),
                    "view_url": view_url(c), "text": c.text})
    return out


def sources_text(citations: list[dict]) -> str:
    """The numbered sources a text-only client shows under the answer ('' when there are none)."""
    if not citations:
        return ""
    lines = []
    for c in citations:
        where = c.get("where") or place(c["path"], c["page"])
        text = " ".join(c["text"].split())
        text = text if len(text) <= SOURCE_CHARS else text[: SOURCE_CHARS - 1].rstrip() + "…"
        lines.append(f"[{c['number']}] {where}: \"{text}\"")
    return "\n\nSources:\n" + "\n".join(lines)


def router(runtime: Runtime) -> APIRouter:
    api = APIRouter(prefix="/v1")

    @api.get("/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": m, "object": "model", "created": 0, "owned_by": "local"}
                                           for m in model_ids()]}

    @api.post("/chat/completions")
    def chat_completions(body: dict = Body(...)):  # noqa: ANN202 - a JSON or an event-stream response
        # A plain def: FastAPI runs it on a worker thread, so the seconds of prefill before the
        # first piece never block the server's event loop (the UI keeps answering meanwhile).
        model = body.get("model") or MODEL
        if model not in model_ids():
            return _error(404, f"no model {model!r}: use one of {', '.join(model_ids())}", "model_not_found")
        question = _question(body.get("messages"))
        if not question.strip():
            return _error(400, "messages holds no user message with text")
        folders = body.get("folders") or ()
        if not isinstance(folders, (list, tuple)) or not all(isinstance(f, str) for f in folders):
            return _error(400, "folders must be a list of paths")
        mode = model.partition(":")[2] or None
        scope = Scope(folders=tuple(folders)) if folders else None
        stream = runtime.ask(question, scope=scope, mode=mode)
        try:
            first = next(stream)  # the question is refused (nothing indexed, ...) before anything streams
        except (AssistantError, ServiceError) as e:
            return _error(400, str(e))
        rid, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.get("stream"):
            return StreamingResponse(_events(rid, created, model, first, stream), media_type="text/event-stream")
        reply = final_reply(_pieces(first, stream))
        cites = citation_data(reply)
        a = reply.answer
        return {
            "id": rid, "object": "chat.completion", "created": created, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a.text + sources_text(cites)},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": a.positions, "completion_tokens": a.new_tokens,
                      "total_tokens": a.positions + a.new_tokens},
            "citations": cites, "chat_id": reply.chat_id,
        }

    return api


def final_reply(stream: Iterator[str | Reply]) -> Reply:
    """The stored answer at the end of a runtime answer stream (the text pieces before it are its text)."""
    *_, reply = stream
    assert isinstance(reply, Reply)
    return reply


def _pieces(first: str | Reply, rest: Iterator[str | Reply]) -> Iterator[str | Reply]:
    yield first
    yield from rest


def _events(rid: str, created: int, model: str, first: str | Reply, rest: Iterator[str | Reply]) -> Iterator[str]:
    """Server-sent events as OpenAI streams them: a role chunk, content chunks, a last chunk, [DONE]."""

    def chunk(delta: dict, finish: str | None = None, **extra) -> str:
        data = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    for piece in _pieces(first, rest):
        if isinstance(piece, Reply):
            cites = citation_data(piece)
            text = sources_text(cites)
            if text:
                yield chunk({"content": text})
            yield chunk({}, "stop", citations=cites, chat_id=piece.chat_id)
        elif piece:
            yield chunk({"content": piece})
    yield "data: [DONE]\n\n"
