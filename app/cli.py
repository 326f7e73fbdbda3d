"""``lclm-docs``: the command line. Subcommands live in small modules that register themselves.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)`` and sets
``func(args, settings) -> int`` on its parser. Errors a user can act on are
printed as one line (no traceback) with a non-zero exit.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from latent_store import StoreUnavailable

from .settings import ENV_HOME, Settings

COMMAND_MODULES = ["app.cli_model", "app.cli_index", "app.cli_ask", "app.cli_ray"]

log = logging.getLogger("lclm_docs")


class UserError(Exception):
    """An error whose message tells the user what to do."""


def build_parser(modules: list[str] | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lclm-docs",
        description="Latent Context Docs: ask questions over your folders through compressed latent context.",
    )
    p.add_argument("--data-dir", help=f"where all state lives (default: ${ENV_HOME}, else the user data directory)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", help="auto (default), float32, bfloat16 or float16")
    p.add_argument("--checkpoint", metavar="DIR",
                   help="a published LCLM checkpoint (directory, or hub id when online) instead of the embedded default")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules or COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return p


def main(argv: list[str] | None = None, modules: list[str] | None = None) -> int:
    """``modules``: the subcommand modules (``ui.cli`` adds ``serve``: app must not import ui)."""
    parser = build_parser(modules)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    settings = Settings.from_env(args.data_dir, device=args.device, dtype=args.dtype, checkpoint=args.checkpoint)
    try:
        return int(args.func(args, settings) or 0)
    except (UserError, StoreUnavailable) as e:
        print(f"lclm-docs: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
