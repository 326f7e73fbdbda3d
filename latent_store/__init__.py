"""SQLite persistence of documents, segments, latents and chats (sqlite-utils).

Knows nothing of torch models beyond "a float array + the fingerprint of who made it":
latents arrive and leave as (payload bytes, dtype name, (n, dim), fingerprint, ratio).
Importing this package opens nothing; ``LatentStore(path)`` does.
"""

from .fts import MatchMode, match_expression
from .schema import MIGRATIONS, Migration, current_version, migrate
from .store import DEFAULT_BUSY_TIMEOUT_MS, LatentStore
from .types import (
    DTYPE_ITEMSIZE,
    ROLES,
    STATUSES,
    Chat,
    Document,
    DocumentMeta,
    DocumentStatus,
    LatentIn,
    Message,
    MessageRole,
    NotFound,
    ReplaceResult,
    SchemaTooNewError,
    ScopeSegment,
    SearchHit,
    Segment,
    SegmentIn,
    StaleDocumentError,
    StoredLatent,
    StoreError,
    StoreUnavailable,
    StoreStats,
    WatchedFolder,
    text_sha256,
)

__all__ = [
    "DEFAULT_BUSY_TIMEOUT_MS",
    "DTYPE_ITEMSIZE",
    "MIGRATIONS",
    "ROLES",
    "STATUSES",
    "Chat",
    "Document",
    "DocumentMeta",
    "DocumentStatus",
    "LatentIn",
    "LatentStore",
    "MatchMode",
    "Message",
    "MessageRole",
    "Migration",
    "NotFound",
    "ReplaceResult",
    "SchemaTooNewError",
    "ScopeSegment",
    "SearchHit",
    "Segment",
    "SegmentIn",
    "StaleDocumentError",
    "StoreError",
    "StoreStats",
    "StoreUnavailable",
    "StoredLatent",
    "WatchedFolder",
    "current_version",
    "match_expression",
    "migrate",
    "text_sha256",
]
