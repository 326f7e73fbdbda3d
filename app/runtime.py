"""The long-lived application behind the chat UI.

One :class:`Runtime` per process owns the store, the models, the indexing
service (indexer + folder watcher) and the assistant, and is the only thing
the UI calls. Why one object: the UI is served by many threads (one per
request), but the store connection, the decoder's cached documents prefix
and the indexer each want exactly one owner. The runtime serialises what
must be serial (answers share one decoder and its KV cache) and lets the
rest run concurrently: the indexer keeps going between answers, and holds
off (between encoder batches) while one is generated, so a question asked
during a big import is answered at nearly idle speed. When the indexer goes
idle, a background thread prefills the library's documents block
(``Assistant.warm``), so the first question is as quick as the next ones.

Chats are kept in the store (``chats``/``messages`` tables); an answer's
citations are stored as data with it, so a chat reopened tomorrow still
shows its passages and can still expand them.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from latent_store import Chat, Document, LatentStore, Message, NotFound, SearchHit, Segment

from .assistant import Answer, Assistant, AssistantConfig, AssistantError, Citation, Scope, place
from .export import chat_markdown
from .indexer import IndexerConfig, Progress
from .ingest import IngestError, IngestLimits, read_pages
from .services import IndexingService, Models, ServiceError, load_models, open_store, path_under
from .settings import Settings
from .watcher import normalize

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _pages_of(path: str, kind: str, mtime_ns: int, size: int) -> tuple[tuple[int | None, str], ...]:
    """A file's pages as the index reads them, kept for the few documents viewed last: each "view" of a
    citation used to parse the file again, and an image's parse is an OCR run of seconds. The file's mtime and
    size are part of the key, so an edited file is read afresh; a parse that fails is not kept."""
    _, pages = read_pages(Path(path), kind, IngestLimits())
    return tuple((p.number, p.text) for p in pages)

#: what the settings panel may change per question
ASK_FIELDS = ("mode", "expand_k", "expand_tokens")


@dataclass(frozen=True)
class IndexingStatus:
    """What the library panel shows: the current run and the store's counts."""

    active: bool
    docs_done: int
    docs_total: int
    docs_failed: int
    tokens_per_s: float | None
    eta_s: float | None
    current: str | None
    by_status: dict[str, int]
    problem: str | None = None  # why indexing stopped (disk full, read-only)
    warming: bool = False  # the documents block is being prefilled (Runtime._warm_loop): a question now waits for it

    def line(self) -> str:
        counts = ", ".join(f"{n} {s}" for s, n in self.by_status.items() if n) or "no documents yet"
        if self.problem:
            return f"Indexing stopped: {self.problem}. Library: {counts}."
        if not self.active:
            ahead = " Reading the documents ahead of the next question." if self.warming else ""
            return f"Idle.{ahead} Library: {counts}."
        rate = f"{self.tokens_per_s:,.0f} tokens/s" if self.tokens_per_s else "measuring speed"
        eta = f"about {_duration(self.eta_s)} left" if self.eta_s is not None else "time left unknown yet"
        now = f" Now: {Path(self.current).name}." if self.current else ""
        return (f"Indexing {self.docs_done}/{self.docs_total} documents ({self.docs_failed} failed), {rate}, "
                f"{eta}.{now} Library: {counts}.")


def _duration(s: float) -> str:
    s = max(0, int(round(s)))
    if s < 90:
        return f"{s} s"
    if s < 5400:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


@dataclass
class Reply:
    """The end of an answer's stream: what was stored, and the answer itself."""

    chat_id: int
    message_id: int
    answer: Answer
    notes: dict = field(default_factory=dict)  # as stored with the message (the answer's, and how it was asked)


@dataclass
class Runtime:
    """Store, models, indexing and assistant for one UI process. ``start()``, then the methods, then ``close()``."""

    settings: Settings
    ask_config: AssistantConfig = field(default_factory=AssistantConfig)
    indexer_config: IndexerConfig | None = None
    debounce_s: float = 0.5
    rescan_s: float | None = 600.0
    warm_up: bool = True  # prefill the documents block whenever the indexer goes idle (Assistant.warm)

    store: LatentStore | None = field(default=None, init=False)
    models: Models | None = field(default=None, init=False)
    indexing: IndexingService | None = field(default=None, init=False)
    _assistant: Assistant | None = field(default=None, init=False, repr=False)
    _progress: Progress | None = field(default=None, init=False, repr=False)
    _answer_lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _config_lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _warm_wanted: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _closing: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _warm_thread: threading.Thread | None = field(default=None, init=False, repr=False)
    warmed: int = field(default=0, init=False)  # positions of the block warmed last (status and tests)
    _warming: bool = field(default=False, init=False, repr=False)

    # ------------------------------------------------------------ lifecycle
    def start(self, folders: Iterable[str | os.PathLike[str]] = ()) -> "Runtime":
        """Open the store, load the models, watch the store's folders and ``folders``."""
        self.store = open_store(self.settings)
        try:
            self.models = load_models(self.settings)
            self._start_indexing(list(folders))
        except BaseException:
            self.store.close()
            raise
        if self.warm_up:
            self._warm_thread = threading.Thread(target=self._warm_loop, name="warm-up", daemon=True)
            self._warm_thread.start()
            self._warm_wanted.set()
        return self

    def _start_indexing(self, extra: list[str | os.PathLike[str]]) -> None:
        assert self.store is not None and self.models is not None
        known = [f.path for f in self.store.list_folders(enabled_only=True)]
        gone = [p for p in known if not Path(p).is_dir()]
        for p in gone:
            log.warning("watched folder %s is missing (unplugged or moved?); it stays listed but is not scanned", p)
        paths = list(dict.fromkeys([*[p for p in known if p not in gone], *map(str, extra)]))
        self.indexing = IndexingService.create(
            self.store, self.models.compressor, paths, config=self.indexer_config, callbacks=[self._on_progress],
            watch=True, debounce_s=self.debounce_s, rescan_s=self.rescan_s)
        self.indexing.start()

    def close(self) -> None:
        self._closing.set()
        self._warm_wanted.set()
        if self._warm_thread is not None:
            self._warm_thread.join()  # a prefill in progress ends first: seconds, as for an answer
            self._warm_thread = None
        with self._config_lock:
            if self.indexing is not None:
                self.indexing.close()
                self.indexing = None
            with self._answer_lock:
                if self._assistant is not None:
                    self._assistant.close()
                    self._assistant = None
            if self.store is not None:
                self.store.close()
                self.store = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_progress(self, p: Progress) -> None:  # indexer thread: keep it quick
        self._progress = p
        if p.idle:
            self._warm_wanted.set()

    def _warm_loop(self) -> None:
        """Whenever asked (start, indexer idle, new settings): wait for the indexer to settle, then warm the
        documents block of the whole library, the scope a question has unless the user narrows it."""
        while True:
            self._warm_wanted.wait()
            self._warm_wanted.clear()
            if self._closing.is_set():
                return
            try:
                while not self._indexing.indexer.wait_idle(0.5):
                    if self._closing.is_set():
                        return
                with self._answering() as assistant:
                    if self._closing.is_set():
                        return
                    self._warming = True
                    try:
                        self.warmed = assistant.warm() or self.warmed
                    finally:
                        self._warming = False
            except Exception as e:  # noqa: BLE001 - a warm-up is an optimisation: the question reports errors
                log.warning("warming the documents block failed: %s", e)

    # -------------------------------------------------------------- library
    def folders(self) -> list[str]:
        return [f.path for f in self._store.list_folders()]

    def add_folder(self, path: str) -> str:
        """Watch a folder; returns what to tell the user. Raises ServiceError for a bad path."""
        raw = (path or "").strip()
        if not raw:
            raise ServiceError("type the path of a folder first")
        p = normalize(os.path.expanduser(raw))
        if not p.is_dir():
            raise ServiceError(f"{raw}: no such folder on this computer")
        if str(p) in self.folders():
            return f"{p} is already in the library"
        self._indexing.add_folder(p)
        return f"added {p}: its documents are being indexed"

    def remove_folder(self, path: str) -> str:
        if not path:
            raise ServiceError("choose a folder to remove")
        n = self._indexing.remove_folder(path, forget=True)
        return f"removed {path} from the library ({n} document(s) forgotten; the files are untouched)"

    def documents(self) -> list[Document]:
        return self._store.list_documents()

    def reindex(self, document_id: int | None = None) -> str:
        n = self._indexing.reindex(None if document_id is None else [int(document_id)])
        return f"{n} document(s) queued for indexing"

    def exclude_document(self, document_id: int) -> str:
        """Take a document out of the library (its latents go; the file stays, and the watcher leaves it alone)."""
        doc = self._store.get_document(int(document_id))
        if doc is None:
            raise NotFound(f"no document {document_id} in the library")
        self._store.exclude(doc.path)
        return f"{Path(doc.path).name} is out of the library (the file is untouched; include it again below)"

    def excluded(self) -> list[str]:
        return self._store.excluded_paths()

    def include(self, path: str) -> str:
        """Put an excluded file back: it is indexed again."""
        if not path or not self._store.include(path):
            raise ServiceError("choose an excluded file to include again")
        doc = self._indexing.sync.sync_file(path)
        if doc is None:
            return f"{Path(path).name} is no longer excluded, but it is not in a watched folder (or no longer exists)"
        return f"{Path(path).name} is back in the library and queued for indexing"

    def search(self, query: str, *, limit: int = 10, scope: Scope | None = None) -> list[tuple[SearchHit, str]]:
        """Passages holding any of the query's words, best (bm25) first, each with its whole text."""
        ids = [d.id for d in scope.documents(self._store)] if scope else None
        hits = self._store.search(query, document_ids=ids, limit=max(1, min(int(limit), 100)), mode="any")
        texts = {s.id: s.text for s in self._store.get_segments_by_id([h.segment_id for h in hits])}
        return [(h, texts.get(h.segment_id, "")) for h in hits]

    def status(self) -> IndexingStatus:
        by = self._store.documents_by_status()
        ix = self._indexing.indexer
        p, pending = self._progress, ix.pending()
        active = pending > 0
        if p is None or not active:
            return IndexingStatus(active, 0, pending, 0, None, None, None, by, ix.halted, self._warming)
        return IndexingStatus(True, p.docs_done, max(p.docs_total, p.docs_done + pending), p.docs_failed,
                              p.tokens_per_s, p.eta_s, p.current, by, ix.halted)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Until nothing is queued or being indexed (tests and scripts)."""
        return self._indexing.indexer.wait_idle(timeout)

    def document_file(self, document_id: int) -> Path | None:
        """The file of an indexed document, for "open the cited document"; None for anything else.

        Only rows of the store under a watched folder qualify, so a crafted
        id or path cannot make the UI serve an arbitrary file.
        """
        return self._servable(self._store.get_document(int(document_id)))

    def _servable(self, doc: Document | None) -> Path | None:
        if doc is None:
            return None
        roots = [Path(f) for f in self.folders()] + list(self._indexing.files)
        p = Path(doc.path)
        return p if path_under(doc.path, roots) and p.is_file() else None

    def passage(self, document_id: int, segment_id: int) -> tuple[Document, Segment] | None:
        """A servable document and one of its passages (what the viewer marks); None for anything else."""
        doc = self._store.get_document(int(document_id))
        if self._servable(doc) is None:
            return None
        segs = self._store.get_segments_by_id([int(segment_id)])
        if not segs or segs[0].document_id != doc.id:
            return None
        return doc, segs[0]

    def document_text(self, doc: Document, page: int | None = None) -> str | None:
        """A document's text as the index cut it (segment offsets point into it): the whole text, or of a
        document with pages (slides, sheets, chapters, messages), the text of ``page``. None for PDFs and
        for anything ``document_file`` would not serve."""
        path = self._servable(doc)
        if path is None or doc.type == "pdf":
            return None
        try:
            st = path.stat()
            pages = _pages_of(str(path), doc.type or "txt", st.st_mtime_ns, st.st_size)
            return "\n\n".join(text for number, text in pages if page is None or number in (None, page))
        except (IngestError, OSError):  # the file broke since it was indexed: the viewer shows the passage alone
            return ""

    def describe_segment(self, segment_id: int) -> str:
        """'file.pdf, page 3' for a passage (what the chat says when the user asks to read it)."""
        segs = self._store.get_segments_by_id([int(segment_id)])
        if not segs:
            return "a passage no longer in the library"
        doc = self._store.get_document(segs[0].document_id)
        return place(doc.path if doc else "?", segs[0].page, segs[0].location)

    # ---------------------------------------------------------------- chats
    def chats(self) -> list[Chat]:
        return self._store.list_chats()

    def messages(self, chat_id: int) -> list[Message]:
        return self._store.get_messages(int(chat_id))

    def delete_chat(self, chat_id: int) -> bool:
        return self._store.delete_chat(int(chat_id))

    def ask(self, question: str, chat_id: int | None = None, *, scope: Scope | None = None,
            **overrides) -> Iterator[str | Reply]:
        """Stream an answer (text pieces, then a :class:`Reply`), stored in chat ``chat_id`` (a new chat if None).

        A question the assistant cannot take (empty, nothing indexed) raises
        AssistantError before anything is stored; a model that cannot load
        raises ServiceError. Both carry a message for the user.
        """
        question = " ".join((question or "").split())
        if not question:
            raise AssistantError("type a question first")
        with self._answering() as assistant:
            stream = assistant.stream(question, scope, stop=self._stop, **self._overrides(overrides))
            first = next(stream)  # raises AssistantError before the chat is touched
            chat_id = self._chat_for(chat_id, question)
            self._store.add_message(chat_id, "user", question)
            yield from self._finish(chat_id, first, stream)

    def export_markdown(self, chat_id: int) -> str:
        """The chat as Markdown: each question, its answer, and the passages cited (document, page, text)."""
        chat = self._store.get_chat(int(chat_id))
        if chat is None:
            raise NotFound(f"chat {chat_id} does not exist")
        return chat_markdown(chat, self.messages(int(chat_id)))

    def stop(self) -> None:
        """End the answer being generated after its current token (from any thread). The answer is
        stored with the text shown so far and marked as stopped; the decoder is free for the next question."""
        self._stop.set()

    def regenerate(self, chat_id: int, *, scope: Scope | None = None, **overrides) -> Iterator[str | Reply]:
        """Answer the chat's last question again (with the settings of now, or ``overrides``): a second stored answer."""
        question = _last_question(self.messages(int(chat_id)))
        if question is None:
            raise AssistantError("this chat has no question to answer again")
        with self._answering() as assistant:
            stream = assistant.stream(question, scope, stop=self._stop, **self._overrides(overrides))
            first = next(stream)
            yield from self._finish(int(chat_id), first, stream, regenerated=True)

    def expand(self, chat_id: int, message_id: int, segment_id: int, *, scope: Scope | None = None,
               **overrides) -> Iterator[str | Reply]:
        """Answer an earlier question again with one more passage read as raw text (over ``scope``, as asked)."""
        msgs = self.messages(chat_id)
        idx = next((i for i, m in enumerate(msgs) if m.id == int(message_id) and m.role == "assistant"), None)
        if idx is None:
            raise AssistantError("that answer is no longer in this chat")
        question = _last_question(msgs[:idx])
        if question is None:
            raise AssistantError("the question of that answer is missing")
        cites = msgs[idx].citations or []
        read = [int(c["segment_id"]) for c in cites if c.get("kind", "cited") == "cited"]
        mode = next((c.get("mode") for c in cites if c.get("mode")), None) or self.ask_config.mode
        with self._answering() as assistant:
            stream = assistant.stream(question, scope, extra_segments=(*read, int(segment_id)), stop=self._stop,
                                      **self._overrides({**overrides, "mode": mode}))
            first = next(stream)
            # the request is part of the chat: a reopened chat shows why the same question was answered again
            self._store.add_message(int(chat_id), "user", f"Read {self.describe_segment(int(segment_id))} too and "
                                    "answer again.", notes={"expand": int(segment_id)})
            yield from self._finish(int(chat_id), first, stream)

    @contextmanager
    def _answering(self) -> Iterator[Assistant]:
        """One answer at a time on the one decoder, the indexer held off meanwhile, and a stop signal that a
        press before this answer began does not carry into it."""
        with self._answer_lock, self._indexing.indexer.paused():
            self._stop.clear()
            yield self._get_assistant()

    def _finish(self, chat_id: int, first: str | Answer, stream: Iterator[str | Answer], *,
                regenerated: bool = False) -> Iterator[str | Reply]:
        answer = first if isinstance(first, Answer) else None
        if answer is None:
            yield first
            for piece in stream:
                if isinstance(piece, Answer):
                    answer = piece
                else:
                    yield piece
        assert answer is not None
        notes = {**answer.notes(), **({"regenerated": True} if regenerated else {})}
        msg = self._store.add_message(chat_id, "assistant", answer.text, citations=citation_rows(answer), notes=notes)
        yield Reply(chat_id, msg.id, answer, notes)

    def _chat_for(self, chat_id: int | None, question: str) -> int:
        if chat_id:
            if self._store.get_chat(int(chat_id)) is None:
                raise NotFound(f"chat {chat_id} does not exist")
            return int(chat_id)
        title = question if len(question) <= 60 else question[:57].rstrip() + "…"
        return self._store.create_chat(title).id

    @staticmethod
    def _overrides(overrides: dict) -> dict:
        """Per-question settings; the rest come from the assistant's config, which is ``ask_config``."""
        return {k: v for k, v in overrides.items() if v is not None}

    def _get_assistant(self) -> Assistant:
        """The assistant, opened on first use (the decoder loads in seconds; the UI is up before)."""
        if self._assistant is None:  # callers hold _answer_lock
            m = self._models
            backend = m.open_backend(self.settings.backend)
            self._assistant = Assistant(self._store, backend, m.compressor.fingerprint, self.ask_config,
                                        count_tokens=m.compressor.count_tokens)
        return self._assistant

    # ------------------------------------------------------------- settings
    def set_answering(self, **fields) -> AssistantConfig:
        """Mode and expansion budget for the next questions (validated by AssistantConfig)."""
        unknown = set(fields) - set(ASK_FIELDS)
        if unknown:
            raise ValueError(f"not an answering setting: {', '.join(sorted(unknown))}")
        cfg = replace(self.ask_config, **{k: v for k, v in fields.items() if v is not None})
        self.ask_config = cfg
        with self._answer_lock:
            if self._assistant is not None:
                self._assistant.config = cfg
        self._warm_wanted.set()
        return cfg

    def configure(self, *, ratio: int | None = None, backend: str | None = None,
                  checkpoint: str | None = None) -> str:
        """Switch the compression ratio, the decoder backend or the checkpoint ("" = the embedded default).

        A new compressor means new latents: documents are re-encoded in the
        background (their text segments are kept), and questions meanwhile
        read the documents not yet re-encoded as raw text. The old models are
        kept if the new ones fail to load.
        """
        new = self.settings
        if ratio is not None:
            new = replace(new, ratio=int(ratio))
        if backend:
            new = replace(new, backend=backend)
        if checkpoint is not None:
            new = replace(new, checkpoint=checkpoint.strip() or None)
        with self._config_lock:
            # a checkpoint fixes its own ratio: the ratio setting is the embedded default's
            models_change = new.checkpoint != self.settings.checkpoint or (
                new.checkpoint is None and new.ratio != self.settings.ratio)
            if not models_change and new.backend == self.settings.backend:
                return "nothing changed"
            models = load_models(new) if models_change else self._models
            with self._answer_lock:
                if self._assistant is not None:
                    self._assistant.close()
                    self._assistant = None
                old_settings, old_models = self.settings, self.models
                self.settings, self.models = new, models
                try:
                    self._get_assistant()  # a backend that cannot open fails now, not at the next question
                except Exception:
                    self.settings, self.models = old_settings, old_models
                    raise
            if not models_change:
                self._warm_wanted.set()  # a new models' block is warmed when their re-encoding goes idle
                return f"backend: {new.backend}"
            self._indexing.close()
            self._start_indexing([])
            queued = self._indexing.indexer.pending()
            return f"now using {models.source}; {queued} document(s) queued for re-encoding"

    # -------------------------------------------------------------- helpers
    @property
    def _store(self) -> LatentStore:
        if self.store is None:
            raise ServiceError("the app is not started (or already closed)")
        return self.store

    @property
    def _models(self) -> Models:
        if self.models is None:
            raise ServiceError("the app is not started (or already closed)")
        return self.models

    @property
    def _indexing(self) -> IndexingService:
        if self.indexing is None:
            raise ServiceError("the app is not started (or already closed)")
        return self.indexing


def _last_question(msgs: list[Message]) -> str | None:
    """The newest question among ``msgs``; the stored "read this passage too" lines are requests, not questions."""
    return next((m.content for m in reversed(msgs) if m.role == "user" and not (m.notes or {}).get("expand")), None)


def citation_rows(answer: Answer) -> list[dict]:
    """An answer's passages as rows for the chat history: the cited ones, then the offered ones."""
    rows = [{**asdict(c), "kind": "cited", "mode": answer.mode} for c in answer.citations]
    rows += [{**asdict(c), "kind": "more", "mode": answer.mode} for c in answer.more]
    return rows


def citation_from_row(row: dict) -> Citation:
    names = Citation.__dataclass_fields__
    return Citation(**{k: row.get(k) for k in names})


__all__ = ["Runtime", "Reply", "IndexingStatus", "citation_rows", "citation_from_row"]
