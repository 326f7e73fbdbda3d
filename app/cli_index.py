"""Indexing commands: ``index PATH...``, ``watch [PATH...]`` and ``status``.

Output is for people: one line per document as it finishes (status, pages,
segments, tokens/s, ETA), a summary at the end; errors name the file and the
reason. Logging (to stderr) carries the detail.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from .cli import UserError
from .indexer import IndexerConfig, Progress, device_type
from .ingest import IngestLimits
from .settings import Settings

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--ratio", type=int, choices=(4, 8, 16), default=None,
                        help=f"compression ratio N of the compressor (default: settings, {Settings.ratio})")
    common.add_argument("--max-pages", type=int, default=IngestLimits.max_pages,
                        help="skip documents with more pages: PDF pages, TIFF frames, mailbox messages "
                             "(default %(default)s)")
    common.add_argument("--max-page-chars", type=int, default=IngestLimits.max_page_chars,
                        help="skip a document with a page (or sheet) of more text than this (default %(default)s)")
    common.add_argument("--max-file-mb", type=float, default=IngestLimits.max_file_mb,
                        help="skip larger files (default %(default)s)")
    common.add_argument("--no-ocr", dest="ocr", action="store_false",
                        help="do not OCR scanned PDF pages and images (OCR runs where Tesseract is installed)")
    common.add_argument("--ocr-lang", default=IngestLimits.ocr_languages,
                        help="Tesseract languages for OCR, e.g. eng+deu (default %(default)s)")
    common.add_argument("--batch", type=int, default=None,
                        help=f"segments per encoder batch (default {IndexerConfig.batch_segments} on a CPU, "
                             f"{IndexerConfig.for_device('cuda').batch_segments} on a GPU)")

    p = sub.add_parser("index", parents=[common], help="index files and folders once, then exit")
    # nargs="*", checked in cmd_index: `--ray PATH` must not take the path for an address
    p.add_argument("paths", nargs="*", metavar="PATH", help="files or folders (folders are scanned recursively)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="encode on a Ray cluster: ADDRESS ('auto', 'ray://host:10001', 'host:6379') or none for a "
                        "local one (needs: pip install 'latent-context-docs[ray]')")
    p.add_argument("--actors", type=int, default=1, help="with --ray: encoder actors, each holding the model (default 1)")
    p.add_argument("--shards", metavar="DIR",
                   help="with --ray: write latent shards to DIR instead of the store (archives too big for one "
                        "SQLite file); a re-run skips files already in DIR")
    p.set_defaults(func=cmd_index)

    w = sub.add_parser("watch", parents=[common], help="watch folders and keep their index up to date (Ctrl-C stops)")
    w.add_argument("paths", nargs="*", metavar="PATH", help="folders (default: the folders watched before)")
    w.add_argument("--debounce", type=float, default=0.5, help="seconds a file must be quiet before it is read")
    w.set_defaults(func=cmd_watch)

    s = sub.add_parser("status", help="every document with its status and, for errors, the reason")
    s.add_argument("--problems", action="store_true", help="only documents that are not indexed")
    s.set_defaults(func=cmd_status)


# ---------------------------------------------------------------- printing
def _duration(s: float | None) -> str:
    if s is None:
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressPrinter:
    """Turns progress events into lines: one per finished document, plus a
    heartbeat every ``every_s`` while a long document is being encoded."""

    def __init__(self, out: TextIO | None = None, every_s: float = 10.0) -> None:
        self.out = out  # None: sys.stdout at the time of printing (tests swap it)
        self.every_s = every_s
        self._last: float | None = None  # set by the first event: model loading is not a stall
        self._lock = threading.Lock()
        self.last_idle: Progress | None = None

    def __call__(self, p: Progress) -> None:
        with self._lock:
            o = p.outcome
            rate = f"{p.tokens_per_s:,.0f} tok/s" if p.tokens_per_s else "- tok/s"
            if o is not None and o.status not in ("requeued", "cancelled"):
                head = f"[{p.docs_done}/{p.docs_total}] {o.status:<8} {o.path}"
                if o.status == "indexed":
                    pages = f"{o.page_count} pages, " if o.page_count else ""
                    line = (f"{head}  ({pages}{o.n_segments} segments, {o.encoded} encoded, {o.reused} reused, "
                            f"{o.tokens:,} tokens; {rate}, ETA {_duration(p.eta_s)})")
                else:
                    line = f"{head}: {o.reason}" if o.reason else head
                self._print(line)
            elif p.idle and p.docs_done:
                self.last_idle = p
                self._print(f"done: {p.docs_done} documents ({p.docs_failed} not indexed), {p.segments_done} segments, "
                            f"{p.segments_encoded} encoded, {p.tokens_encoded:,} tokens in {_duration(p.elapsed_s)}"
                            f" ({rate})")
            elif self._last is None:
                self._last = time.monotonic()
            elif o is None and p.current and time.monotonic() - self._last >= self.every_s:
                self._print(f"  ... {p.current}: {p.segments_encoded} segments encoded so far, {rate}")

    def _print(self, line: str) -> None:
        self._last = time.monotonic()
        print(line, file=self.out or sys.stdout, flush=True)


# ---------------------------------------------------------------- commands
def _check(args: argparse.Namespace) -> None:
    if args.max_pages < 1 or args.max_file_mb <= 0 or (args.batch is not None and args.batch < 1) or args.max_page_chars < 1:
        raise UserError("--max-pages, --max-page-chars, --max-file-mb and --batch must be positive")


def _config(args: argparse.Namespace, device: str = "cpu") -> IndexerConfig:
    """The indexer's sizes for the device the encoder loaded on, with the user's limits and --batch
    (checked by ``_check`` before the model loads)."""
    batch = {"batch_segments": args.batch} if args.batch is not None else {}
    return IndexerConfig.for_device(device, **batch, limits=IngestLimits(
        max_file_mb=args.max_file_mb, max_pages=args.max_pages, max_page_chars=args.max_page_chars,
        ocr=getattr(args, "ocr", True), ocr_languages=getattr(args, "ocr_lang", IngestLimits.ocr_languages)))


def _quiet_pdf_logs(args: argparse.Namespace) -> None:
    # pypdf warns per font about things that do not change the extracted text
    if not getattr(args, "verbose", False):
        logging.getLogger("pypdf").setLevel(logging.ERROR)


def _service(args: argparse.Namespace, settings: Settings, paths: list[str], *, watch: bool, printer: ProgressPrinter):
    from .services import IndexingService, ServiceError, load_models, open_store

    _quiet_pdf_logs(args)
    _check(args)
    missing = [p for p in paths if not Path(p).expanduser().exists()]
    if missing:  # before the model loads: a typo should cost no seconds
        raise UserError(f"no such file or folder: {', '.join(missing)}")
    store = open_store(settings)
    try:
        comp = load_models(settings, ratio=args.ratio).compressor
        config = _config(args, device_type(comp))
        return IndexingService.create(store, comp, paths, config=config, callbacks=[printer], watch=watch,
                                      debounce_s=getattr(args, "debounce", 0.5))
    except ServiceError as e:
        store.close()
        raise UserError(str(e)) from e


def _ray_address(args: argparse.Namespace) -> None:
    """``--ray PATH``: argparse gave the first path to --ray. An address is 'auto', 'ray://...' or host:port;
    an existing file or folder that is none of these is a path."""
    a = args.ray
    if a and not (a == "auto" or "://" in a or re.fullmatch(r"[\w.-]+:\d+", a)) and Path(a).expanduser().exists():
        args.paths.insert(0, a)
        args.ray = ""


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    _ray_address(args)
    if not args.paths:
        raise UserError("name at least one file or folder to index (lclm-docs index ~/Documents)")
    if args.ray is not None or args.shards:
        from .cli_ray import cmd_index_ray

        return cmd_index_ray(args, settings)
    printer = ProgressPrinter()
    svc = _service(args, settings, args.paths, watch=False, printer=printer)
    try:
        svc.start(retry_failed=True)
        print(f"scanned: {svc.report}; {svc.indexer.pending()} document(s) to index", flush=True)
        svc.indexer.wait_idle()
        if svc.indexer.halted:
            raise UserError(f"indexing stopped: {svc.indexer.halted}")
    except KeyboardInterrupt:
        print("cancelled; documents not finished stay pending for the next run", file=sys.stderr)
        return 130
    finally:
        svc.close()
        svc.store.close()
    return 0


def cmd_watch(args: argparse.Namespace, settings: Settings) -> int:
    paths = list(args.paths)
    if not paths:
        from .services import open_store

        with open_store(settings) as store:
            paths = [f.path for f in store.list_folders(enabled_only=True)]
        if not paths:
            raise UserError("no folders to watch: name at least one (lclm-docs watch ~/Documents)")
    printer = ProgressPrinter()
    svc = _service(args, settings, paths, watch=True, printer=printer)
    try:
        svc.start()
        print(f"watching {len(svc.folders)} folder(s): {svc.indexer.pending()} document(s) to index; Ctrl-C stops",
              flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping (documents not finished stay pending)", file=sys.stderr)
    finally:
        svc.close()
        svc.store.close()
    return 0


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from latent_store import LatentStore

    if not settings.store_path.exists():
        print(f"no index yet in {settings.data_dir} (run: lclm-docs index PATH)")
        return 0
    with LatentStore(settings.store_path) as store:
        docs = store.list_documents()
        stats = store.stats()
        folders = store.list_folders()
    shown = [d for d in docs if d.status != "indexed"] if args.problems else docs
    if shown:
        print(f"{'STATUS':<9} {'SEGS':>6} {'PAGES':>6}  PATH")
    for d in shown:
        pages = str(d.page_count) if d.page_count else "-"
        print(f"{d.status:<9} {d.n_segments:>6} {pages:>6}  {d.path}")
        if d.error:
            print(f"{'':<24}-> {d.error}")
    by = ", ".join(f"{n} {s}" for s, n in stats.documents_by_status.items() if n)
    print(f"{stats.documents} document(s){': ' + by if by else ''}; {stats.segments} segments; "
          f"{stats.latents} latent arrays ({stats.latent_bytes / 2**20:.1f} MB)")
    for fp, n in stats.latents_by_fingerprint.items():
        print(f"  compressor {fp}: {n} latent arrays")
    if folders:
        print("watched folders: " + ", ".join(f.path + ("" if f.enabled else " (disabled)") for f in folders))
    print(f"store: {settings.store_path} ({(stats.db_bytes + stats.wal_bytes) / 2**20:.1f} MB)")
    return 0
