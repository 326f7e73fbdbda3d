"""Commands past one machine: ``index --ray``, ``export DIR`` and ``import SHARD...``.

``index --ray`` scans as ``index`` does, then hands the documents that need
work to Ray instead of the local indexer; progress prints the same lines.
``export``/``import`` move latents between stores as Parquet shards
(``app.shards``), so a file encoded once need not be encoded on every laptop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import UserError
from .cli_index import ProgressPrinter, _check, _config, _duration, _quiet_pdf_logs
from .settings import Settings
from .shards import Identity


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("export", help="write the store's indexed documents and latents as Parquet shards")
    e.add_argument("directory", metavar="DIR", help="folder for the shards (created if missing)")
    e.add_argument("--ratio", type=int, choices=(4, 8, 16), default=None,
                   help=f"whose latents: the compressor at ratio N (default: settings, {Settings.ratio})")
    e.add_argument("--shard-mb", type=float, default=64.0, help="about this many MB per shard (default %(default)s)")
    e.set_defaults(func=cmd_export)

    i = sub.add_parser("import", help="index this store's documents from shards (matched by content), no encoding")
    i.add_argument("shards", nargs="+", metavar="SHARD", help="shard files or folders of them")
    i.add_argument("--folder", dest="folders", action="append", default=[], metavar="PATH",
                   help="add this folder to the library and scan it first (repeatable; the library's folders are "
                        "scanned anyway)")
    i.add_argument("--ratio", type=int, choices=(4, 8, 16), default=None,
                   help=f"the compressor at ratio N (default: settings, {Settings.ratio})")
    i.set_defaults(func=cmd_import)


def _compressor(settings: Settings, ratio: int | None):
    """The compressor alone (export, import and the Ray driver need its fingerprint, not a decoder)."""
    from .services import ServiceError, load_compressor_only

    try:
        return load_compressor_only(settings, ratio)
    except ServiceError as e:
        raise UserError(str(e)) from e


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from .services import open_store
    from .shards import export_store

    if args.shard_mb <= 0:
        raise UserError("--shard-mb must be positive")
    if not settings.store_path.exists():
        raise UserError(f"no index in {settings.data_dir} to export (run: lclm-docs index PATH)")
    comp = _compressor(settings, args.ratio)
    with open_store(settings) as store:
        r = export_store(store, args.directory, Identity.of(settings, comp), target_bytes=int(args.shard_mb * 2**20))
    for why in r.skipped:
        print(f"skipped {why}")
    print(f"exported {r.documents} documents ({r.segments} segments) into {len(r.shards)} shard(s) in "
          f"{args.directory} ({r.bytes / 2**20:.1f} MB); compressor {comp.fingerprint}")
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from latent_store.shards import ShardError

    from .services import open_store
    from .shards import import_shards
    from .watcher import FolderSync, normalize

    missing = [f for f in args.folders if not Path(f).expanduser().is_dir()]
    if missing:
        raise UserError(f"no such folder: {', '.join(missing)}")
    comp = _compressor(settings, args.ratio)
    with open_store(settings) as store:
        for f in args.folders:
            store.add_folder(str(normalize(f)))
        roots = [f.path for f in store.list_folders(enabled_only=True)]
        FolderSync(store, roots).reconcile()  # rows for the files here, so shard documents can find them
        try:
            r = import_shards(store, args.shards, Identity.of(settings, comp))
        except ShardError as e:
            raise UserError(str(e)) from e
    print(f"imported {r.imported} documents ({r.segments} segments) from {r.shards} shard(s), nothing encoded; "
          f"{r.not_here} shard document(s) have no file of the same content here"
          + (f"; {r.changed} changed meanwhile (the indexer will take them)" if r.changed else ""))
    return 0


def cmd_index_ray(args: argparse.Namespace, settings: Settings) -> int:
    from .ray_index import RayOptions, RayUnavailable, index_store, index_to_shards
    from .services import IndexingService, open_store

    _quiet_pdf_logs(args)
    _check(args)
    if args.actors < 1:
        raise UserError("--actors must be at least 1")
    if args.shards and args.ray is None:
        raise UserError("--shards writes what a Ray run encodes: add --ray")
    missing = [p for p in args.paths if not Path(p).expanduser().exists()]
    if missing:
        raise UserError(f"no such file or folder: {', '.join(missing)}")
    try:
        import ray  # noqa: F401 - before any model loads: a missing extra should cost no seconds
    except ImportError as e:
        from .ray_index import INSTALL

        raise UserError(INSTALL) from e
    comp = _compressor(settings, args.ratio)  # the driver's: the fingerprint the workers must match
    # The CPU's batch sizes (or --batch); an encoder actor that lands on a GPU takes the GPU's unless --batch was given.
    opts = RayOptions(address=args.ray or None, actors=args.actors)
    config = _config(args)
    printer = ProgressPrinter()
    try:
        if args.shards:
            from .watcher import FolderSync, normalize

            files = []
            for raw in args.paths:
                p = normalize(raw)
                files.extend(FolderSync(None, [p]).scan(p) if p.is_dir() else [p])
            print(f"found {len(files)} file(s); encoding on Ray into {args.shards}", flush=True)
            report = index_to_shards(files, Path(args.shards), settings, Identity.of(settings, comp), ratio=args.ratio,
                                     config=config, options=opts, callbacks=[printer])
        else:
            with open_store(settings) as store:
                svc = IndexingService.create(store, comp, args.paths, config=config)
                ids = svc.scan(retry_failed=True)
                print(f"scanned: {svc.report}; {len(ids)} document(s) to index on Ray", flush=True)
                report = index_store(store, settings, comp.fingerprint, ids, ratio=args.ratio, config=config,
                                     options=opts, callbacks=[printer])
    except RayUnavailable as e:
        raise UserError(str(e)) from e
    except KeyboardInterrupt:
        print("cancelled; documents not finished stay pending for the next run", file=sys.stderr)
        return 130
    if report.shards:
        print(f"shards: {', '.join(p.name for p in report.shards)}")
    if report.error:
        raise UserError(f"the Ray run broke off after {_duration(report.seconds)} ({report.error}); "
                        f"{report.indexed} documents were written whole, {report.left} are left: run the same "
                        f"command again to finish them")
    if report.left:
        print(f"{report.left} document(s) changed while they were read; run again to index them", file=sys.stderr)
    return 0
