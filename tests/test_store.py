"""latent_store: schema, incremental indexing, atomicity, search, concurrency, chats.

Fast (tmp_path SQLite files, no model): latents are random bytes with the
dtype/shape/fingerprint fields the real LatentArray would give.
"""

from __future__ import annotations

import ast
import random
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from latent_store import (
    MIGRATIONS,
    DocumentMeta,
    LatentIn,
    LatentStore,
    Migration,
    NotFound,
    SchemaTooNewError,
    SegmentIn,
    StaleDocumentError,
    StoreError,
)
from latent_store.types import DTYPE_ITEMSIZE

FP = "fp-a"
FP2 = "fp-b"


def make_latent(seed: int, n: int = 3, dim: int = 4, dtype: str = "float16", fp: str = FP, ratio: int = 4) -> LatentIn:
    payload = random.Random(seed).randbytes(n * dim * DTYPE_ITEMSIZE[dtype])
    return LatentIn(payload, dtype, (n, dim), fp, ratio)


def make_segments(texts: list[str], pages: list[int] | None = None) -> list[SegmentIn]:
    out, pos = [], 0
    for i, t in enumerate(texts):
        out.append(SegmentIn(ordinal=i, text=t, page=(pages[i] if pages else None), char_start=pos, char_end=pos + len(t), n_tokens=len(t.split())))
        pos += len(t) + 1
    return out


def latents_for(segs: list[SegmentIn], fp: str = FP, seed0: int = 0) -> dict[str, LatentIn]:
    return {s.sha256: make_latent(seed0 + i, fp=fp) for i, s in enumerate(segs)}


def index(store: LatentStore, path: str, texts: list[str], *, pages: list[int] | None = None, fp: str = FP, seed0: int = 0):
    doc = store.upsert_document(path, folder=str(Path(path).parent), size=sum(map(len, texts)), mtime=1.0, type="txt")
    segs = make_segments(texts, pages)
    res = store.replace_document_content(doc.id, segs, latents_for(segs, fp, seed0), fingerprint=fp, meta=DocumentMeta(page_count=max(pages) if pages else None))
    return doc, segs, res


def raw(db_path: Path) -> sqlite3.Connection:
    """A second, independent connection: checks what is really on disk."""
    return sqlite3.connect(db_path)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "store.sqlite"


@pytest.fixture
def store(db_path: Path):
    with LatentStore(db_path) as s:
        yield s


TEXTS = [
    "Latent context models compress text into vectors.",
    "The watcher debounces file events before indexing.",
    "SQLite in WAL mode lets readers continue while one writer commits.",
]


# ------------------------------------------------------------------ basics
def test_package_imports_no_model_or_app_code():
    src = Path(__file__).resolve().parents[1] / "latent_store"
    forbidden = {"torch", "lclm_core", "app", "ui", "numpy"}
    for f in src.glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
            for n in names:
                assert n.split(".")[0] not in forbidden, f"{f.name} imports {n}"
    code = "import sys, latent_store; bad = {'torch', 'lclm_core', 'app', 'ui'} & set(sys.modules); assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=src.parent)


def test_wal_busy_timeout_and_foreign_keys(store: LatentStore, db_path: Path):
    settings = store.connection_settings()
    assert settings["journal_mode"] == "wal"
    assert settings["busy_timeout"] == 5000
    assert settings["foreign_keys"] == 1
    with raw(db_path) as c:  # WAL is a property of the file, seen by any connection
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with LatentStore(db_path.with_name("other.sqlite"), busy_timeout_ms=1234) as other:
        assert other.connection_settings()["busy_timeout"] == 1234


def test_round_trip_documents_segments_latents_bytes_identical(store: LatentStore):
    doc = store.upsert_document("/docs/a.pdf", folder="/docs", size=123, mtime=5.5, sha256="ab" * 32, type="pdf")
    assert doc.status == "pending" and doc.n_segments == 0
    segs = make_segments(TEXTS, pages=[1, 1, 2])
    lats = {
        segs[0].sha256: make_latent(1, n=2, dim=8, dtype="float32"),
        segs[1].sha256: make_latent(2, n=5, dim=3, dtype="float16"),
        segs[2].sha256: make_latent(3, n=1, dim=16, dtype="bfloat16", ratio=16),
    }
    res = store.replace_document_content(doc.id, segs, lats, fingerprint=FP, meta=DocumentMeta(page_count=2))
    assert (res.added, res.kept, res.removed, res.latents_written, res.missing_latents) == (3, 0, 0, 3, 0)

    got = store.get_document("/docs/a.pdf")
    assert got == store.get_document(doc.id)
    assert (got.status, got.n_segments, got.page_count, got.size, got.sha256, got.type, got.folder) == ("indexed", 3, 2, 123, "ab" * 32, "pdf", "/docs")

    rows = store.get_segments(doc.id)
    assert [(r.ordinal, r.page, r.text, r.char_start, r.char_end, r.n_tokens, r.sha256) for r in rows] == [
        (s.ordinal, s.page, s.text, s.char_start, s.char_end, s.n_tokens, s.sha256) for s in segs
    ]
    back = store.get_latents(res.segment_ids, FP)
    for seg, lat in zip(segs, back):
        want = lats[seg.sha256]
        assert lat is not None and lat.as_input() == want  # payload bytes, dtype, shape, fingerprint, ratio
        assert type(lat.payload) is bytes
    # order follows the request; unknown id or other fingerprint -> None
    ids = res.segment_ids
    assert [l.segment_id if l else None for l in store.get_latents([ids[2], 999, ids[0]], FP)] == [ids[2], None, ids[0]]
    assert store.get_latents(ids, FP2) == [None, None, None]
    assert [s.id for s in store.get_segments_by_id([ids[1], 12345, ids[0]])] == [ids[1], ids[0]]

    scope = store.load_scope([doc.id], FP)
    assert [(x.segment.ordinal, x.path, x.latent.payload) for x in scope] == [(s.ordinal, "/docs/a.pdf", lats[s.sha256].payload) for s in segs]


def test_latent_in_is_validated_at_the_boundary():
    with pytest.raises(ValueError, match="dtype"):
        LatentIn(b"\0" * 8, "int8", (2, 4), FP, 4)
    with pytest.raises(ValueError, match="needs 16"):
        LatentIn(b"\0" * 8, "float16", (2, 4), FP, 4)
    with pytest.raises(ValueError, match="fingerprint"):
        LatentIn(b"\0" * 16, "float16", (2, 4), "", 4)
    assert LatentIn(bytearray(16), "float16", (2, 4), FP, 4).payload == bytes(16)


def test_list_documents_filters_and_status_validation(store: LatentStore):
    store.upsert_document("/f1/a.txt", folder="/f1")
    store.upsert_document("/f1/b.txt", folder="/f1", status="skipped", error="empty")
    store.upsert_document("/f2/c.txt", folder="/f2")
    assert [d.path for d in store.list_documents(folder="/f1")] == ["/f1/a.txt", "/f1/b.txt"]
    assert [d.path for d in store.list_documents(status="pending")] == ["/f1/a.txt", "/f2/c.txt"]
    assert [d.path for d in store.list_documents(folder="/f1", status={"skipped", "error"})] == ["/f1/b.txt"]
    assert store.get_document("/f1/b.txt").error == "empty"
    with pytest.raises(ValueError):
        store.upsert_document("/x", status="done")
    with pytest.raises(ValueError):
        store.set_status(1, "bogus")
    with pytest.raises(NotFound):
        store.set_status(999, "error", "x")


def test_edited_file_goes_back_to_pending(store: LatentStore):
    doc, _, _ = index(store, "/d/a.txt", TEXTS)
    assert store.get_document(doc.id).status == "indexed"
    same = store.upsert_document("/d/a.txt", size=sum(map(len, TEXTS)), mtime=1.0)  # nothing changed
    assert same.status == "indexed"
    edited = store.upsert_document("/d/a.txt", mtime=2.0)
    assert edited.status == "pending" and edited.id == doc.id
    failed = store.set_status(doc.id, "error", "encrypted PDF")
    assert (failed.status, failed.error) == ("error", "encrypted PDF")
    assert store.documents_needing_work(FP) == []  # an error waits for the file to change
    fixed = store.upsert_document("/d/a.txt", size=1)
    assert (fixed.status, fixed.error) == ("pending", None)


# ------------------------------------------------------------------ search
def test_fts_finds_a_sentence_and_its_page(store: LatentStore):
    pages = [1, 2, 3, 3]
    texts = [
        "Introduction to the R environment and its history.",
        "Vectors are the simplest data structure; assignment uses the arrow operator.",
        "Lists and data frames hold objects of different modes.",
        "Graphics procedures are an important part of the environment.",
    ]
    doc, _, _ = index(store, "/r/R-intro.pdf", texts, pages=pages)
    hits = store.search("assignment uses the arrow operator", mode="phrase")
    assert len(hits) == 1
    hit = hits[0]
    assert (hit.path, hit.page, hit.ordinal, hit.document_id) == ("/r/R-intro.pdf", 2, 1, doc.id)
    assert "[assignment uses the arrow operator]" in hit.snippet and hit.score > 0
    # natural-language questions with punctuation are safe; stemming matches "graphic"
    top = store.search("What's the deal with graphic procedures?")[0]
    assert top.page == 3 and top.ordinal == 3
    assert store.search("?!") == []
    assert store.search('"unbalanced AND', mode="all") == []
    with pytest.raises(ValueError):
        store.search('"unbalanced AND', mode="raw")


def test_search_filters_by_document_ids(store: LatentStore):
    a, _, _ = index(store, "/d/a.txt", ["The needle is in the first haystack."])
    b, _, _ = index(store, "/d/b.txt", ["Another needle hides in the second haystack."], seed0=10)
    assert {h.document_id for h in store.search("needle")} == {a.id, b.id}
    assert [h.document_id for h in store.search("needle", document_ids={b.id})] == [b.id]
    assert store.search("needle", document_ids=set()) == []
    ranked = store.search("needle haystack second")
    assert ranked[0].document_id == b.id and ranked[0].score >= ranked[-1].score


# ------------------------------------------------------------------ deletes / moves
def test_cascade_deletes_leave_no_orphans(store: LatentStore, db_path: Path):
    a, _, _ = index(store, "/d/a.txt", TEXTS)
    b, _, _ = index(store, "/d/b.txt", ["Unrelated survivor text."], seed0=50)
    chat = store.create_chat("q")
    store.add_message(chat.id, "user", "hi")
    assert store.delete_document("/d/a.txt") is True
    assert store.delete_document("/d/a.txt") is False
    assert store.delete_chat(chat.id) is True
    with raw(db_path) as c:
        assert c.execute("SELECT COUNT(*) FROM segments WHERE document_id = ?", (a.id,)).fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM latents WHERE segment_id NOT IN (SELECT id FROM segments)").fetchone()[0] == 0
        assert c.execute("SELECT COUNT(*) FROM latents").fetchone()[0] == 1
        assert c.execute("SELECT COUNT(*) FROM messages").fetchone()[0] == 0
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    assert store.search("watcher debounces") == []  # the FTS rows went too
    assert [h.document_id for h in store.search("survivor")] == [b.id]
    assert store.integrity_check() == "ok"
    assert store.delete_document(b.id) is True
    assert store.stats().segments == 0 and store.stats().latents == 0


def test_move_keeps_segments_and_latents(store: LatentStore, db_path: Path):
    doc, _, res = index(store, "/d/old.txt", TEXTS)
    with raw(db_path) as c:
        before = c.execute("SELECT rowid, segment_id, blob FROM latents ORDER BY rowid").fetchall()
    moved = store.move_document("/d/old.txt", "/e/new.txt", folder="/e")
    assert moved.id == doc.id and moved.path == "/e/new.txt" and moved.folder == "/e" and moved.status == "indexed"
    assert store.get_document("/d/old.txt") is None
    assert [s.id for s in store.get_segments(doc.id)] == res.segment_ids
    with raw(db_path) as c:
        assert c.execute("SELECT rowid, segment_id, blob FROM latents ORDER BY rowid").fetchall() == before
    assert store.documents_needing_work(FP) == []
    assert store.search("watcher")[0].path == "/e/new.txt"
    assert store.move_document("/nope", "/x") is None
    # a move over an existing file replaces that row
    other, _, _ = index(store, "/e/target.txt", ["Overwritten content."], seed0=70)
    store.move_document("/e/new.txt", "/e/target.txt")
    assert store.get_document(other.id) is None
    assert store.get_document("/e/target.txt").id == doc.id
    assert store.integrity_check() == "ok"


# ------------------------------------------------------------------ incremental re-indexing
def test_reindex_keeps_unchanged_latents_and_marks_changed_missing(store: LatentStore, db_path: Path):
    doc, segs, res = index(store, "/d/a.txt", TEXTS)
    with raw(db_path) as c:
        before = {sid: (rowid, blob) for rowid, sid, blob in c.execute("SELECT rowid, segment_id, blob FROM latents")}
    # a new paragraph at the front, the middle one edited: kept rows get renumbered in place
    new_texts = ["A brand new first paragraph.", TEXTS[0], "The watcher was rewritten entirely.", TEXTS[2]]
    new_segs = make_segments(new_texts)
    r2 = store.replace_document_content(doc.id, new_segs, {}, meta=DocumentMeta(size=99))
    assert (r2.kept, r2.added, r2.removed, r2.latents_written) == (2, 2, 1, 0)
    kept_ids = [res.segment_ids[0], res.segment_ids[2]]
    assert [r2.segment_ids[1], r2.segment_ids[3]] == kept_ids
    with raw(db_path) as c:
        after = {sid: (rowid, blob) for rowid, sid, blob in c.execute("SELECT rowid, segment_id, blob FROM latents")}
    assert after == {sid: before[sid] for sid in kept_ids}  # same rows, same blobs; the edited one's latents are gone
    rows = store.get_segments(doc.id)
    assert [r.text for r in rows] == new_texts and [r.ordinal for r in rows] == [0, 1, 2, 3]
    assert [r.char_start for r in rows] == [s.char_start for s in new_segs]
    missing = store.segments_missing_latents(FP)
    assert [m.text for m in missing] == [new_texts[0], new_texts[2]]
    assert [d.id for d in store.documents_needing_work(FP)] == [doc.id]
    assert store.get_document(doc.id).size == 99
    # FTS follows the edit
    assert store.search("debounces") == []
    assert store.search("rewritten entirely")[0].segment_id == r2.segment_ids[2]
    # the indexer fills the backlog; the document is complete again
    store.put_many_latents({m.id: make_latent(100 + m.id) for m in missing})
    assert store.segments_missing_latents(FP) == [] and store.documents_needing_work(FP) == []
    assert store.integrity_check() == "ok"


def test_fingerprint_change_makes_every_segment_missing(store: LatentStore):
    a, _, _ = index(store, "/d/a.txt", TEXTS)
    b, _, _ = index(store, "/d/b.txt", ["One more segment."], seed0=30)
    assert store.segments_missing_latents(FP) == []
    stale = store.segments_missing_latents(FP2)
    assert len(stale) == 4 and [s.document_id for s in stale] == [a.id] * 3 + [b.id]
    assert len(store.segments_missing_latents(FP2, limit=2)) == 2
    assert [s.document_id for s in store.segments_missing_latents(FP2, document_ids=[b.id])] == [b.id]
    assert [d.id for d in store.documents_needing_work(FP2)] == [a.id, b.id]
    for s in stale:
        store.put_latents(s.id, make_latent(s.id, fp=FP2, dim=6))
    assert store.documents_needing_work(FP2) == []
    assert store.stats().latents_by_fingerprint == {FP: 4, FP2: 4}
    assert store.prune_latents(keep_fingerprint=FP2) == 4
    assert store.segments_missing_latents(FP2) == [] and len(store.segments_missing_latents(FP)) == 4
    with pytest.raises(NotFound):
        store.put_latents(10_000, make_latent(1))


def test_copied_file_reuses_latents_without_encoding(store: LatentStore):
    _, segs, _ = index(store, "/d/a.txt", TEXTS)
    found = store.find_latents_by_sha([s.sha256 for s in segs] + ["0" * 64], FP)
    assert set(found) == {s.sha256 for s in segs}
    assert store.find_latents_by_sha([s.sha256 for s in segs], FP2) == {}
    copy = store.upsert_document("/d/copy of a.txt")
    res = store.replace_document_content(copy.id, make_segments(TEXTS), {}, fingerprint=FP)
    assert (res.latents_copied, res.missing_latents, store.get_document(copy.id).status) == (3, 0, "indexed")
    assert store.find_latents_by_sha([], FP) == {}
    a_id = store.get_document("/d/a.txt").id
    a_lat = [x.latent.payload for x in store.load_scope([a_id], FP)]
    c_lat = [x.latent.payload for x in store.load_scope([copy.id], FP)]
    assert a_lat == c_lat
    # scope keeps the caller's document order
    assert [x.path for x in store.load_scope([copy.id, a_id, copy.id], FP)] == ["/d/copy of a.txt"] * 3 + ["/d/a.txt"] * 3


# ------------------------------------------------------------------ atomicity
def _snapshot(db_path: Path):
    with raw(db_path) as c:
        return (
            c.execute("SELECT * FROM documents ORDER BY id").fetchall(),
            c.execute("SELECT * FROM segments ORDER BY id").fetchall(),
            c.execute("SELECT rowid, * FROM latents ORDER BY rowid").fetchall(),
        )


def test_failure_mid_document_leaves_previous_state_intact(store: LatentStore, db_path: Path, monkeypatch):
    doc, _, _ = index(store, "/d/a.txt", TEXTS)
    before = _snapshot(db_path)
    new_segs = make_segments(["Completely different text.", TEXTS[1], "More new words here."])
    calls = {"n": 0}
    real = LatentStore._write_latent

    def fail_on_second(self, *a, **k):  # segments and FTS rows are already written by now
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (simulated)")
        return real(self, *a, **k)

    monkeypatch.setattr(LatentStore, "_write_latent", fail_on_second)
    with pytest.raises(OSError, match="simulated"):
        store.replace_document_content(doc.id, new_segs, latents_for(new_segs, seed0=200), fingerprint=FP, meta=DocumentMeta(size=1))
    monkeypatch.undo()
    assert calls["n"] == 2
    assert _snapshot(db_path) == before
    assert store.search("completely different") == []
    assert store.search("debounces")[0].document_id == doc.id
    assert store.get_document(doc.id).status == "indexed"
    assert store.integrity_check() == "ok"
    # the store is usable after the rollback
    store.replace_document_content(doc.id, new_segs, latents_for(new_segs, seed0=200), fingerprint=FP)
    assert [s.text for s in store.get_segments(doc.id)] == [s.text for s in new_segs]


def test_incomplete_latents_are_never_marked_indexed(store: LatentStore, db_path: Path):
    doc, _, _ = index(store, "/d/a.txt", TEXTS)
    before = _snapshot(db_path)
    new_segs = make_segments(TEXTS + ["A segment the encoder never saw."])
    with pytest.raises(ValueError, match="1 of 4 segments have no latents"):
        store.replace_document_content(doc.id, new_segs, {}, fingerprint=FP)
    assert _snapshot(db_path) == before
    with pytest.raises(ValueError, match="distinct"):
        store.replace_document_content(doc.id, [SegmentIn(0, "a"), SegmentIn(0, "b")])
    with pytest.raises(ValueError, match="compressor"):
        store.replace_document_content(doc.id, new_segs[:1], {new_segs[0].sha256: make_latent(1, fp=FP2)}, fingerprint=FP)
    with pytest.raises(NotFound):
        store.replace_document_content(9999, new_segs)
    assert _snapshot(db_path) == before


def test_edit_during_indexing_is_not_overwritten_by_stale_content(store: LatentStore):
    doc = store.upsert_document("/d/a.txt", mtime=1.0)
    claimed = store.set_status(doc.id, "indexing")
    store.upsert_document("/d/a.txt", mtime=2.0)  # the watcher saw an edit meanwhile
    segs = make_segments(TEXTS)
    with pytest.raises(StaleDocumentError):
        store.replace_document_content(doc.id, segs, latents_for(segs), fingerprint=FP, if_updated_at=claimed.updated_at)
    assert store.get_document(doc.id).status == "pending" and store.get_segments(doc.id) == []
    again = store.set_status(doc.id, "indexing")
    store.replace_document_content(doc.id, segs, latents_for(segs), fingerprint=FP, if_updated_at=again.updated_at)
    assert store.get_document(doc.id).status == "indexed"


def test_app_level_transaction_groups_calls(store: LatentStore):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.upsert_document("/d/one.txt")
            with store.transaction():  # a savepoint inside
                store.upsert_document("/d/two.txt")
            raise RuntimeError("abort")
    assert store.list_documents() == []


# ------------------------------------------------------------------ concurrency
def test_two_threads_share_one_store_without_lock_errors(store: LatentStore):
    errors: list[BaseException] = []
    chat = store.create_chat("busy")
    start = threading.Barrier(2)

    def indexer() -> None:
        try:
            start.wait()
            for i in range(40):
                doc = store.upsert_document(f"/bulk/{i}.txt", folder="/bulk")
                store.set_status(doc.id, "indexing")
                segs = make_segments([f"Document {i} segment {j} text." for j in range(5)])
                store.replace_document_content(doc.id, segs, latents_for(segs, seed0=i * 10), fingerprint=FP)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def chatter() -> None:
        try:
            start.wait()
            for i in range(200):
                store.add_message(chat.id, "user" if i % 2 == 0 else "assistant", f"message {i}", [{"segment_id": i}])
                store.list_chats()
                store.search("segment text", limit=3)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=indexer), threading.Thread(target=chatter)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(store.list_documents(status="indexed")) == 40
    assert len(store.get_messages(chat.id)) == 200
    assert store.integrity_check() == "ok"


def test_two_connections_on_one_file_wait_instead_of_failing(db_path: Path):
    """Two stores = two connections, as a CLI indexer next to the UI would have."""
    LatentStore(db_path).close()
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def indexer() -> None:
        try:
            with LatentStore(db_path) as s:
                start.wait()
                for i in range(30):
                    doc = s.upsert_document(f"/p/{i}.txt")
                    segs = make_segments([f"Process doc {i} part {j}." for j in range(4)])
                    s.replace_document_content(doc.id, segs, latents_for(segs, seed0=i), fingerprint=FP)
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    def ui() -> None:
        try:
            with LatentStore(db_path) as s:
                chat = s.create_chat("ui")
                start.wait()
                for i in range(150):
                    s.add_message(chat.id, "user", f"q {i}")
                    s.stats()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=indexer), threading.Thread(target=ui)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == [], [str(e) for e in errors]
    with LatentStore(db_path) as s:
        assert s.stats().documents_by_status["indexed"] == 30
        assert s.integrity_check() == "ok"


# ------------------------------------------------------------------ migrations
def test_migrates_an_empty_file(tmp_path: Path):
    path = tmp_path / "empty.sqlite"
    path.touch()  # v0: a zero-byte file
    with LatentStore(path) as s:
        assert s.schema_version == len(MIGRATIONS) == 4
    with raw(path) as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type IN ('table', 'view')")}
        assert {"documents", "segments", "latents", "segments_fts", "folders", "chats", "messages", "exclusions",
                "schema_version"} <= tables
        assert c.execute("SELECT version FROM schema_version").fetchall() == [(1,), (2,), (3,), (4,)]


def _add_language(db) -> None:
    db["documents"].add_column("language", str)  # sqlite-utils inside the migration's transaction
    db.execute("UPDATE documents SET language = 'en'")


def test_upgrades_an_older_version_and_refuses_a_newer_one(db_path: Path):
    with LatentStore(db_path) as s:
        doc, _, _ = index(s, "/d/a.txt", TEXTS)
    nxt = len(MIGRATIONS) + 1
    v2 = (*MIGRATIONS, Migration(nxt, "documents.language", _add_language))
    with LatentStore(db_path, migrations=v2) as s:
        assert s.schema_version == nxt
        assert s.get_document(doc.id).status == "indexed"
        assert len(s.load_scope([doc.id], FP)) == 3
    with raw(db_path) as c:
        assert c.execute("SELECT language FROM documents").fetchall() == [("en",)]
        assert [r[0] for r in c.execute("SELECT version FROM schema_version ORDER BY version")] == [*range(1, nxt + 1)]
    with LatentStore(db_path, migrations=v2) as s:  # idempotent re-open
        assert s.schema_version == nxt
    with pytest.raises(SchemaTooNewError):
        LatentStore(db_path)  # an older release must not touch a newer file


def test_failed_migration_leaves_the_old_version(db_path: Path):
    with LatentStore(db_path) as s:
        index(s, "/d/a.txt", TEXTS)

    def broken(db) -> None:
        db["documents"].add_column("language", str)
        raise RuntimeError("bug in migration")

    with pytest.raises(RuntimeError, match="bug in migration"):
        LatentStore(db_path, migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken", broken)))
    with raw(db_path) as c:
        cols = [r[1] for r in c.execute("PRAGMA table_info(documents)")]
        assert "language" not in cols
    with LatentStore(db_path) as s:
        assert s.schema_version == len(MIGRATIONS) and s.stats().latents == 3
    with pytest.raises(ValueError, match="1..N"):
        LatentStore(db_path, migrations=(*MIGRATIONS, Migration(len(MIGRATIONS) + 2, "gap", broken)))


def test_a_chat_saved_by_the_first_release_opens_and_takes_notes_after_the_upgrade(db_path: Path):
    with LatentStore(db_path, migrations=MIGRATIONS[:1]) as s:  # the v1 layout, as 2026-11 releases wrote it
        chat = s.create_chat("old")
    with raw(db_path) as c:  # a v1 release's INSERT: no notes column yet
        c.execute("INSERT INTO messages (chat_id, role, content, citations_json, created_at) VALUES (?, 'assistant', 'Use <-.', NULL, 1.0)",
                  (chat.id,))
    with LatentStore(db_path) as s:
        assert s.schema_version == len(MIGRATIONS)
        (old,) = s.get_messages(chat.id)
        assert (old.content, old.notes) == ("Use <-.", None)
        s.add_message(chat.id, "assistant", "Port 7431.", notes={"left_out": ["/d/b.pdf"], "raw_segments": 2})
        assert s.get_messages(chat.id)[1].notes == {"left_out": ["/d/b.pdf"], "raw_segments": 2}


def test_refuses_a_foreign_sqlite_file(tmp_path: Path):
    path = tmp_path / "foreign.sqlite"
    with raw(path) as c:
        c.execute("CREATE TABLE something (x)")
    with pytest.raises(StoreError, match="not a latent store"):
        LatentStore(path)


# ------------------------------------------------------------------ maintenance
def test_integrity_check_ok_and_reports_problems(store: LatentStore, db_path: Path):
    index(store, "/d/a.txt", TEXTS)
    assert store.integrity_check() == "ok"
    with raw(db_path) as c:  # damage behind the store's back
        sid, text = c.execute("SELECT id, text FROM segments ORDER BY id LIMIT 1").fetchone()
        c.execute("INSERT INTO segments_fts (segments_fts, rowid, text) VALUES ('delete', ?, ?)", (sid, text))
        c.execute("UPDATE latents SET n = n + 1 WHERE segment_id = ?", (sid + 1,))
        c.execute("UPDATE documents SET n_segments = 7")
    report = store.integrity_check()
    assert "full-text index" in report and "n_segments 7" in report and "bytes for" in report
    store.rebuild_fts()
    assert "full-text index" not in store.integrity_check()


def test_stats(store: LatentStore):
    index(store, "/d/a.txt", TEXTS)
    store.upsert_document("/d/b.txt", status="error", error="no text layer")
    st = store.stats()
    assert st.documents == 2 and st.documents_by_status["indexed"] == 1 and st.documents_by_status["error"] == 1
    assert st.documents_by_status["pending"] == 0
    assert st.segments == 3 and st.latents == 3 and st.latent_bytes == 3 * 3 * 4 * 2
    assert st.text_bytes == sum(len(t.encode()) for t in TEXTS)
    assert st.db_bytes > 0 and st.schema_version == len(MIGRATIONS)


def test_folders(store: LatentStore):
    store.add_folder("/home/u/papers")
    store.add_folder("/home/u/notes")
    assert store.set_folder_enabled("/home/u/notes", False) is True
    assert [f.path for f in store.list_folders()] == ["/home/u/notes", "/home/u/papers"]
    assert [f.path for f in store.list_folders(enabled_only=True)] == ["/home/u/papers"]
    assert store.add_folder("/home/u/notes").enabled is True
    index(store, "/home/u/papers/a.txt", TEXTS)
    assert store.remove_folder("/home/u/papers", delete_documents=True) == 1
    assert store.list_documents() == [] and [f.path for f in store.list_folders()] == ["/home/u/notes"]


# ------------------------------------------------------------------ chats
def test_chats_api(store: LatentStore):
    first = store.create_chat("R questions")
    second = store.create_chat()
    m1 = store.add_message(first.id, "user", "How do I assign?")
    cites = [{"segment_id": 7, "document_id": 1, "page": 2, "path": "/r/R-intro.pdf"}]
    m2 = store.add_message(first.id, "assistant", "Use <-.", cites)
    assert [m.id for m in store.get_messages(first.id)] == [m1.id, m2.id]
    got = store.get_messages(first.id)[1]
    assert (got.role, got.content, got.citations) == ("assistant", "Use <-.", cites)
    assert store.get_messages(first.id)[0].citations is None
    noted = store.add_message(first.id, "assistant", "Port 7431.", notes={"raw_segments": 2})
    assert noted.notes == store.get_messages(first.id)[-1].notes == {"raw_segments": 2}
    assert got.notes is None and store.add_message(first.id, "user", "x", notes={}).notes is None  # nothing noted
    assert [c.id for c in store.list_chats()] == [first.id, second.id]  # most recently active first
    assert store.rename_chat(second.id, "later")
    assert store.list_chats()[0].title == "later"
    with pytest.raises(ValueError):
        store.add_message(first.id, "robot", "x")
    with pytest.raises(NotFound):
        store.add_message(12345, "user", "x")
    assert store.delete_chat(first.id) and not store.delete_chat(first.id)
    assert store.get_messages(first.id) == [] and store.get_chat(first.id) is None
    assert [c.id for c in store.list_chats()] == [second.id]
