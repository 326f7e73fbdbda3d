"""An MCP server over the user's documents: ``ask``, ``search`` and ``list_documents``.

Why: MCP clients (desktop assistants, editors, agents) can then use the user's folders as a
tool. It is served two ways:
- over stdio, with ``lclm-docs mcp``. A desktop client starts that command itself.
- over HTTP at ``/mcp``, beside the UI (``lclm-docs serve``). The UI's loopback and password
  rules apply; with a password, send it as a bearer token.

The tools return structured data as well as text. Citations are data: document, path, page,
passage text and ids, never text parsed back out of the answer. The tools call the same
``Runtime`` as the UI, so an answer asked here is stored in the chat history too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

from app.assistant import AssistantError, Scope
from app.runtime import Runtime
from app.services import ServiceError

from .openai_api import citation_data, final_reply

NAME = "latent-context-docs"
INSTRUCTIONS = ("The user's own documents (folders they chose), read through compressed latent context. Use `search` "
                "to find passages by their words, `ask` for an answer with the passages it cites (document, page, "
                "text), and `list_documents` to see what is indexed.")


class Cited(BaseModel):
    """A passage an answer read and cites."""

    number: int
    document: str
    path: str
    page: int | None
    document_id: int
    segment_id: int
    url: str  # the document on the UI's server (path only)
    view_url: str  # the document in the UI's viewer, with this passage marked
    text: str


class AskResult(BaseModel):
    answer: str
    citations: list[Cited]
    chat_id: int
    notes: dict[str, Any]  # what the answer could not read as planned (documents left out, read in part, ...)


class Passage(BaseModel):
    document: str
    path: str
    page: int | None
    document_id: int
    segment_id: int
    score: float
    text: str
    location: str | None = None  # "slide 4", "Sheet1 rows 20-40", "chapter 3: Install"; None where the page says it


class DocumentInfo(BaseModel):
    document_id: int
    path: str
    status: str
    pages: int | None
    error: str | None


def _scope(folders: list[str] | None) -> Scope | None:
    return Scope(folders=tuple(folders)) if folders else None


def build_server(runtime: Runtime) -> MCPServer:
    """The MCP server; its tools run on worker threads (an answer takes seconds of decoder time)."""
    server = MCPServer(NAME, instructions=INSTRUCTIONS)

    def _ask(question: str, folders: list[str] | None, mode: str | None) -> AskResult:
        try:
            reply = final_reply(runtime.ask(question, scope=_scope(folders), mode=mode))
        except (AssistantError, ServiceError, ValueError) as e:  # the message says what to do: the client shows it
            raise ToolError(str(e)) from e
        return AskResult(answer=reply.answer.text, citations=[Cited(**c) for c in citation_data(reply)],
                         chat_id=reply.chat_id, notes=reply.answer.notes())

    @server.tool()
    async def ask(question: str, folders: list[str] | None = None, mode: str | None = None) -> AskResult:
        """Answer a question from the user's indexed documents, with the passages the answer cites.

        folders: limit the documents to these folders (paths); mode: latent (default), rag or full.
        """
        return await anyio.to_thread.run_sync(_ask, question, folders, mode)

    @server.tool()
    async def search(query: str, limit: int = 10, folders: list[str] | None = None) -> list[Passage]:
        """Passages of the user's indexed documents that contain the query's words, best first."""
        hits = await anyio.to_thread.run_sync(lambda: runtime.search(query, limit=limit, scope=_scope(folders)))
        return [Passage(document=Path(h.path).name, path=h.path, page=h.page, document_id=h.document_id,
                        segment_id=h.segment_id, score=round(h.score, 4), text=text, location=h.location)
                for h, text in hits]

    @server.tool()
    async def list_documents() -> list[DocumentInfo]:
        """Every document in the library, with its indexing status (indexed, pending, error and why)."""
        docs = await anyio.to_thread.run_sync(runtime.documents)
        return [DocumentInfo(document_id=d.id, path=d.path, status=d.status, pages=d.page_count, error=d.error)
                for d in docs]

    return server
