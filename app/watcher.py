"""Keeping the store in step with folders on disk.

``FolderSync`` is the state-based half: given a path, it looks at what is on
disk *now* and makes the store agree (new or edited file -> a 'pending' row
queued for the indexer; vanished file -> row deleted; unchanged -> nothing).
Because it never trusts the order or completeness of file events, the same
code serves the start-up reconcile scan (what changed while the app was off),
``lclm-docs index`` and the watcher.

``FolderWatcher`` is the event half: watchdog observers on several folders;
events only mark paths dirty, and a flusher thread syncs each path once its
events have been quiet for ``debounce_s`` (an editor's save or a download is
a burst of events; the file is read once, when it is done). Moves are the
exception: they are applied at once with ``store.move_document``, so a moved
or renamed file keeps its segments and latents.

Paths are normalised (absolute, symlinks resolved) before they become keys.
Temporary files (``~$x``, ``x~``, ``.swp``, ``.part``, ``.crdownload``,
``.tmp``, ...) and hidden files and folders are ignored.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import FileSystemEventHandler
from watchdog.observers import Observer

from latent_store import Document, LatentStore

from .ingest import file_sha256, file_type

log = logging.getLogger(__name__)

TEMP_SUFFIXES = frozenset({
    ".swp", ".swo", ".swx", ".swn", ".part", ".partial", ".crdownload", ".download", ".tmp", ".temp", ".bak",
    ".kate-swp", ".lock", ".!ut", ".opdownload",
})


def normalize(path: str | os.PathLike[str]) -> Path:
    """Absolute, ``~`` expanded, symlinks and ``..`` resolved: one key per file."""
    return Path(path).expanduser().resolve()


def is_temporary(name: str) -> bool:
    """Office lock files, editor swap/backup files, partial downloads."""
    if name.startswith("~$") or name.startswith(".~lock.") or name.endswith("~"):
        return True
    if name.startswith("#") and name.endswith("#"):  # emacs auto-save
        return True
    return os.path.splitext(name)[1].lower() in TEMP_SUFFIXES


#: Folders of other people's code that a project folder carries: indexing them would bury the user's own
#: files under thousands of dependencies. A Python virtual environment is known by its pyvenv.cfg.
VENDORED_DIRS = frozenset({"node_modules", "bower_components", "__pycache__", "site-packages", "dist-packages"})


def is_vendored_dir(d: Path) -> bool:
    """A dependency folder (``VENDORED_DIRS``) or a virtual environment."""
    return d.name in VENDORED_DIRS or (d / "pyvenv.cfg").is_file()


def is_vendored(path: Path, root: Path) -> bool:
    """Under a dependency folder or a virtual environment, below ``root``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    d = root
    for part in rel.parts[:-1]:
        d = d / part
        if is_vendored_dir(d):
            return True
    return False


def is_hidden(path: Path, root: Path) -> bool:
    """A dot-file, or anything under a dot-folder, below ``root``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        return False
    return any(part.startswith(".") for part in rel.parts)


@dataclass
class SyncReport:
    """What a reconcile scan changed (counts), for logs and the CLI."""

    added: int = 0
    changed: int = 0
    touched: int = 0  # size/mtime changed, content not: no re-indexing
    unchanged: int = 0
    deleted: int = 0
    moved: int = 0
    queued: list[int] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.added} new, {self.changed} changed, {self.moved} moved, {self.deleted} deleted, "
                f"{self.unchanged + self.touched} unchanged")


class FolderSync:
    """Makes the store's rows for files under ``roots`` agree with the disk.

    ``enqueue`` receives the ids of documents that need (re)indexing.
    Thread-safe: the watcher's event thread and flusher call it concurrently.
    """

    def __init__(self, store: LatentStore, roots: Iterable[str | os.PathLike[str]],
                 enqueue: Callable[[list[int]], object] = lambda ids: None) -> None:
        self.store = store
        self.roots: list[Path] = sorted({normalize(r) for r in roots}, key=lambda p: len(p.parts), reverse=True)
        self.enqueue = enqueue
        self._lock = threading.RLock()

    # ------------------------------------------------------------- helpers
    def root_of(self, path: Path) -> Path | None:
        """The innermost watched root that holds ``path`` (nested roots: the deepest wins)."""
        for root in self.roots:  # deepest first
            if path == root or root in path.parents:
                return root
        return None

    def wanted(self, path: Path, *, walked: bool = False) -> bool:
        """``walked``: ``scan`` found it, having pruned dependency folders on the way (no stat per ancestor)."""
        root = self.root_of(path)
        return (root is not None and path != root and file_type(path) is not None
                and not is_temporary(path.name) and not is_hidden(path, root)
                and (walked or not is_vendored(path, root))
                and not (self.store is not None and self.store.is_excluded(str(path))))  # taken out by the user

    def scan(self, root: Path) -> Iterator[Path]:
        """Wanted files under root (hidden and dependency folders pruned, symlinks not followed)."""
        for dirpath, dirnames, filenames in os.walk(root, onerror=lambda e: log.warning("cannot scan %s: %s", e.filename, e)):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                                 and not is_vendored_dir(Path(dirpath) / d))
            for name in sorted(filenames):
                p = Path(dirpath) / name
                if not p.is_symlink() and self.wanted(p, walked=True):
                    yield p

    def documents_under(self, directory: Path) -> list[Document]:
        prefix = str(directory).rstrip(os.sep) + os.sep
        return [d for d in self.store.list_documents() if d.path.startswith(prefix)]

    # ---------------------------------------------------------------- sync
    def sync_file(self, path: str | os.PathLike[str], report: SyncReport | None = None) -> Document | None:
        """Make the store agree with the file at ``path`` now; returns its row (None if gone or unwanted)."""
        p = normalize(path)
        report = report if report is not None else SyncReport()
        with self._lock:
            doc = self.store.get_document(str(p))
            try:
                st = p.stat() if self.wanted(p) and p.is_file() and not p.is_symlink() else None
            except OSError:
                st = None
            if st is None:
                if doc is not None and self.store.delete_document(doc.id):
                    log.info("removed %s from the index", p)
                    report.deleted += 1
                return None
            folder = self._folder_for(p, doc)
            if doc is not None and doc.size == st.st_size and doc.mtime == st.st_mtime:
                if doc.status == "pending":  # queued before a crash or a cancel
                    self._queue(doc, report)
                report.unchanged += 1
                return doc
            if doc is not None and doc.sha256 and doc.size == st.st_size:
                try:
                    same = file_sha256(p) == doc.sha256
                except OSError:
                    same = False
                if same:  # touched, restored from a backup, copied over itself: keep the index
                    report.touched += 1
                    return self.store.upsert_document(str(p), folder=folder, size=st.st_size, mtime=st.st_mtime,
                                                      status=doc.status, error=doc.error)
            new = self.store.upsert_document(str(p), folder=folder, size=st.st_size, mtime=st.st_mtime,
                                             type=file_type(p))
            if doc is None:
                report.added += 1
                log.debug("new file %s", p)
            else:
                report.changed += 1
                log.debug("changed file %s", p)
            self._queue(new, report)
            return new

    def _folder_for(self, p: Path, doc: Document | None) -> str | None:
        """The folder a row belongs to: kept if it still holds the file (a file
        named on the command line inside a watched folder stays that folder's),
        else the innermost root."""
        if doc is not None and doc.folder and Path(doc.folder) in p.parents:
            return doc.folder
        root = self.root_of(p)
        return str(root) if root else None

    def _queue(self, doc: Document, report: SyncReport) -> None:
        report.queued.append(doc.id)
        self.enqueue([doc.id])

    def move(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> bool:
        """A rename seen by the watcher: the row follows the file (latents
        kept). Returns True if a row moved.

        Only the row moves here; the caller syncs both paths afterwards
        (debounced): the file may already have moved on again, moving out of
        the folders (or to a temporary/hidden name) is a delete, and moving in
        from outside (or from a temporary name, as editors save) is a new or
        changed file.
        """
        s, d = normalize(src), normalize(dst)
        with self._lock:
            if not (self.wanted(d) and self.store.get_document(str(s)) is not None):
                return False
            root = self.root_of(d)
            self.store.move_document(str(s), str(d), folder=str(root) if root else None)
        log.info("moved %s -> %s (latents kept)", s, d)
        return True

    def move_tree(self, src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> int:
        """A folder renamed: every row below it follows. Returns rows moved."""
        s, d = normalize(src), normalize(dst)
        n = 0
        with self._lock:
            for doc in self.documents_under(s):
                new = d / Path(doc.path).relative_to(s)
                if self.wanted(new):
                    root = self.root_of(new)
                    self.store.move_document(doc.path, str(new), folder=str(root) if root else None)
                    n += 1
                else:
                    self.store.delete_document(doc.id)
        if n:
            log.info("moved %d documents with folder %s -> %s", n, s, d)
        return n

    def sync_paths(self, paths: Iterable[str | os.PathLike[str]], report: SyncReport | None = None) -> SyncReport:
        """Sync many paths at once; a new file with the size and sha256 of a
        row whose file is gone is that row, moved (latents kept).

        Why: a move is not always seen as one event. Moved while the app was
        off, moved into a folder created a moment before (inotify had no
        watch on it yet), moved between two watched folders, or by a tool
        that copies then deletes: it arrives as "one file new, one file gone",
        in either order. Re-encoding it would cost minutes of a laptop's CPU
        per book.
        """
        report = report if report is not None else SyncReport()
        with self._lock:
            targets = list(dict.fromkeys(normalize(p) for p in paths))
            new: list[tuple[Path, int]] = []
            for p in targets:
                if self.wanted(p) and p.is_file() and not p.is_symlink() and self.store.get_document(str(p)) is None:
                    try:
                        new.append((p, p.stat().st_size))
                    except OSError:
                        pass
            log.debug("sync %d path(s), %d new", len(targets), len(new))
            if new:
                sizes = {size for _, size in new}
                gone = {(d.size, d.sha256): d for d in self.store.list_documents()
                        if d.size in sizes and d.sha256 and not os.path.exists(d.path)}
                for p, size in new:
                    old = self._same_content(p, size, gone) if gone else None
                    if old is not None:
                        root = self.root_of(p)
                        self.store.move_document(old.path, str(p), folder=str(root) if root else None)
                        log.info("moved %s -> %s (latents kept)", old.path, p)
                        report.moved += 1
            for p in targets:
                self.sync_file(p, report)
        return report

    def reconcile(self, root: str | os.PathLike[str] | None = None) -> SyncReport:
        """Scan a root (or all of them) and make the store match it: new and
        edited files queued, vanished ones deleted, moved ones moved."""
        report = SyncReport()
        roots = [normalize(root)] if root is not None else list(self.roots)
        for r in roots:
            with self._lock:
                known = [d.path for d in self.documents_under(r) if self.root_of(Path(d.path)) == r]
                on_disk = [str(p) for p in self.scan(r)] if r.is_dir() else []
                self.sync_paths(on_disk + known, report)
            log.info("reconciled %s: %s", r, report)
        return report

    @staticmethod
    def _same_content(p: Path, size: int, gone: dict[tuple[int | None, str | None], Document]) -> Document | None:
        """The vanished row with this file's size and sha256, if any (popped)."""
        if not any(k[0] == size for k in gone):
            return None
        try:
            return gone.pop((size, file_sha256(p)), None)
        except OSError:
            return None


class FolderWatcher:
    """watchdog observers on the roots of a ``FolderSync``, debounced.

    ``start()`` schedules the observers first and then runs the reconcile
    scan, so nothing that changes during the scan is missed. ``rescan_s``
    (default 10 minutes, None to disable) re-runs the scan periodically as a
    safety net for events the OS dropped (inotify queue overflow, network
    file systems that send none).
    """

    def __init__(self, sync: FolderSync, *, debounce_s: float = 0.5, max_delay_s: float = 10.0,
                 rescan_s: float | None = 600.0, reconcile_on_start: bool = True) -> None:
        self.sync = sync
        self.debounce_s = debounce_s
        self.max_delay_s = max_delay_s
        self.rescan_s = rescan_s
        self.reconcile_on_start = reconcile_on_start
        self._cond = threading.Condition()
        # path -> (first event, last event, is a folder)
        self._dirty: dict[Path, tuple[float, float, bool]] = {}
        self._syncing = False
        self._stop = False
        self._observer = None
        self._flusher: threading.Thread | None = None
        self._last_scan = 0.0

    # ----------------------------------------------------------- lifecycle
    def start(self) -> "FolderWatcher":
        observer = Observer()
        handler = _Handler(self)
        for root in self.sync.roots:
            if not root.is_dir():
                log.warning("not watching %s: not a folder", root)
                continue
            observer.schedule(handler, str(root), recursive=True)
        observer.start()
        self._observer = observer
        self._flusher = threading.Thread(target=self._flush_loop, name="lclm-watcher", daemon=True)
        self._flusher.start()
        if self.reconcile_on_start:
            self.sync.reconcile()
        self._last_scan = time.monotonic()
        log.info("watching %s", ", ".join(map(str, self.sync.roots)) or "no folders yet")
        return self

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
            self._observer = None
        if self._flusher is not None:
            self._flusher.join(timeout)
            self._flusher = None

    def __enter__(self) -> "FolderWatcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def quiet(self) -> bool:
        """True when no event is waiting for its debounce (tests poll this)."""
        with self._cond:
            return not self._dirty and not self._syncing

    # -------------------------------------------------------------- events
    def mark(self, path: str | os.PathLike[str], is_dir: bool = False) -> None:
        """Something happened at ``path``: sync it once its events are quiet."""
        p = normalize(path)
        now = time.monotonic()
        with self._cond:
            first, _, was_dir = self._dirty.get(p, (now, now, False))
            self._dirty[p] = (first, now, is_dir or was_dir)
            self._cond.notify_all()

    def mark_dir(self, path: str | os.PathLike[str]) -> None:
        """A folder appeared, vanished or moved: everything under it gets synced."""
        self.mark(path, is_dir=True)

    def moved(self, src: str, dst: str, is_directory: bool) -> None:
        try:
            if is_directory:
                self.sync.move_tree(src, dst)
                self.mark_dir(dst)  # anything else that arrived with it
                self.mark_dir(src)
            else:
                self.sync.move(src, dst)
                self.mark(src)
                self.mark(dst)
        except Exception:  # noqa: BLE001 - a failed move must not kill the observer thread
            log.exception("handling the move %s -> %s failed; rescanning both", src, dst)
            self.mark(src)
            self.mark(dst)

    # ------------------------------------------------------------- flusher
    def _due(self, now: float) -> tuple[list[Path], float | None]:
        """Paths to sync now, and when the next will be due.

        All dirty paths are due together once *no* event has arrived for
        debounce_s (a burst, e.g. a folder copied in, is synced as one batch,
        so the two halves of a move pair up); a path dirty for max_delay_s is
        due regardless, so a file written without pause cannot starve the rest.
        """
        if not self._dirty:
            return [], None
        quiet_at = max(last for _, last, _ in self._dirty.values()) + self.debounce_s
        if quiet_at <= now:
            return list(self._dirty), None
        due = [p for p, (first, _, _) in self._dirty.items() if first + self.max_delay_s <= now]
        oldest = min(first for first, _, _ in self._dirty.values()) + self.max_delay_s
        return due, min(quiet_at, oldest)

    def _flush_loop(self) -> None:
        while True:
            with self._cond:
                if self._stop:
                    return
                now = time.monotonic()
                due, nxt = self._due(now)
                batch = [(p, self._dirty.pop(p)[2]) for p in due]
                if not batch:
                    wait = None if nxt is None else nxt - now
                    if self.rescan_s:
                        until_scan = self._last_scan + self.rescan_s - now
                        wait = until_scan if wait is None else min(wait, until_scan)
                    if wait is None or wait > 0:
                        self._cond.wait(wait)
                        continue
                self._syncing = True
            try:
                # one batch, so a "gone" and a "new" that are one move pair up
                paths: list[Path] = []
                for p, is_dir in batch:
                    paths += self._expand_dir(p) if is_dir else [p]
                if paths:
                    self.sync.sync_paths(paths)
                if self.rescan_s and time.monotonic() - self._last_scan >= self.rescan_s:
                    self._last_scan = time.monotonic()
                    self.sync.reconcile()
            except Exception:  # noqa: BLE001 - keep watching whatever one file did
                log.exception("syncing changed files failed")
            finally:
                with self._cond:
                    self._syncing = False

    def _expand_dir(self, d: Path) -> list[Path]:
        """Everything known or present under a folder that appeared, vanished or moved."""
        paths = [Path(doc.path) for doc in self.sync.documents_under(d)]
        root = self.sync.root_of(d)
        if root is not None and d.is_dir() and not is_hidden(d, root):
            paths += list(self.sync.scan(d))
        return paths


class _Handler(FileSystemEventHandler):
    """Translates watchdog events into marks; never touches the store itself
    except for moves (which must be applied in order)."""

    def __init__(self, watcher: FolderWatcher) -> None:
        super().__init__()
        self.w = watcher

    def on_any_event(self, event) -> None:  # noqa: ANN001 - watchdog's event type
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        src = os.fsdecode(event.src_path)
        if kind == "moved":
            self.w.moved(src, os.fsdecode(event.dest_path), event.is_directory)
        elif event.is_directory:
            if kind in ("created", "deleted"):
                self.w.mark_dir(src)
        else:
            self.w.mark(src)
