"""Export a store's latents as shards, and import shards into another store.

Why: encoding is the expensive part (hours of a laptop's CPU for a large
folder), and every machine with the same files and the same compressor would
compute the same latents. A store exports its indexed documents once
(``lclm-docs export``); another machine imports them (``lclm-docs import``)
and its own copies of those files, matched by their content hash, are indexed
from the shards: no parsing, no encoding.

Latents are only meaningful to the compressor that made them, so a shard
whose fingerprint differs from this store's compressor is refused before
anything is written.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from latent_store import DocumentMeta, LatentStore, NotFound, SegmentIn, StaleDocumentError
from latent_store.shards import ShardDocument, ShardError, ShardHeader, ShardWriter, read_documents, read_header, shard_paths

from .ingest import file_sha256

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Identity:
    """Who makes a store's latents: what a shard must match to be used."""

    fingerprint: str
    base_model_sha256: str
    ratio: int

    @classmethod
    def of(cls, settings, compressor) -> "Identity":  # noqa: ANN001 - app.settings.Settings, a compressor
        """The identity of the compressor these settings load."""
        from .services import base_model_sha256

        return cls(compressor.fingerprint, base_model_sha256(settings), int(compressor.config.compression_ratio))

    def header(self) -> ShardHeader:
        from importlib.metadata import PackageNotFoundError, version

        try:
            producer = f"latent-context-docs {version('latent-context-docs')}"
        except PackageNotFoundError:
            producer = "latent-context-docs"
        return ShardHeader(self.fingerprint, self.base_model_sha256, self.ratio, producer=producer)

    def refuse(self, path: Path, h: ShardHeader) -> str | None:
        """Why a shard's latents cannot be used here (None: they can)."""
        if h.fingerprint == self.fingerprint:
            return None
        base = "the same base model" if h.base_model_sha256 == self.base_model_sha256 else \
            f"base model {h.base_model_sha256[:12]}"
        return (f"{path.name} holds latents of compressor {h.fingerprint} ({base}, N={h.ratio}); this store's "
                f"compressor is {self.fingerprint} (base model {self.base_model_sha256[:12]}, N={self.ratio}). "
                f"Latents only fit the compressor that made them: import where the same model is set "
                f"(--checkpoint / --ratio), or index the files here")


@dataclass
class ExportReport:
    documents: int = 0
    segments: int = 0
    skipped: list[str] = field(default_factory=list)  # "path: why"
    shards: list[Path] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(p.stat().st_size for p in self.shards)


@dataclass
class ImportReport:
    shards: int = 0
    shard_documents: int = 0
    imported: int = 0  # local documents indexed from the shards
    segments: int = 0
    not_here: int = 0  # shard documents with no file of the same content here
    changed: int = 0  # local files that changed during the import (left for the indexer)


def export_store(store: LatentStore, directory: str | os.PathLike[str], ident: Identity, *,
                 target_bytes: int = 64 << 20) -> ExportReport:
    """Write every document indexed for ``ident``'s compressor into shards under ``directory``."""
    report = ExportReport()
    with ShardWriter(directory, ident.header(), target_bytes=target_bytes) as writer:
        for doc in store.list_documents(status="indexed"):
            segs = store.get_segments(doc.id)
            lats = store.get_latents([s.id for s in segs], ident.fingerprint)
            if not segs or any(lat is None for lat in lats) or not doc.sha256:
                report.skipped.append(f"{doc.path}: not indexed for this compressor")
                continue
            writer.add(ShardDocument(
                doc.sha256, doc.path, doc.size or 0, doc.mtime, doc.type, doc.page_count,
                [SegmentIn(s.ordinal, s.text, s.page, s.char_start, s.char_end, s.n_tokens, s.sha256, s.location)
                 for s in segs],
                {s.sha256: lat.as_input() for s, lat in zip(segs, lats) if lat is not None}))
            report.documents += 1
            report.segments += len(segs)
        report.shards = writer.close()
    return report


def check_shards(sources: Iterable[str | os.PathLike[str]], ident: Identity) -> list[Path]:
    """The shard files named, each checked against ``ident``; ShardError (the first refusal) before any write."""
    paths = shard_paths(sources)
    if not paths:
        raise ShardError("no shard files found (*.parquet)")
    for p in paths:
        why = ident.refuse(p, read_header(p))
        if why:
            raise ShardError(why)
    return paths


def import_shards(store: LatentStore, sources: Iterable[str | os.PathLike[str]], ident: Identity, *,
                  on_document: Callable[[str], None] | None = None) -> ImportReport:
    """Index this store's documents from shards, matched by size and content hash.

    Only documents that still need work for this compressor are touched (new,
    edited, or indexed by another model); each is written in one transaction
    with the row's ``updated_at`` checked, as the indexer writes, so a file
    edited meanwhile is left for the indexer. Files are hashed lazily, only
    where a shard holds a document of the same size.
    """
    paths = check_shards(sources, ident)
    report = ImportReport(shards=len(paths))
    by_size: dict[int, list] = {}
    for d in store.documents_needing_work(ident.fingerprint):
        if d.size is not None:
            by_size.setdefault(d.size, []).append(d)
    hashes: dict[int, str | None] = {}

    def content_hash(d) -> str | None:
        if d.id not in hashes:
            try:
                st = os.stat(d.path)
                hashes[d.id] = file_sha256(d.path) if (st.st_size, st.st_mtime) == (d.size, d.mtime) else None
            except OSError:
                hashes[d.id] = None
        return hashes[d.id]

    for path in paths:
        for sdoc in read_documents(path):
            report.shard_documents += 1
            matches = [d for d in by_size.get(sdoc.size, []) if content_hash(d) == sdoc.sha256]
            if not matches:
                report.not_here += 1
                continue
            for d in matches:
                meta = DocumentMeta(size=d.size, mtime=d.mtime, sha256=sdoc.sha256, type=sdoc.type,
                                    page_count=sdoc.page_count)
                try:
                    store.replace_document_content(d.id, sdoc.segments, sdoc.latents, fingerprint=ident.fingerprint,
                                                   meta=meta, if_updated_at=d.updated_at)
                except (StaleDocumentError, NotFound):
                    report.changed += 1
                    continue
                by_size[sdoc.size].remove(d)
                report.imported += 1
                report.segments += len(sdoc.segments)
                if on_document is not None:
                    on_document(d.path)
    log.info("imported %d documents (%d segments) from %d shards; %d shard documents have no file here",
             report.imported, report.segments, report.shards, report.not_here)
    return report
