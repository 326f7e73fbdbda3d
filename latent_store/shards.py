"""Latent shards: a store's indexed documents as self-describing Parquet files.

Why Parquet (pyarrow): a columnar file that any data tool reads (pandas, DuckDB,
Spark, Ray Data), with typed columns, compression and key-value metadata in the
footer, so one file says what it holds and who made it without a side file.

A shard holds whole documents, one row per segment, in order; a document is
never split across shards or row groups. Its footer carries ``lclm.shard``, a
JSON header: format name and version, the compressor fingerprint, the
base model's sha256, the ratio, counts. Latents are the raw little-endian
payload the store keeps (``LatentIn``), so a shard's bytes go into another
store unchanged. A shard appears only when complete: it is written as
``*.parquet.tmp`` and renamed (a killed exporter leaves no half shard, and a
``.tmp`` is never read).

pyarrow is imported only here, and only when a shard is written or read.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .types import LatentIn, SegmentIn

FORMAT = "lclm-latent-shard"
VERSION = 1
HEADER_KEY = b"lclm.shard"
SUFFIX = ".parquet"


class ShardError(Exception):
    """A shard that cannot be read or does not fit: the message says which file and why."""


@dataclass(frozen=True)
class ShardHeader:
    """What a shard says of itself (its footer's ``lclm.shard``)."""

    fingerprint: str
    base_model_sha256: str
    ratio: int
    documents: int = 0
    segments: int = 0
    created_at: float = 0.0
    producer: str = ""
    format: str = FORMAT
    version: int = VERSION

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, path: Path) -> "ShardHeader":
        try:
            d = json.loads(raw)
            if d.get("format") != FORMAT:
                raise ShardError(f"{path}: not a latent shard (format {d.get('format')!r})")
            if int(d.get("version", 0)) > VERSION:
                raise ShardError(f"{path}: shard version {d['version']} is newer than this release reads "
                                 f"({VERSION}); update latent-context-docs")
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except (ValueError, TypeError, KeyError) as e:
            raise ShardError(f"{path}: unreadable shard header ({e})") from e


@dataclass(frozen=True)
class ShardDocument:
    """One document as a shard carries it: what identifies the file, its segments and their latents."""

    sha256: str  # the file's content hash: how another machine recognises the same file
    path: str  # where it was on the machine that made the shard (shown, never opened)
    size: int
    mtime: float | None
    type: str | None
    page_count: int | None
    segments: list[SegmentIn]
    latents: dict[str, LatentIn] = field(default_factory=dict)  # segment sha256 -> latents

    @property
    def n_tokens(self) -> int:
        return sum(s.n_tokens or 0 for s in self.segments)


def _schema():
    import pyarrow as pa

    return pa.schema([
        ("doc", pa.int32()),  # the document's number within the shard (rows of one document are adjacent)
        ("doc_sha256", pa.string()), ("doc_path", pa.string()), ("doc_size", pa.int64()),
        ("doc_mtime", pa.float64()), ("doc_type", pa.string()), ("page_count", pa.int32()),
        ("ordinal", pa.int32()), ("page", pa.int32()), ("char_start", pa.int64()), ("char_end", pa.int64()),
        ("n_tokens", pa.int32()), ("text", pa.large_string()), ("seg_sha256", pa.string()),
        ("latent_dtype", pa.string()), ("latent_n", pa.int32()), ("latent_dim", pa.int32()),
        ("latent", pa.large_binary()),
        ("location", pa.string()),  # added after the first shards: a shard without it reads as None
    ])


class ShardWriter:
    """Writes documents into shards of about ``target_bytes`` each, in ``directory``.

    ``add(doc)`` buffers; a shard is written when the buffer passes the target
    (after a whole document) and at ``close()``. Every latent must carry the
    writer's fingerprint: a shard is one compressor's output.
    """

    def __init__(self, directory: str | os.PathLike[str], header: ShardHeader, *, target_bytes: int = 64 << 20,
                 prefix: str = "shard") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.header = header
        self.target_bytes = target_bytes
        self.prefix = prefix
        self.written: list[Path] = []
        self._rows: dict[str, list[Any]] = {name: [] for name in _schema().names}
        self._bytes = 0
        self._docs = 0
        self._segments = 0
        self._n = 0

    def add(self, doc: ShardDocument) -> None:
        missing = [s.sha256 for s in doc.segments if s.sha256 not in doc.latents]
        if missing:
            raise ValueError(f"{doc.path}: {len(missing)} segment(s) have no latents; a shard holds indexed documents only")
        for lat in doc.latents.values():
            if lat.fingerprint != self.header.fingerprint:
                raise ValueError(f"{doc.path}: latents from compressor {lat.fingerprint}, "
                                 f"this shard holds {self.header.fingerprint}'s")
        r = self._rows
        for s in doc.segments:
            lat = doc.latents[s.sha256]
            for name, value in (("doc", self._docs), ("doc_sha256", doc.sha256), ("doc_path", doc.path),
                                ("doc_size", doc.size), ("doc_mtime", doc.mtime), ("doc_type", doc.type), ("page_count", doc.page_count),
                                ("ordinal", s.ordinal), ("page", s.page), ("char_start", s.char_start),
                                ("char_end", s.char_end), ("n_tokens", s.n_tokens), ("text", s.text),
                                ("seg_sha256", s.sha256), ("latent_dtype", lat.dtype), ("latent_n", lat.shape[0]),
                                ("latent_dim", lat.shape[1]), ("latent", lat.payload), ("location", s.location)):
                r[name].append(value)
            self._bytes += len(lat.payload) + len(s.text)
        self._docs += 1
        self._segments += len(doc.segments)
        if self._bytes >= self.target_bytes:
            self.flush()

    def flush(self) -> Path | None:
        """Write the buffered documents as one shard (atomically); None if there were none."""
        if not self._docs:
            return None
        import pyarrow as pa
        import pyarrow.parquet as pq

        header = ShardHeader(**{**self.header.__dict__, "documents": self._docs, "segments": self._segments,
                                "created_at": time.time()})
        schema = _schema().with_metadata({HEADER_KEY: header.to_json()})
        table = pa.Table.from_pydict(self._rows, schema=schema)
        path = self._next_path()
        tmp = path.with_name(path.name + ".tmp")
        # zstd: latents of float16 compress little, the text a lot; one row group keeps documents whole
        pq.write_table(table, tmp, compression="zstd", row_group_size=max(len(table), 1))
        os.replace(tmp, path)
        self.written.append(path)
        self._rows = {name: [] for name in _schema().names}
        self._bytes = self._docs = self._segments = 0
        return path

    def _next_path(self) -> Path:
        while True:
            path = self.directory / f"{self.prefix}-{self.header.fingerprint[:12]}-{self._n:05d}{SUFFIX}"
            self._n += 1
            if not path.exists():
                return path

    def close(self) -> list[Path]:
        self.flush()
        return self.written

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is None:
            self.close()


def shard_paths(sources: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The shard files named, folders expanded (their ``*.parquet``, sorted); unfinished ``.tmp`` files never."""
    out: list[Path] = []
    for s in sources:
        p = Path(s).expanduser()
        if p.is_dir():
            out.extend(sorted(q for q in p.glob(f"*{SUFFIX}") if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise ShardError(f"{p}: no such shard file or folder")
    return out


def read_header(path: str | os.PathLike[str]) -> ShardHeader:
    """A shard's header, from its footer alone (reads no rows)."""
    import pyarrow.parquet as pq

    p = Path(path)
    try:
        meta = pq.read_schema(p).metadata or {}
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise ShardError(f"{p}: not a readable Parquet file ({e})") from e
    if HEADER_KEY not in meta:
        raise ShardError(f"{p}: a Parquet file without a latent shard header")
    return ShardHeader.from_json(meta[HEADER_KEY], p)


def files_in(path: str | os.PathLike[str]) -> set[tuple[str, int, float | None]]:
    """(path, size, mtime) of each document in a shard, from three columns: no text or latents are read."""
    import pyarrow.parquet as pq

    p = Path(path)
    read_header(p)
    try:
        t = pq.read_table(p, columns=["doc_path", "doc_size", "doc_mtime"])
    except Exception as e:  # noqa: BLE001
        raise ShardError(f"{p}: damaged shard ({type(e).__name__}: {e})") from e
    return set(zip(t["doc_path"].to_pylist(), t["doc_size"].to_pylist(), t["doc_mtime"].to_pylist()))


def read_documents(path: str | os.PathLike[str]) -> Iterator[ShardDocument]:
    """The documents of one shard, in order, one row group in memory at a time."""
    import pyarrow.parquet as pq

    p = Path(path)
    header = read_header(p)
    try:
        pf = pq.ParquetFile(p)
        for g in range(pf.num_row_groups):
            yield from _documents(pf.read_row_group(g).to_pylist(), header, p)
    except ShardError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ShardError(f"{p}: damaged shard ({type(e).__name__}: {e})") from e


def _documents(rows: list[dict[str, Any]], header: ShardHeader, path: Path) -> Iterator[ShardDocument]:
    doc: ShardDocument | None = None
    current = None
    for r in rows:
        if r["doc"] != current:
            if doc is not None:
                yield doc
            current = r["doc"]
            doc = ShardDocument(r["doc_sha256"], r["doc_path"], int(r["doc_size"]), r["doc_mtime"], r["doc_type"], r["page_count"], [])
        assert doc is not None
        seg = SegmentIn(r["ordinal"], r["text"], r["page"], r["char_start"], r["char_end"], r["n_tokens"],
                        location=r.get("location"))
        if seg.sha256 != r["seg_sha256"]:
            raise ShardError(f"{path}: segment {r['ordinal']} of {r['doc_path']} does not match its sha256")
        doc.segments.append(seg)
        try:
            doc.latents[seg.sha256] = LatentIn(r["latent"], r["latent_dtype"], (r["latent_n"], r["latent_dim"]),
                                               header.fingerprint, header.ratio)
        except ValueError as e:
            raise ShardError(f"{path}: segment {r['ordinal']} of {r['doc_path']}: {e}") from e
    if doc is not None:
        yield doc
