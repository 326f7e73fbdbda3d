"""``LatentStore``: the one owner of the store's SQLite connection.

Concurrency model: one connection per store, opened with
``check_same_thread=False`` and guarded by a re-entrant lock that every public
method (and every transaction, for its whole length) holds. The background
indexer thread and the UI share one ``LatentStore``; they take turns, they
never interleave statements inside each other's transactions. Other
*processes* (a CLI ``index`` run next to the UI, a restarted indexer) reach
the same file through their own store: WAL lets readers go on while one
writes, ``busy_timeout`` makes a writer wait its turn instead of failing, and
every write transaction starts with ``BEGIN IMMEDIATE`` so the wait happens
up front (a deferred transaction that reads and then writes fails at once
with "database is locked" if another connection wrote in between).

All SQL of the app lives in this package: callers get typed methods and
frozen dataclasses (``latent_store.types``). sqlite-utils wraps the
connection (WAL, introspection, FTS maintenance); row writes are plain
parameterised statements run inside our own transactions so that a
document's segments, FTS rows, latents and status commit together or not at
all.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from .fts import MatchMode, match_expression
from .schema import MIGRATIONS, Migration, migrate
from .types import (
    ROLES,
    STATUSES,
    Chat,
    Document,
    DocumentMeta,
    LatentIn,
    Message,
    NotFound,
    ReplaceResult,
    ScopeSegment,
    SearchHit,
    Segment,
    SegmentIn,
    StaleDocumentError,
    StoredLatent,
    StoreStats,
    StoreUnavailable,
    WatchedFolder,
)

log = logging.getLogger(__name__)

DEFAULT_BUSY_TIMEOUT_MS = 5000

# SQLite's primary result codes that mean "the disk, not the data" (sqlite3.h)
_SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_FULL, _SQLITE_CANTOPEN = 8, 10, 13, 14


def unavailable(path: str, e: BaseException) -> StoreUnavailable | None:
    """The user's version of a disk-level failure, or None for anything else (a bug, a lock timeout)."""
    where = os.path.dirname(os.path.abspath(path)) if path != ":memory:" else path
    code = getattr(e, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    errno_ = getattr(e, "errno", None)
    if primary == _SQLITE_FULL or errno_ == 28 or "disk is full" in str(e):
        return StoreUnavailable(f"the disk holding {where} is full: free some space, then run again "
                                "(what was indexed is kept; the rest waits as pending)")
    if primary == _SQLITE_READONLY or errno_ == 30 or "readonly" in str(e) or "read-only" in str(e):
        return StoreUnavailable(f"the data directory {where} is read-only: make it writable or pass "
                                "--data-dir (or LCLM_DOCS_HOME) pointing somewhere writable")
    if primary in (_SQLITE_CANTOPEN, _SQLITE_IOERR) or errno_ in (13, 5):
        return StoreUnavailable(f"cannot write the store in {where} ({e}): check the disk and its permissions, "
                                "or pass another --data-dir")
    return None


def _cols(cls: type, alias: str = "") -> str:
    """Column list in the dataclass's field order, so rows map positionally."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(prefix + f.name for f in fields(cls))


_DOC = _cols(Document)
_DOC_D = _cols(Document, "d")
_SEG = _cols(Segment)
_SEG_S = _cols(Segment, "s")
_LAT_L = "l.segment_id, l.blob, l.dtype, l.n, l.dim, l.fingerprint, l.ratio, l.created_at"
_N_SEG = len(fields(Segment))


def _latent(row: Sequence[Any]) -> StoredLatent:
    seg_id, blob, dtype, n, dim, fp, ratio, created = row
    return StoredLatent(seg_id, bytes(blob), dtype, (n, dim), fp, ratio, created)


def _json_ids(ids: Iterable[int]) -> str:
    """A list of ids as one JSON parameter (read back with json_each): no
    999-variable limit, one cached statement whatever the length."""
    return json.dumps([int(i) for i in ids])


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown document status {status!r} (expected one of {sorted(STATUSES)})")


class LatentStore:
    """Documents, segments, latents, full-text index, folders and chats in one SQLite file.

    ``LatentStore(path)`` creates or upgrades the file (see ``schema``).
    Use it as a context manager or call ``close()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.path = os.fspath(path)
        in_memory = self.path == ":memory:"
        if not in_memory:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise (unavailable(self.path, e) or e) from e
        # isolation_level=None: the driver opens no implicit transactions;
        # ours are explicit (BEGIN IMMEDIATE / SAVEPOINT) and visible here.
        try:
            conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000, check_same_thread=False,
                                   isolation_level=None)
        except sqlite3.Error as e:
            raise (unavailable(self.path, e) or e) from e
        self._conn = conn
        self._lock = threading.RLock()
        self._savepoint_ids = itertools.count()
        self._closed = False
        try:
            self._db = Database(conn, execute_plugins=False)
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA foreign_keys = ON")  # per connection, off by default
            if conn.execute("PRAGMA foreign_keys").fetchone()[0] != 1:
                raise RuntimeError("this SQLite build cannot enforce foreign keys; cascading deletes would leave orphans")
            if not in_memory:
                self._db.enable_wal()
            # NORMAL is durable across app crashes in WAL mode; only a power
            # cut can lose the last commits, and they are re-derivable.
            conn.execute("PRAGMA synchronous = NORMAL")
            before, self.schema_version = migrate(self._db, migrations)
            if before != self.schema_version:
                log.info("opened %s (schema v%d -> v%d)", self.path, before, self.schema_version)
        except (sqlite3.Error, OSError) as e:
            conn.close()
            raise (unavailable(self.path, e) or e) from e
        except BaseException:
            conn.close()
            raise

    # ------------------------------------------------------------- lifecycle
    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._conn.execute("PRAGMA optimize")  # SQLite's advice for long-lived connections
            except sqlite3.Error:
                log.debug("PRAGMA optimize failed on close", exc_info=True)
            self._conn.close()

    def __enter__(self) -> "LatentStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connection_settings(self) -> dict[str, Any]:
        """The pragmas this store relies on, as SQLite reports them (for tests and `status`)."""
        with self._lock:
            return {
                name: self._conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "busy_timeout", "foreign_keys", "synchronous")
            }

    # ---------------------------------------------------------- transactions
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction, holding the lock throughout; nested calls
        become savepoints, so an app-level ``with store.transaction():`` can
        group several methods and still roll back as one."""
        with self._lock:
            conn = self._conn
            if conn.in_transaction:
                name = f"ls_sp_{next(self._savepoint_ids)}"
                conn.execute(f"SAVEPOINT {name}")
                try:
                    yield
                except BaseException:
                    if conn.in_transaction:
                        conn.execute(f"ROLLBACK TO {name}")
                        conn.execute(f"RELEASE {name}")
                    raise
                conn.execute(f"RELEASE {name}")
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise (unavailable(self.path, e) or e) from e
            try:
                yield
                conn.execute("COMMIT")
            except BaseException as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error) and (u := unavailable(self.path, e)) is not None:
                    raise u from e
                raise

    @contextmanager
    def _snapshot(self) -> Iterator[None]:
        """A read transaction, so multi-statement reads see one consistent state."""
        with self._lock:
            if self._conn.in_transaction:
                yield
                return
            self._conn.execute("BEGIN")
            try:
                yield
            finally:
                if self._conn.in_transaction:
                    self._conn.execute("COMMIT")

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    # -------------------------------------------------------------- documents
    def upsert_document(
        self,
        path: str | os.PathLike[str],
        *,
        folder: str | None = None,
        size: int | None = None,
        mtime: float | None = None,
        sha256: str | None = None,
        type: str | None = None,
        page_count: int | None = None,
        status: str | None = None,
        error: str | None = None,
    ) -> Document:
        """Record a file. Arguments left None keep their stored value.

        A new row starts 'pending'. If size, mtime or sha256 differ from the
        stored ones and no status is given, the row goes back to 'pending'
        (error cleared): an edited file must never keep looking indexed.
        Paths are opaque keys: the caller normalises them (absolute, resolved).
        """
        key = os.fspath(path)
        if status is not None:
            _check_status(status)
        given = {
            k: v
            for k, v in dict(folder=folder, size=size, mtime=mtime, sha256=sha256, type=type, page_count=page_count).items()
            if v is not None
        }
        now = time.time()
        with self.transaction():
            row = self._get_document_by("path", key)
            if row is None:
                cols = {"path": key, **given, "status": status or "pending", "error": error, "added_at": now, "updated_at": now}
                self._conn.execute(
                    f"INSERT INTO documents ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", tuple(cols.values())
                )
            else:
                changes = {k: v for k, v in given.items() if getattr(row, k) != v}
                if status is not None:
                    changes.update(status=status, error=error)
                elif changes.keys() & {"size", "mtime", "sha256"}:
                    changes.update(status="pending", error=None)
                if changes:
                    self._update_document(row.id, changes, now)
            doc = self._get_document_by("path", key)
        assert doc is not None
        return doc

    def _update_document(self, doc_id: int, changes: Mapping[str, Any], now: float) -> None:
        cols = {**changes, "updated_at": now}
        self._conn.execute(
            f"UPDATE documents SET {', '.join(f'{k} = ?' for k in cols)} WHERE id = ?", (*cols.values(), doc_id)
        )

    def _get_document_by(self, column: str, value: Any) -> Document | None:
        row = self._one(f"SELECT {_DOC} FROM documents WHERE {column} = ?", (value,))
        return Document(*row) if row else None

    def get_document(self, key: int | str | os.PathLike[str]) -> Document | None:
        """By id (int) or by path (str / PathLike)."""
        if isinstance(key, int):
            return self._get_document_by("id", key)
        return self._get_document_by("path", os.fspath(key))

    def list_documents(self, folder: str | None = None, status: str | Iterable[str] | None = None) -> list[Document]:
        where, params = [], []
        if folder is not None:
            where.append("folder = ?")
            params.append(os.fspath(folder))
        if status is not None:
            wanted = [status] if isinstance(status, str) else list(status)
            for s in wanted:
                _check_status(s)
            where.append("status IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(wanted))
        sql = f"SELECT {_DOC} FROM documents" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY path"
        return [Document(*r) for r in self._all(sql, params)]

    def set_status(self, doc_id: int, status: str, error: str | None = None) -> Document:
        """Set a document's status (and error reason, cleared when None).

        Returns the updated row: the indexer keeps its ``updated_at`` to pass
        as ``if_updated_at`` when it writes the content.
        """
        _check_status(status)
        with self.transaction():
            if self._get_document_by("id", doc_id) is None:
                raise NotFound(f"document {doc_id} does not exist")
            self._update_document(doc_id, {"status": status, "error": error}, time.time())
            doc = self._get_document_by("id", doc_id)
        assert doc is not None
        return doc

    def delete_document(self, key: int | str | os.PathLike[str]) -> bool:
        """Delete a document; its segments, FTS rows and latents go with it (cascade)."""
        column, value = ("id", key) if isinstance(key, int) else ("path", os.fspath(key))
        with self.transaction():
            return self._conn.execute(f"DELETE FROM documents WHERE {column} = ?", (value,)).rowcount > 0

    def move_document(
        self, old_path: str | os.PathLike[str], new_path: str | os.PathLike[str], *, folder: str | None = None
    ) -> Document | None:
        """Rename a document in place: same id, segments and latents (a moved
        file needs no re-encoding). A row already at ``new_path`` (a file the
        move overwrote) is deleted first. Returns None if ``old_path`` is unknown."""
        old, new = os.fspath(old_path), os.fspath(new_path)
        with self.transaction():
            src = self._get_document_by("path", old)
            if src is None:
                return None
            if new != old:
                self._conn.execute("DELETE FROM documents WHERE path = ?", (new,))
                changes: dict[str, Any] = {"path": new}
                if folder is not None:
                    changes["folder"] = folder
                self._update_document(src.id, changes, time.time())
            return self._get_document_by("id", src.id)

    def documents_needing_work(self, fingerprint: str) -> list[Document]:
        """Documents the indexer should (re)process for this compressor.

        'pending' (new or edited), 'indexing' (left so by a crash or a cancel),
        and 'indexed' documents with any segment lacking latents for
        ``fingerprint`` (the model changed, or a segment was re-cut).
        'error' and 'skipped' wait until the file changes (upsert resets them).
        """
        sql = f"""
            SELECT {_DOC_D} FROM documents d
            WHERE d.status IN ('pending', 'indexing')
               OR (d.status = 'indexed' AND EXISTS (
                     SELECT 1 FROM segments s
                     WHERE s.document_id = d.id
                       AND NOT EXISTS (SELECT 1 FROM latents l WHERE l.segment_id = s.id AND l.fingerprint = ?)))
            ORDER BY d.id
        """
        return [Document(*r) for r in self._all(sql, (fingerprint,))]

    # ---------------------------------------------------- document content
    def replace_document_content(
        self,
        doc_id: int,
        segments: Sequence[SegmentIn],
        latents: Mapping[str, LatentIn] | None = None,
        *,
        meta: DocumentMeta | None = None,
        fingerprint: str | None = None,
        status: str = "indexed",
        if_updated_at: float | None = None,
    ) -> ReplaceResult:
        """Make ``segments`` the document's content, in ONE transaction.

        Either everything lands (segments, FTS rows, latents, meta, status)
        or, on any exception, nothing does and the previous state stays.

        Incremental: an existing segment whose sha256 reappears is kept as the
        same row (renumbered in place), so its latents stay untouched; gone
        segments are deleted with their latents. ``latents`` maps segment
        sha256 -> the latents the caller encoded. With ``fingerprint`` given,
        segments still lacking latents for it get a copy from any other
        segment with the same text (a copied file needs no encoding), and
        ``status='indexed'`` is refused (ValueError, rolled back) while any
        segment still lacks them, so no half-indexed document is visible.
        ``if_updated_at``: the row's updated_at when the indexer read the
        file; if the row changed since (an edit event), StaleDocumentError.
        """
        _check_status(status)
        segs = list(segments)
        ordinals = [s.ordinal for s in segs]
        if len(set(ordinals)) != len(ordinals) or any(o < 0 for o in ordinals):
            raise ValueError("segment ordinals must be distinct and non-negative")
        given = dict(latents or {})
        if fingerprint is not None:
            wrong = {lat.fingerprint for lat in given.values()} - {fingerprint}
            if wrong:
                raise ValueError(f"latents from compressor(s) {sorted(wrong)} given for fingerprint {fingerprint}")
        now = time.time()
        conn = self._conn
        with self.transaction():
            doc = self._get_document_by("id", doc_id)
            if doc is None:
                raise NotFound(f"document {doc_id} does not exist")
            if if_updated_at is not None and doc.updated_at != if_updated_at:
                raise StaleDocumentError(f"{doc.path} changed after it was read (status {doc.status}); index it again")

            # match new segments to existing rows by content hash (first come, first kept)
            pool: dict[str, deque[int]] = {}
            for seg_id, sha in conn.execute("SELECT id, sha256 FROM segments WHERE document_id = ? ORDER BY ordinal", (doc_id,)):
                pool.setdefault(sha, deque()).append(seg_id)
            plan = [pool[s.sha256].popleft() if pool.get(s.sha256) else None for s in segs]
            gone = [seg_id for ids in pool.values() for seg_id in ids]
            if gone:
                conn.execute("DELETE FROM segments WHERE id IN (SELECT value FROM json_each(?))", (_json_ids(gone),))
            # park kept rows on negative ordinals so renumbering cannot hit UNIQUE(document_id, ordinal)
            conn.execute("UPDATE segments SET ordinal = -1 - ordinal WHERE document_id = ?", (doc_id,))

            ids: list[int] = []
            for seg, seg_id in zip(segs, plan):
                if seg_id is None:
                    cur = conn.execute(
                        "INSERT INTO segments (document_id, ordinal, page, char_start, char_end, text, n_tokens, sha256,"
                        " location) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (doc_id, seg.ordinal, seg.page, seg.char_start, seg.char_end, seg.text, seg.n_tokens, seg.sha256,
                         seg.location),
                    )
                    seg_id = int(cur.lastrowid)  # type: ignore[arg-type]
                else:
                    conn.execute(
                        "UPDATE segments SET ordinal = ?, page = ?, char_start = ?, char_end = ?, n_tokens = ?, location = ?"
                        " WHERE id = ?",
                        (seg.ordinal, seg.page, seg.char_start, seg.char_end, seg.n_tokens, seg.location, seg_id),
                    )
                ids.append(seg_id)

            written = 0
            for seg, seg_id in zip(segs, ids):
                lat = given.get(seg.sha256)
                if lat is not None:
                    self._write_latent(seg_id, lat, now)
                    written += 1

            copied, missing = 0, 0
            if fingerprint is not None:
                copied = self._copy_latents_by_sha(doc_id, fingerprint, now)
                missing = conn.execute(
                    "SELECT COUNT(*) FROM segments s WHERE s.document_id = ? AND NOT EXISTS"
                    " (SELECT 1 FROM latents l WHERE l.segment_id = s.id AND l.fingerprint = ?)",
                    (doc_id, fingerprint),
                ).fetchone()[0]
                if status == "indexed" and missing:
                    raise ValueError(f"{doc.path}: {missing} of {len(segs)} segments have no latents for {fingerprint}; not marking indexed")

            changes = {**(meta.as_columns() if meta else {}), "status": status, "error": None, "n_segments": len(segs)}
            self._update_document(doc_id, changes, now)
        kept = sum(1 for p in plan if p is not None)
        log.debug("document %d: %d segments kept, %d added, %d removed, %d latents written, %d copied",
                  doc_id, kept, len(segs) - kept, len(gone), written, copied)
        return ReplaceResult(doc_id, ids, kept, len(segs) - kept, len(gone), written, copied, missing)

    def _copy_latents_by_sha(self, doc_id: int, fingerprint: str, now: float) -> int:
        """Give each segment of the document lacking latents for ``fingerprint``
        a copy of another same-text segment's latents (copied inside SQLite, the
        blobs never pass through Python)."""
        cur = self._conn.execute(
            """
            INSERT INTO latents (segment_id, fingerprint, ratio, dtype, n, dim, blob, created_at)
            SELECT s.id, src.fingerprint, src.ratio, src.dtype, src.n, src.dim, src.blob, ?
            FROM segments s
            JOIN latents src ON src.rowid = (
                SELECT l2.rowid FROM segments s2
                JOIN latents l2 ON l2.segment_id = s2.id AND l2.fingerprint = ?
                WHERE s2.sha256 = s.sha256 LIMIT 1)
            WHERE s.document_id = ?
              AND NOT EXISTS (SELECT 1 FROM latents l3 WHERE l3.segment_id = s.id AND l3.fingerprint = ?)
            """,
            (now, fingerprint, doc_id, fingerprint),
        )
        return max(cur.rowcount, 0)

    def get_segments(self, document_id: int) -> list[Segment]:
        return [Segment(*r) for r in self._all(f"SELECT {_SEG} FROM segments WHERE document_id = ? ORDER BY ordinal", (document_id,))]

    def get_segments_by_id(self, segment_ids: Sequence[int]) -> list[Segment]:
        """Segments in the order asked (e.g. the cited ones, to expand to text); unknown ids are skipped."""
        rows = self._all(f"SELECT {_SEG} FROM segments WHERE id IN (SELECT value FROM json_each(?))", (_json_ids(segment_ids),))
        by_id = {r[0]: Segment(*r) for r in rows}
        return [by_id[i] for i in segment_ids if i in by_id]

    # ----------------------------------------------------------------- latents
    def _write_latent(self, segment_id: int, latent: LatentIn, now: float) -> None:
        # ON CONFLICT DO UPDATE (not REPLACE) keeps the row in place
        self._conn.execute(
            """
            INSERT INTO latents (segment_id, fingerprint, ratio, dtype, n, dim, blob, created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (segment_id, fingerprint) DO UPDATE SET
                ratio = excluded.ratio, dtype = excluded.dtype, n = excluded.n, dim = excluded.dim,
                blob = excluded.blob, created_at = excluded.created_at
            """,
            (segment_id, latent.fingerprint, int(latent.ratio), latent.dtype, latent.shape[0], latent.shape[1], latent.payload, now),
        )

    def put_latents(self, segment_id: int, latent: LatentIn) -> None:
        """Store (or replace) one segment's latents for ``latent.fingerprint``."""
        self.put_many_latents({segment_id: latent})

    def put_many_latents(self, items: Mapping[int, LatentIn] | Iterable[tuple[int, LatentIn]]) -> int:
        """Several segments' latents in one transaction (an encoder batch)."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        now = time.time()
        with self.transaction():
            known = {r[0] for r in self._conn.execute(
                "SELECT id FROM segments WHERE id IN (SELECT value FROM json_each(?))", (_json_ids(s for s, _ in pairs),))}
            for seg_id, lat in pairs:
                if seg_id not in known:
                    raise NotFound(f"segment {seg_id} does not exist (its document was re-indexed or deleted)")
                self._write_latent(seg_id, lat, now)
        return len(pairs)

    def get_latents(self, segment_ids: Sequence[int], fingerprint: str) -> list[StoredLatent | None]:
        """Latents for each id, in the order asked; None where there are none for ``fingerprint``."""
        rows = self._all(
            f"SELECT {_LAT_L} FROM latents l WHERE l.fingerprint = ? AND l.segment_id IN (SELECT value FROM json_each(?))",
            (fingerprint, _json_ids(segment_ids)),
        )
        by_id = {r[0]: _latent(r) for r in rows}
        return [by_id.get(i) for i in segment_ids]

    def find_latents_by_sha(self, sha256s: Iterable[str], fingerprint: str) -> dict[str, StoredLatent]:
        """Existing latents for segment texts, from any document: sha256 -> latents.

        The indexer asks this before encoding, so a copied or unchanged text
        is never encoded twice by the same compressor.
        """
        wanted = json.dumps(sorted(set(sha256s)))
        with self._snapshot():
            pairs = self._conn.execute(
                """
                SELECT s.sha256, MIN(s.id) FROM segments s
                JOIN latents l ON l.segment_id = s.id AND l.fingerprint = ?
                WHERE s.sha256 IN (SELECT value FROM json_each(?))
                GROUP BY s.sha256
                """,
                (fingerprint, wanted),
            ).fetchall()
            found = self.get_latents([seg_id for _, seg_id in pairs], fingerprint)
        return {sha: lat for (sha, _), lat in zip(pairs, found) if lat is not None}

    def latent_shas(self, fingerprint: str) -> list[str]:
        """Every segment text (by sha256) that has latents from this compressor: what a remote encoder
        can skip (the store copies them by sha at commit), shipped once instead of asked per document."""
        return [r[0] for r in self._all(
            "SELECT DISTINCT s.sha256 FROM segments s JOIN latents l ON l.segment_id = s.id AND l.fingerprint = ?",
            (fingerprint,))]

    def segments_missing_latents(
        self, fingerprint: str, limit: int | None = None, document_ids: Iterable[int] | None = None
    ) -> list[Segment]:
        """Segments with no latents for ``fingerprint`` (new, re-cut, or made by
        another model), by document then ordinal: the indexer's backlog."""
        sql = f"SELECT {_SEG_S} FROM segments s WHERE NOT EXISTS (SELECT 1 FROM latents l WHERE l.segment_id = s.id AND l.fingerprint = ?)"
        params: list[Any] = [fingerprint]
        if document_ids is not None:
            sql += " AND s.document_id IN (SELECT value FROM json_each(?))"
            params.append(_json_ids(document_ids))
        sql += " ORDER BY s.document_id, s.ordinal LIMIT ?"
        params.append(-1 if limit is None else int(limit))
        return [Segment(*r) for r in self._all(sql, params)]

    def load_scope(self, document_ids: Sequence[int], fingerprint: str) -> list[ScopeSegment]:
        """Every segment of the given documents with its latents for
        ``fingerprint`` (None where missing), documents in the order given,
        segments by ordinal: what the assistant prefills."""
        order = list(dict.fromkeys(int(i) for i in document_ids))
        rows = self._all(
            f"""
            SELECT d.path, {_SEG_S}, {_LAT_L}
            FROM json_each(?) j
            JOIN segments s ON s.document_id = j.value
            JOIN documents d ON d.id = s.document_id
            LEFT JOIN latents l ON l.segment_id = s.id AND l.fingerprint = ?
            ORDER BY j.key, s.ordinal
            """,
            (json.dumps(order), fingerprint),
        )
        out = []
        for r in rows:
            seg = Segment(*r[1 : 1 + _N_SEG])
            lat = r[1 + _N_SEG :]
            out.append(ScopeSegment(seg, r[0], _latent(lat) if lat[0] is not None else None))
        return out

    def prune_latents(self, keep_fingerprint: str) -> int:
        """Delete latents made by any other compressor; returns rows deleted."""
        with self.transaction():
            return self._conn.execute("DELETE FROM latents WHERE fingerprint != ?", (keep_fingerprint,)).rowcount

    # ------------------------------------------------------------------ search
    def search(
        self,
        query: str,
        *,
        document_ids: Iterable[int] | None = None,
        limit: int = 20,
        mode: MatchMode = "any",
        highlight: tuple[str, str] = ("[", "]"),
        snippet_tokens: int = 16,
    ) -> list[SearchHit]:
        """Full-text search over segment text, best (highest -bm25) first.

        ``document_ids`` restricts to those documents (an empty set finds
        nothing; None searches all). See ``fts`` for the match modes; 'raw'
        FTS5 syntax errors become ValueError.
        """
        expr = match_expression(query, mode)
        if expr is None:
            return []
        sql = f"""
            SELECT s.id, s.document_id, d.path, s.page, s.ordinal, -bm25(segments_fts),
                   snippet(segments_fts, 0, ?, ?, '…', ?), s.location
            FROM segments_fts
            JOIN segments s ON s.id = segments_fts.rowid
            JOIN documents d ON d.id = s.document_id
            WHERE segments_fts MATCH ?
        """
        params: list[Any] = [highlight[0], highlight[1], int(snippet_tokens), expr]
        if document_ids is not None:
            sql += " AND s.document_id IN (SELECT value FROM json_each(?))"
            params.append(_json_ids(document_ids))
        sql += " ORDER BY bm25(segments_fts) LIMIT ?"
        params.append(int(limit))
        try:
            rows = self._all(sql, params)
        except sqlite3.OperationalError as e:
            if mode == "raw":
                raise ValueError(f"bad full-text query {query!r}: {e}") from e
            raise
        return [SearchHit(*r) for r in rows]

    def rebuild_fts(self) -> None:
        """Rebuild the full-text index from segment text (repair; never needed in normal use)."""
        with self.transaction():
            self._conn.execute("INSERT INTO segments_fts (segments_fts) VALUES ('rebuild')")

    # --------------------------------------------------------------- folders
    def add_folder(self, path: str | os.PathLike[str]) -> WatchedFolder:
        """Watch a folder (re-enables it if it was disabled)."""
        key = os.fspath(path)
        with self.transaction():
            self._conn.execute(
                "INSERT INTO folders (path, added_at, enabled) VALUES (?, ?, 1) ON CONFLICT (path) DO UPDATE SET enabled = 1",
                (key, time.time()),
            )
            row = self._conn.execute("SELECT path, added_at, enabled FROM folders WHERE path = ?", (key,)).fetchone()
        return WatchedFolder(row[0], row[1], bool(row[2]))

    def list_folders(self, enabled_only: bool = False) -> list[WatchedFolder]:
        sql = "SELECT path, added_at, enabled FROM folders" + (" WHERE enabled = 1" if enabled_only else "") + " ORDER BY path"
        return [WatchedFolder(p, a, bool(e)) for p, a, e in self._all(sql)]

    def set_folder_enabled(self, path: str | os.PathLike[str], enabled: bool) -> bool:
        with self.transaction():
            return self._conn.execute("UPDATE folders SET enabled = ? WHERE path = ?", (int(enabled), os.fspath(path))).rowcount > 0

    def remove_folder(self, path: str | os.PathLike[str], *, delete_documents: bool = False) -> int:
        """Stop watching a folder; with ``delete_documents`` also drop its
        documents (and their latents). Returns the number of documents deleted."""
        key = os.fspath(path)
        with self.transaction():
            self._conn.execute("DELETE FROM folders WHERE path = ?", (key,))
            if not delete_documents:
                return 0
            return self._conn.execute("DELETE FROM documents WHERE folder = ?", (key,)).rowcount

    # ------------------------------------------------------------ exclusions
    def exclude(self, path: str | os.PathLike[str]) -> bool:
        """Take a file out of the library: its document (segments, latents) is deleted and the folder
        watcher leaves the path alone from now on. True if a document was deleted."""
        key = os.fspath(path)
        with self.transaction():
            self._conn.execute("INSERT OR IGNORE INTO exclusions (path, added_at) VALUES (?, ?)", (key, time.time()))
            return self._conn.execute("DELETE FROM documents WHERE path = ?", (key,)).rowcount > 0

    def include(self, path: str | os.PathLike[str]) -> bool:
        """Undo ``exclude`` (the watcher's next look at the file indexes it again); False if it was not excluded."""
        with self.transaction():
            return self._conn.execute("DELETE FROM exclusions WHERE path = ?", (os.fspath(path),)).rowcount > 0

    def is_excluded(self, path: str | os.PathLike[str]) -> bool:
        return bool(self._all("SELECT 1 FROM exclusions WHERE path = ?", (os.fspath(path),)))

    def excluded_paths(self) -> list[str]:
        return [r[0] for r in self._all("SELECT path FROM exclusions ORDER BY path")]

    # ------------------------------------------------------------------ chats
    def create_chat(self, title: str = "") -> Chat:
        now = time.time()
        with self.transaction():
            cur = self._conn.execute("INSERT INTO chats (title, created_at, updated_at) VALUES (?, ?, ?)", (title, now, now))
            chat_id = int(cur.lastrowid)  # type: ignore[arg-type]
        return Chat(chat_id, title, now, now)

    def rename_chat(self, chat_id: int, title: str) -> bool:
        with self.transaction():
            return self._conn.execute(
                "UPDATE chats SET title = ?, updated_at = ? WHERE id = ?", (title, time.time(), chat_id)
            ).rowcount > 0

    def add_message(
        self, chat_id: int, role: str, content: str, citations: Sequence[Mapping[str, Any]] | None = None,
        notes: Mapping[str, Any] | None = None,
    ) -> Message:
        """Append a message. ``citations`` are data (segment ids, pages, ...),
        stored as JSON, never re-parsed out of the answer text; ``notes`` likewise
        (what the answer could not read), so a reopened chat shows what the live one did."""
        if role not in ROLES:
            raise ValueError(f"unknown message role {role!r} (expected one of {sorted(ROLES)})")
        cites = [dict(c) for c in citations] if citations is not None else None
        cites_json = json.dumps(cites) if cites is not None else None
        kept = dict(notes) if notes else None
        notes_json = json.dumps(kept) if kept else None
        now = time.time()
        with self.transaction():
            if self._conn.execute("SELECT 1 FROM chats WHERE id = ?", (chat_id,)).fetchone() is None:
                raise NotFound(f"chat {chat_id} does not exist")
            cur = self._conn.execute(
                "INSERT INTO messages (chat_id, role, content, citations_json, notes_json, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (chat_id, role, content, cites_json, notes_json, now),
            )
            self._conn.execute("UPDATE chats SET updated_at = ? WHERE id = ?", (now, chat_id))
            msg_id = int(cur.lastrowid)  # type: ignore[arg-type]
        return Message(msg_id, chat_id, role, content, cites, now, kept)

    def list_chats(self) -> list[Chat]:
        """Most recently active first."""
        return [Chat(*r) for r in self._all("SELECT id, title, created_at, updated_at FROM chats ORDER BY updated_at DESC, id DESC")]

    def get_chat(self, chat_id: int) -> Chat | None:
        row = self._one("SELECT id, title, created_at, updated_at FROM chats WHERE id = ?", (chat_id,))
        return Chat(*row) if row else None

    def get_messages(self, chat_id: int) -> list[Message]:
        rows = self._all(
            "SELECT id, chat_id, role, content, citations_json, created_at, notes_json FROM messages"
            " WHERE chat_id = ? ORDER BY id", (chat_id,)
        )
        return [Message(i, c, role, content, json.loads(cj) if cj is not None else None, t,
                        json.loads(nj) if nj is not None else None) for i, c, role, content, cj, t, nj in rows]

    def delete_chat(self, chat_id: int) -> bool:
        """Delete a chat and its messages (cascade)."""
        with self.transaction():
            return self._conn.execute("DELETE FROM chats WHERE id = ?", (chat_id,)).rowcount > 0

    # ------------------------------------------------------------ maintenance
    def documents_by_status(self) -> dict[str, int]:
        """Documents per status, every status present (0 if none): one indexed GROUP BY, cheap
        enough for a UI that polls it every second, unlike ``stats()``, which scans every segment and latent."""
        by_status = {s: 0 for s in sorted(STATUSES)}
        by_status.update(dict(self._all("SELECT status, COUNT(*) FROM documents GROUP BY status")))
        return by_status

    def stats(self) -> StoreStats:
        """Counts and sizes for `lclm-docs status`, the UI and the benchmarks."""
        with self._snapshot():
            c = self._conn
            by_status = self.documents_by_status()
            n_segments, text_bytes = c.execute("SELECT COUNT(*), COALESCE(SUM(length(CAST(text AS BLOB))), 0) FROM segments").fetchone()
            n_latents, latent_bytes = c.execute("SELECT COUNT(*), COALESCE(SUM(length(blob)), 0) FROM latents").fetchone()
            by_fp = dict(c.execute("SELECT fingerprint, COUNT(*) FROM latents GROUP BY fingerprint").fetchall())
            page_count = c.execute("PRAGMA page_count").fetchone()[0]
            page_size = c.execute("PRAGMA page_size").fetchone()[0]
        wal = self.path + "-wal"
        wal_bytes = os.path.getsize(wal) if self.path != ":memory:" and os.path.exists(wal) else 0
        return StoreStats(
            documents=sum(by_status.values()),
            documents_by_status=by_status,
            segments=n_segments,
            latents=n_latents,
            latent_bytes=latent_bytes,
            latents_by_fingerprint=by_fp,
            text_bytes=text_bytes,
            db_bytes=page_count * page_size,
            wal_bytes=wal_bytes,
            schema_version=self.schema_version,
        )

    def integrity_check(self) -> str:
        """'ok', or one line per problem: SQLite's own page/index check,
        foreign keys, the FTS index against segment text, document segment
        counts, and latent blob sizes against their dtype and shape."""
        problems: list[str] = []
        with self._snapshot():
            c = self._conn
            rows = [r[0] for r in c.execute("PRAGMA integrity_check").fetchall()]
            if rows != ["ok"]:
                problems += [f"sqlite: {r}" for r in rows]
            for table, rowid, parent, _ in c.execute("PRAGMA foreign_key_check").fetchall():
                problems.append(f"foreign key: {table} row {rowid} points to a missing {parent} row")
            for path, stored, actual in c.execute(
                "SELECT d.path, d.n_segments, COUNT(s.id) FROM documents d LEFT JOIN segments s ON s.document_id = d.id"
                " GROUP BY d.id HAVING d.n_segments != COUNT(s.id)"
            ):
                problems.append(f"document {path}: n_segments {stored} but {actual} segment rows")
            for seg_id, fp, size, n, dim, dtype in c.execute(
                "SELECT segment_id, fingerprint, length(blob), n, dim, dtype FROM latents"
                " WHERE length(blob) != n * dim * (CASE dtype WHEN 'float32' THEN 4 ELSE 2 END)"
            ):
                problems.append(f"latents of segment {seg_id} ({fp}): {size} bytes for {n}x{dim} {dtype}")
        # FTS5's check is an INSERT command (it changes nothing, but SQLite
        # takes the write lock for it), so it runs in a write transaction of its own.
        try:
            with self.transaction():
                self._conn.execute("INSERT INTO segments_fts (segments_fts, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as e:
            problems.append(f"full-text index out of step with segments: {e}")
        if problems:
            log.warning("store integrity check found %d problem(s): %s", len(problems), problems[:5])
        return "ok" if not problems else "\n".join(problems)
