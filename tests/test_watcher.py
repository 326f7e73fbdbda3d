"""app.watcher: ignore rules, the reconcile scan, and live watchdog events on real files.

Live tests run a FolderWatcher + Indexer (fake compressor) on a temp folder,
change files, and poll (with timeouts) until the store matches the folder:
every wanted file indexed with exactly the segments a fresh parse gives,
nothing else in the store, no duplicates.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

import data
from app.indexer import Indexer, IndexerConfig
from app.ingest import file_sha256, parse_document
from app.watcher import FolderSync, FolderWatcher, is_hidden, is_temporary, normalize
from latent_store import LatentStore

CFG = IndexerConfig(max_tokens=64)


def wanted_files(folder: Path) -> set[str]:
    return {str(p) for p in FolderSync(None, [folder]).scan(folder)}  # type: ignore[arg-type] - filters only


def store_matches(store: LatentStore, folder: Path, comp) -> bool:
    """True when the store holds exactly the folder's wanted files, each
    indexed with the segments a fresh parse gives and latents for them."""
    docs = store.list_documents()
    files = wanted_files(folder)
    if {d.path for d in docs} != files or any(d.status != "indexed" for d in docs):
        return False
    for d in docs:
        try:
            if d.sha256 != file_sha256(d.path):
                return False
            fresh = [s.text for s in parse_document(d.path, comp.count_tokens, max_tokens=CFG.max_tokens).segments]
        except OSError:
            return False
        segs = store.get_segments(d.id)
        if [s.text for s in segs] != fresh or d.n_segments != len(segs):
            return False
        if any(lat is None for lat in store.get_latents([s.id for s in segs], comp.fingerprint)):
            return False
    return True


def wait_matches(store, folder, comp, watcher: FolderWatcher | None = None, timeout: float = 30) -> None:
    def ok() -> bool:
        return (watcher is None or watcher.quiet()) and store_matches(store, folder, comp)

    try:
        data.wait_for(ok, timeout, interval=0.1, what="the store to match the folder")
    except AssertionError:
        docs = {(Path(d.path).name, d.status, d.error) for d in store.list_documents()}
        raise AssertionError(f"store never matched the folder.\nfiles: {sorted(Path(p).name for p in wanted_files(folder))}"
                             f"\ndocs: {sorted(docs)}") from None
    assert store.integrity_check() == "ok"


class Live:
    """Indexer + watcher on one folder, as `lclm-docs watch` runs them."""

    def __init__(self, store, folder, comp):
        self.comp = comp
        self.indexer = Indexer(store, comp, CFG).start()
        self.sync = FolderSync(store, [folder], enqueue=self.indexer.enqueue)
        self.watcher = FolderWatcher(self.sync, debounce_s=0.2, rescan_s=None).start()

    def close(self):
        self.watcher.stop()
        self.indexer.close()


@pytest.fixture
def live(store, folder):
    lv = Live(store, folder, data.FakeCompressor())
    yield lv
    lv.close()


# ------------------------------------------------------------------ rules
def test_ignore_rules():
    temp = ["~$report.docx", "~$report.docx.txt", "notes.txt~", "a.swp", ".a.txt.swp", "x.part", "y.pdf.crdownload", "z.tmp", "#a.txt#",
            ".~lock.a.txt#"]
    assert all(is_temporary(n) for n in temp)
    assert not any(is_temporary(n) for n in ["notes.txt", "r~d.md", "tmp.txt", "part.pdf"])
    root = Path("/r")
    assert is_hidden(Path("/r/.git/a.txt"), root) and is_hidden(Path("/r/sub/.a.txt"), root)
    assert not is_hidden(Path("/r/sub/a.txt"), root)


def test_paths_are_normalised(tmp_path, folder, monkeypatch):
    (folder / "sub").mkdir()
    assert normalize(folder / "sub" / ".." / "a.txt") == folder / "a.txt"
    link = tmp_path / "link"
    link.symlink_to(folder)
    assert normalize(link / "a.txt") == folder / "a.txt"
    monkeypatch.chdir(folder)
    assert normalize("a.txt") == folder / "a.txt"


# -------------------------------------------------------------- reconcile
def index_now(store, folder, comp) -> None:
    ix = Indexer(store, comp, CFG)
    FolderSync(store, [folder], enqueue=ix.enqueue).reconcile()
    with ix:
        assert ix.wait_idle(30)


def test_reconcile_catches_what_changed_while_off(store, folder, tmp_path):
    comp = data.FakeCompressor()
    for i in range(5):
        (folder / f"d{i}.txt").write_text(data.prose(i))
    (folder / "sub").mkdir()
    (folder / "sub" / "n.md").write_text(data.prose(9))
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "secret.txt").write_text("hidden")
    (folder / "draft.txt.part").write_text("partial download")
    (folder / "setup.exe").write_bytes(b"MZ\x90\x00")  # not a document type (images are, since OCR)
    index_now(store, folder, comp)
    assert store_matches(store, folder, comp)
    moved_id = store.get_document(str(folder / "d1.txt")).id

    # "app off": edit, delete, move, touch, add
    (folder / "d0.txt").write_text(data.prose(100))
    (folder / "d2.txt").unlink()
    (folder / "sub" / "n.md").rename(folder / "n-renamed.md")
    shutil.move(folder / "d1.txt", folder / "sub" / "d1-moved.txt")  # same content elsewhere
    mt = time.time() + 10
    os.utime(folder / "d3.txt", (mt, mt))  # touched, not changed
    (folder / "new.rst").write_text(data.prose(200))
    comp.encoded.clear()

    sync = FolderSync(store, [folder])
    report = sync.reconcile()
    assert (report.added, report.changed, report.moved, report.deleted, report.touched) == (1, 1, 2, 1, 1), report
    assert store.get_document(str(folder / "sub" / "d1-moved.txt")).id == moved_id  # moved: same row, latents kept
    index_now(store, folder, comp)
    assert store_matches(store, folder, comp)
    # only the edited and the new file were encoded
    assert set(comp.encoded) <= {s.text for f in ("d0.txt", "new.rst")
                                 for s in parse_document(folder / f, comp.count_tokens, max_tokens=64).segments}


# ------------------------------------------------------------------- live
def test_live_create_edit_delete(store, folder, live):
    a, b = folder / "a.txt", folder / "b.md"
    a.write_text(data.prose(1))
    b.write_text(data.prose(2))
    wait_matches(store, folder, live.comp, live.watcher)

    a.write_text(data.prose(1) + "\nOne more paragraph, appended by an edit.\n")
    wait_matches(store, folder, live.comp, live.watcher)
    assert any("appended by an edit" in s.text for s in store.get_segments(store.get_document(str(a)).id))

    b.unlink()
    wait_matches(store, folder, live.comp, live.watcher)
    assert store.get_document(str(b)) is None


def test_live_rename_keeps_latents_and_ignores_temporary_files(store, folder, live):
    a = folder / "a.txt"
    a.write_text(data.prose(3, paragraphs=4))
    wait_matches(store, folder, live.comp, live.watcher)
    doc = store.get_document(str(a))
    seg_ids = [s.id for s in store.get_segments(doc.id)]
    live.comp.encoded.clear()

    a.rename(folder / "renamed.txt")
    (folder / "sub").mkdir()
    (folder / "renamed.txt").rename(folder / "sub" / "final.txt")
    (folder / "~$lock.txt").write_text("office lock file")
    (folder / "notes.txt.swp").write_text("vim swap")
    (folder / ".hidden.txt").write_text("dot file")
    (folder / "dl.pdf.crdownload").write_bytes(b"%PDF partial")
    wait_matches(store, folder, live.comp, live.watcher)
    moved = store.get_document(str(folder / "sub" / "final.txt"))
    assert moved.id == doc.id and [s.id for s in store.get_segments(moved.id)] == seg_ids
    assert live.comp.encoded == []  # nothing re-encoded

    # a folder rename moves every document under it
    (folder / "sub").rename(folder / "sub2")
    wait_matches(store, folder, live.comp, live.watcher)
    assert store.get_document(str(folder / "sub2" / "final.txt")).id == doc.id
    assert live.comp.encoded == []


def test_live_atomic_save_via_temp_file(store, folder, live):
    """Editors save by writing a temp file and renaming it over the original."""
    a = folder / "a.txt"
    a.write_text(data.prose(4))
    wait_matches(store, folder, live.comp, live.watcher)
    tmp = folder / "a.txt.tmp"
    tmp.write_text("Saved atomically by an editor.\n")
    os.replace(tmp, a)
    wait_matches(store, folder, live.comp, live.watcher)
    assert [s.text for s in store.get_segments(store.get_document(str(a)).id)] == ["Saved atomically by an editor."]


def test_live_200_files_at_once(store, folder, live):
    for i in range(200):
        (folder / f"f{i:03d}.txt").write_text(data.prose(1000 + i, paragraphs=1, sentences=2))
    wait_matches(store, folder, live.comp, live.watcher, timeout=60)
    docs = store.list_documents()
    assert len(docs) == 200 and len({d.path for d in docs}) == 200
    n_segments = sum(len(store.get_segments(d.id)) for d in docs)
    assert n_segments == sum(d.n_segments for d in docs)
    # and removing them all empties the store
    for p in folder.iterdir():
        p.unlink()
    wait_matches(store, folder, live.comp, live.watcher, timeout=60)
    assert store.list_documents() == [] and store.stats().segments == 0


def test_multiple_folders_and_restart(store, tmp_path):
    a, b = tmp_path / "A", tmp_path / "B"
    a.mkdir()
    b.mkdir()
    comp = data.FakeCompressor()
    ix = Indexer(store, comp, CFG).start()
    sync = FolderSync(store, [a, b], enqueue=ix.enqueue)
    w = FolderWatcher(sync, debounce_s=0.2, rescan_s=None).start()
    try:
        (a / "x.txt").write_text(data.prose(1))
        (b / "y.txt").write_text(data.prose(2))
        data.wait_for(lambda: {Path(d.path).name: d.status for d in store.list_documents()} == {
            "x.txt": "indexed", "y.txt": "indexed"}, 30, what="both folders indexed")
        assert store.get_document(str((a / "x.txt").resolve())).folder == str(a.resolve())
        # cross-folder move keeps the row
        x_id = store.get_document(str((a / "x.txt").resolve())).id
        (a / "x.txt").rename(b / "x.txt")
        data.wait_for(lambda: store.get_document(str((b / "x.txt").resolve())) is not None, 30, what="the move")
        assert store.get_document(str((b / "x.txt").resolve())).id == x_id
    finally:
        w.stop()
        ix.close()
    # while off: a change; the restart's reconcile catches it
    (b / "y.txt").write_text(data.prose(3))
    lv = Live(store, b, comp)
    try:
        wait_matches(store, b.resolve(), comp, lv.watcher)
    finally:
        lv.close()
