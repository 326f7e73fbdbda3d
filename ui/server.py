"""Serving the UI: a FastAPI app with the Gradio app mounted, and the document route.

Why not ``Blocks.launch``: "open the cited document" needs a route of our
own (``/document/{id}``) that serves only indexed documents, and one uvicorn
server for both keeps one port, one host check and one shutdown path.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass

import gradio as gr
import uvicorn
from fastapi import FastAPI, HTTPException
from fastapi.responses import FileResponse, PlainTextResponse
from mcp.server.transport_security import TransportSecuritySettings

from app.runtime import Runtime

from . import openai_api, viewer
from .web import CSS, TITLE, build_blocks, document_response_headers, theme

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this computer."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: what it resolves to
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except OSError:
            return False


def password_ok(header: str | None, password: str) -> bool:
    """The password, compared in constant time: in HTTP Basic credentials (any user name; what a
    browser sends), or as a bearer token (what OpenAI and MCP clients send as their API key)."""
    if not header:
        return False
    if header.startswith("Bearer "):
        given = header[7:]
    elif header.startswith("Basic "):
        try:
            _, _, given = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
    else:
        return False
    return hmac.compare_digest(given.encode(), password.encode())


def create_app(runtime: Runtime, *, password: str | None = None, host: str = "127.0.0.1") -> FastAPI:
    """The web app: ``/document/{id}``, the OpenAI-compatible API at ``/v1``, MCP at ``/mcp``
    and the Gradio UI at ``/``.

    With a password, every request (page, API, documents, event streams, MCP)
    needs it, as HTTP Basic credentials or a bearer token: one check in front of
    everything, rather than Gradio's login form, which would leave our own
    routes to guard separately.
    """
    from .mcp_server import build_server

    mcp = build_server(runtime)
    # MCP's own DNS-rebinding guard knows loopback hosts only; beyond them the password guards every route.
    security = None if is_loopback(host) else TransportSecuritySettings(enable_dns_rebinding_protection=False)
    mcp_app = mcp.streamable_http_app(streamable_http_path="/mcp", transport_security=security, host=host)
    # A mounted app's lifespan does not run: the MCP session manager's runs in ours (gradio chains it).
    app = FastAPI(title=TITLE, docs_url=None, redoc_url=None, openapi_url=None,
                  lifespan=lambda _app: mcp.session_manager.run())
    app.router.routes.extend(mcp_app.routes)  # /mcp exactly (a mount would redirect /mcp to /mcp/)

    if password:
        @app.middleware("http")
        async def require_password(request, call_next):  # noqa: ANN001, ANN202
            if password_ok(request.headers.get("authorization"), password):
                return await call_next(request)
            return PlainTextResponse("the password is required", status_code=401,
                                     headers={"WWW-Authenticate": f'Basic realm="{TITLE}", charset="UTF-8"'})

    app.include_router(openai_api.router(runtime))
    app.include_router(viewer.router(runtime))

    @app.get("/document/{document_id}")
    def document(document_id: int) -> FileResponse:
        path = runtime.document_file(document_id)
        if path is None:
            raise HTTPException(status_code=404, detail="not an indexed document")
        media, headers = document_response_headers(path)
        return FileResponse(path, media_type=media, headers=headers)

    blocks = build_blocks(runtime)
    blocks.queue(default_concurrency_limit=1)
    return gr.mount_gradio_app(app, blocks, path="", footer_links=["api"], css=CSS, theme=theme(),
                               ssr_mode=False)


@dataclass
class Server:
    """A uvicorn server on a thread (tests, and ``serve`` before it blocks). ``start()`` returns once it listens."""

    app: FastAPI
    host: str = "127.0.0.1"
    port: int = 7860

    def __post_init__(self) -> None:
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 60.0) -> "Server":
        self._thread = threading.Thread(target=self._server.run, name="lclm-ui", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise OSError(f"the UI server could not start on {self.host}:{self.port} (see the log)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the UI server did not start within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            self._thread = None
