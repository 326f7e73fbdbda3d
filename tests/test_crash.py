"""Crash safety: kill -9 an indexer process in the middle of a folder.

Afterwards ``PRAGMA integrity_check`` is ok, no half-indexed document is
visible (a document is 'indexed' with all its segments and latents, or has
no segments at all), and a restarted indexer finishes the job with the same
result a clean run gives.

The indexer runs in a subprocess: this file, run as a script, is the worker.
It uses the fake compressor (latents of a real size, 256 wide, without
torch's start-up cost), slowed down so the kill lands mid-folder; what is
tested is the store's atomicity under the indexer's write pattern, which
does not depend on how the latents were computed.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_FILES = 24


def worker(db: str, folder: str, delay: float) -> int:
    """Index a folder to completion (the crash test's subprocess)."""
    import logging

    import data
    from app.indexer import Indexer, IndexerConfig
    from app.watcher import FolderSync
    from latent_store import LatentStore

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    comp = data.FakeCompressor(dim=256, delay=delay)
    with LatentStore(db) as store:
        ix = Indexer(store, comp, IndexerConfig(max_tokens=48, batch_segments=2))
        FolderSync(store, [folder], enqueue=ix.enqueue).reconcile()
        ix.enqueue_needing_work()
        with ix:
            ix.wait_idle()
        print("worker done", flush=True)
    return 0


def spawn(db: Path, folder: Path, delay: float) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.Popen([sys.executable, __file__, str(db), str(folder), str(delay)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def indexed_count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as c:
            return c.execute("SELECT COUNT(*) FROM documents WHERE status = 'indexed'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0  # not created yet


def check_no_half_indexed(db: Path, fingerprint: str | None = None) -> dict[str, int]:
    from latent_store import LatentStore

    with LatentStore(db) as store:
        assert store.integrity_check() == "ok"
        by_status: dict[str, int] = {}
        for d in store.list_documents():
            by_status[d.status] = by_status.get(d.status, 0) + 1
            segs = store.get_segments(d.id)
            assert len(segs) == d.n_segments
            if d.status == "indexed":
                assert segs and d.sha256
                fps = {fp for fp in store.stats().latents_by_fingerprint}
                for fp in fps if fingerprint is None else [fingerprint]:
                    assert all(lat is not None for lat in store.get_latents([s.id for s in segs], fp))
            else:
                assert d.status in ("pending", "indexing") and segs == [], (d.path, d.status, len(segs))
    with sqlite3.connect(db) as c:
        assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert c.execute("PRAGMA foreign_key_check").fetchall() == []
    return by_status


def test_kill_9_mid_folder_then_restart_finishes(tmp_path):
    import data
    from app.ingest import parse_document

    folder = (tmp_path / "docs").resolve()
    folder.mkdir()
    for i in range(N_FILES):
        (folder / f"d{i:02d}.txt").write_text(data.prose(i, paragraphs=4, sentences=3))
    db = tmp_path / "store.sqlite"

    proc = spawn(db, folder, delay=0.1)
    try:
        data.wait_for(lambda: indexed_count(db) >= 3 or proc.poll() is not None, 120, what="3 documents indexed")
        assert proc.poll() is None, "worker finished before it could be killed:\n" + proc.stdout.read()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    by_status = check_no_half_indexed(db)
    assert 3 <= by_status.get("indexed", 0) < N_FILES, by_status
    assert sum(by_status.values()) == N_FILES

    proc = spawn(db, folder, delay=0)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out
    assert "worker done" in out
    assert check_no_half_indexed(db) == {"indexed": N_FILES}

    # the result equals a fresh parse of every file (no duplicates, nothing lost)
    from latent_store import LatentStore

    comp = data.FakeCompressor(dim=256)
    with LatentStore(db) as store:
        assert store.stats().latents_by_fingerprint == {comp.fingerprint: store.stats().segments}
        for d in store.list_documents():
            fresh = parse_document(d.path, comp.count_tokens, max_tokens=48).segments
            assert [s.text for s in store.get_segments(d.id)] == [s.text for s in fresh]


def test_kill_9_at_random_moments_of_a_writing_indexer(tmp_path):
    """A few ms per encoder batch: the worker spends much of its time committing documents, so the
    kills land inside write transactions too. After every kill the store is sound, nothing half done."""
    import random

    import data

    folder = (tmp_path / "docs").resolve()
    folder.mkdir()
    for i in range(N_FILES * 4):
        (folder / f"d{i:03d}.txt").write_text(data.prose(i, paragraphs=6, sentences=4))
    db = tmp_path / "store.sqlite"
    rnd = random.Random(7)
    kills = 0
    for _ in range(6):
        proc = spawn(db, folder, delay=0.005)
        try:
            data.wait_for(lambda: db.exists() or proc.poll() is not None, 60, what="the store created")
            proc_wait = rnd.uniform(0.5, 2.5)  # after the interpreter's start-up, somewhere in the folder
            try:
                proc.wait(proc_wait)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(30)
                kills += 1
        finally:
            if proc.poll() is None:
                proc.kill()
        check_no_half_indexed(db)
        if indexed_count(db) == N_FILES * 4:
            break
    assert kills >= 2, "the worker finished before it could be killed twice"
    proc = spawn(db, folder, delay=0)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert check_no_half_indexed(db) == {"indexed": N_FILES * 4}


if __name__ == "__main__":
    sys.exit(worker(sys.argv[1], sys.argv[2], float(sys.argv[3])))
