"""Plain rows that cross the store's boundary.

The store never sees a tensor: a latent array arrives and leaves as
``(payload bytes, dtype name, (n, dim), fingerprint, ratio)``, exactly the
fields ``lclm_core.latents.LatentArray`` exposes, so the app converts on its
side and this package stays free of torch. Everything here is a frozen
dataclass so rows can be passed between the indexer thread and the UI
without anyone mutating a shared object.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

DocumentStatus = Literal["pending", "indexing", "indexed", "error", "skipped"]
#: Every status a document row can hold (mirrors the CHECK constraint).
STATUSES: frozenset[str] = frozenset({"pending", "indexing", "indexed", "error", "skipped"})

MessageRole = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant", "tool"})

#: Bytes per value of each storage dtype (bfloat16 travels as its raw 16 bits).
DTYPE_ITEMSIZE: dict[str, int] = {"float32": 4, "float16": 2, "bfloat16": 2}


class StoreError(Exception):
    """Base class for errors the store raises on purpose."""


class SchemaTooNewError(StoreError):
    """The file was written by a newer release; touching it could lose data."""


class NotFound(StoreError, KeyError):
    """A write named a document or segment that no longer exists (deleted meanwhile)."""


class StaleDocumentError(StoreError):
    """The document row changed after the indexer read it (the file was edited
    meanwhile); writing the old content would mark a stale index as current."""


class StoreUnavailable(StoreError):
    """The store cannot be written (disk full, read-only, cannot open); the message says what to do.

    Nothing half-written stays behind: the transaction that hit it was rolled back.
    """


def text_sha256(text: str) -> str:
    """Cache key of a segment: latents depend only on the text and the compressor."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class LatentIn:
    """One segment's latents as the compressor produced them.

    payload: raw little-endian values, row-major (n, dim), in ``dtype``.
    Validated here so a wrong blob fails at the boundary, not at read time.
    """

    payload: bytes
    dtype: str
    shape: tuple[int, int]
    fingerprint: str
    ratio: int

    def __post_init__(self) -> None:
        if not isinstance(self.payload, bytes):
            object.__setattr__(self, "payload", bytes(self.payload))
        if self.dtype not in DTYPE_ITEMSIZE:
            raise ValueError(f"unsupported latent dtype {self.dtype!r} (expected one of {sorted(DTYPE_ITEMSIZE)})")
        if len(self.shape) != 2 or any(int(d) < 0 for d in self.shape):
            raise ValueError(f"latent shape must be (n, dim), got {self.shape!r}")
        object.__setattr__(self, "shape", (int(self.shape[0]), int(self.shape[1])))
        expected = self.shape[0] * self.shape[1] * DTYPE_ITEMSIZE[self.dtype]
        if len(self.payload) != expected:
            raise ValueError(f"latent payload has {len(self.payload)} bytes, shape {self.shape} of {self.dtype} needs {expected}")
        if not self.fingerprint:
            raise ValueError("latents need the fingerprint of the compressor that made them")
        if int(self.ratio) <= 0:
            raise ValueError(f"compression ratio must be positive, got {self.ratio}")


@dataclass(frozen=True)
class SegmentIn:
    """A segment as ingestion cut it. ``sha256`` defaults to the hash of ``text``.

    page: 1-based page number in the source (None for formats without pages).
    char_start/char_end: span in the document's extracted text, for citations.
    """

    ordinal: int
    text: str
    page: int | None = None
    char_start: int | None = None
    char_end: int | None = None
    n_tokens: int | None = None
    sha256: str = ""
    location: str | None = None  # where a reader finds it beyond the page: "slide 4", "Sheet1 rows 20-40"

    def __post_init__(self) -> None:
        if not self.sha256:
            object.__setattr__(self, "sha256", text_sha256(self.text))


@dataclass(frozen=True)
class DocumentMeta:
    """What a file looked like when it was read; None leaves a column unchanged."""

    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    type: str | None = None
    page_count: int | None = None

    def as_columns(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


# ----------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Document:
    id: int
    path: str
    folder: str | None
    size: int | None
    mtime: float | None
    sha256: str | None
    type: str | None
    status: str
    error: str | None
    page_count: int | None
    n_segments: int
    added_at: float
    updated_at: float


@dataclass(frozen=True)
class Segment:
    id: int
    document_id: int
    ordinal: int
    page: int | None
    char_start: int | None
    char_end: int | None
    text: str
    n_tokens: int | None
    sha256: str
    location: str | None = None  # "slide 4", "Sheet1 rows 20-40", "page 3, section Install"; None: the page says it


@dataclass(frozen=True)
class StoredLatent:
    """A latent row read back; the same fields as ``LatentIn`` plus its segment."""

    segment_id: int
    payload: bytes
    dtype: str
    shape: tuple[int, int]
    fingerprint: str
    ratio: int
    created_at: float

    def as_input(self) -> LatentIn:
        return LatentIn(self.payload, self.dtype, self.shape, self.fingerprint, self.ratio)


@dataclass(frozen=True)
class ScopeSegment:
    """One segment of a question's scope with its latents (None if not encoded yet)."""

    segment: Segment
    path: str
    latent: StoredLatent | None


@dataclass(frozen=True)
class SearchHit:
    """A full-text match. score: -bm25, so higher is better."""

    segment_id: int
    document_id: int
    path: str
    page: int | None
    ordinal: int
    score: float
    snippet: str
    location: str | None = None


@dataclass(frozen=True)
class ReplaceResult:
    """What ``replace_document_content`` did; segment_ids follow the input order."""

    document_id: int
    segment_ids: list[int]
    kept: int
    added: int
    removed: int
    latents_written: int
    latents_copied: int
    missing_latents: int


@dataclass(frozen=True)
class WatchedFolder:
    path: str
    added_at: float
    enabled: bool


@dataclass(frozen=True)
class Chat:
    id: int
    title: str
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class Message:
    id: int
    chat_id: int
    role: str
    content: str
    citations: list[dict[str, Any]] | None
    created_at: float
    notes: dict[str, Any] | None = None  # e.g. {"left_out": [paths], "raw_segments": 2}; None: nothing noted


@dataclass(frozen=True)
class StoreStats:
    documents: int
    documents_by_status: dict[str, int]
    segments: int
    latents: int
    latent_bytes: int
    latents_by_fingerprint: dict[str, int]
    text_bytes: int
    db_bytes: int
    wal_bytes: int
    schema_version: int
