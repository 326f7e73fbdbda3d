"""``lclm-docs``, with ``serve``: the app's command line plus the chat UI.

The console script points here rather than at ``app.cli`` because imports go
one way (ui -> app): the app's CLI cannot know the UI, so the UI adds itself.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import webbrowser

from app.cli import COMMAND_MODULES, UserError
from app.cli import main as app_main
from app.settings import Settings

log = logging.getLogger(__name__)
PASSWORD_ENV = "LCLM_DOCS_PASSWORD"

# Before gradio is imported: no usage analytics leave this computer.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="the chat UI in the browser, with the folders watched and indexed")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this computer only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--password-env", default=PASSWORD_ENV, metavar="NAME",
                   help=f"environment variable holding the UI password (default {PASSWORD_ENV}); required when "
                        "--host is not this computer only. Browsers ask for it (any user name)")
    p.add_argument("--folder", dest="folders", action="append", default=[], metavar="PATH",
                   help="a folder to add to the library (repeatable; the library's folders are watched anyway)")
    p.add_argument("--ratio", type=int, choices=(4, 8, 16), help=f"compression ratio N (default: {Settings.ratio})")
    p.add_argument("--backend", choices=("torch", "llama.cpp"), help="decoder backend (default: torch)")
    p.add_argument("--open", dest="open_browser", action="store_true", help="open the UI in the default browser")
    p.set_defaults(func=cmd_serve)
    m = sub.add_parser("mcp", help="an MCP server over stdio (for desktop MCP clients): ask, search, list_documents")
    m.add_argument("--folder", dest="folders", action="append", default=[], metavar="PATH",
                   help="a folder to add to the library (repeatable; the library's folders are watched anyway)")
    m.add_argument("--ratio", type=int, choices=(4, 8, 16), help=f"compression ratio N (default: {Settings.ratio})")
    m.add_argument("--backend", choices=("torch", "llama.cpp"), help="decoder backend (default: torch)")
    m.set_defaults(func=cmd_mcp)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from app.runtime import Runtime
    from app.services import ServiceError

    from .server import Server, create_app, is_loopback

    password = os.environ.get(args.password_env) or None
    if not is_loopback(args.host) and not password:
        raise UserError(f"--host {args.host} lets other computers in: set a password in ${args.password_env} "
                        "first (or keep the default, 127.0.0.1)")
    t0 = time.perf_counter()
    _stop_on_sigterm()
    settings = settings.with_overrides(ratio=args.ratio, backend=args.backend)
    runtime = Runtime(settings)
    try:
        runtime.start(args.folders)
    except ServiceError as e:
        raise UserError(str(e)) from e
    server = Server(create_app(runtime, password=password, host=args.host), args.host, args.port)
    try:
        try:
            server.start()
        except OSError as e:
            raise UserError(f"{e}; is the port taken? pass --port") from e
        log.info("%s; %s", runtime.models.source if runtime.models else "?", runtime.status().line())
        print(f"Latent Context Docs is ready at {server.url} (started in {time.perf_counter() - t0:.1f} s); "
              "Ctrl-C stops", flush=True)
        if args.open_browser:
            webbrowser.open(server.url)
        server.wait()
    except KeyboardInterrupt:
        print("stopping (documents not finished stay pending)", file=sys.stderr)
    finally:
        server.stop()
        runtime.close()
    return 0


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    """The MCP server on stdin/stdout; the library is watched and indexed meanwhile, as with ``serve``.

    stdout carries the protocol alone: logging goes to stderr (``app.cli`` sets that up).
    """
    from app.runtime import Runtime
    from app.services import ServiceError

    from .mcp_server import build_server

    _stop_on_sigterm()
    runtime = Runtime(settings.with_overrides(ratio=args.ratio, backend=args.backend))
    try:
        runtime.start(args.folders)
    except ServiceError as e:
        raise UserError(str(e)) from e
    try:
        build_server(runtime).run("stdio")
    except KeyboardInterrupt:
        pass
    finally:
        runtime.close()
    return 0


def _interrupt(signum, frame) -> None:  # noqa: ANN001
    raise KeyboardInterrupt


def _stop_on_sigterm() -> None:
    """SIGTERM (a service manager, ``kill``) stops like Ctrl-C: documents in flight go back to pending,
    the store is closed, the exit status is 0."""
    try:
        signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (embedded use): leave the default
        pass


def main(argv: list[str] | None = None) -> int:
    return app_main(argv, modules=[*COMMAND_MODULES, "ui.cli"])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
