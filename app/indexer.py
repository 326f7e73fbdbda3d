"""The background indexer: documents in a queue -> segments -> latents -> the store.

One worker thread owns the compressor. Per document it follows the store's
protocol, which is what keeps the index honest while files change under it:

1. ``set_status(id, "indexing")``; keep the row's ``updated_at``;
2. parse the file (``app.ingest``) into segments;
3. ``find_latents_by_sha(shas, fingerprint)``: segments whose text already
   has latents from this compressor (unchanged, copied, moved) are not
   encoded again;
4. encode only the missing ones, in batches that mix segments of several
   documents (the encoder runs fuller batches than one small file gives);
5. ``replace_document_content(..., if_updated_at=...)``: one transaction per
   document, so a document is wholly indexed or not at all. If the file was
   edited meanwhile the store raises ``StaleDocumentError`` and the document
   goes back into the queue; any other failure becomes an error row.

A bad file is an error row and a log line, never a dead worker: every
exception is caught per document (parse, encode, commit) and the loop goes
on. Progress events go to callbacks (the CLI prints them, the UI shows them).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from latent_store import DocumentMeta, LatentIn, LatentStore, NotFound, StaleDocumentError, StoreUnavailable

from .ingest import IngestError, IngestLimits, ParsedDocument, parse_document
from .segment import DEFAULT_MAX_TOKENS

log = logging.getLogger(__name__)


# ------------------------------------------------------------------ protocol
@runtime_checkable
class LatentLike(Protocol):
    """What the indexer needs of a latent array (``lclm_core.latents.LatentArray``)."""

    fingerprint: str
    ratio: int

    @property
    def dtype_name(self) -> str: ...

    @property
    def shape(self) -> tuple[int, int]: ...

    def payload(self) -> bytes: ...


@runtime_checkable
class Compressor(Protocol):
    """What the indexer needs of a compressor (``lclm_core.model.LCLMCompressor``).

    A Protocol, not the class: tests index with a tiny or a fake compressor
    in milliseconds, and the indexer cannot reach into the model.
    """

    @property
    def fingerprint(self) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def compress(self, texts: Sequence[str], windows_per_batch: int = 8) -> Sequence[LatentLike]: ...


def device_type(compressor: object) -> str:
    """Where a compressor's encoder runs ("cpu" when it does not say)."""
    dev = getattr(getattr(compressor, "encoder", None), "device", None)
    return getattr(dev, "type", None) or "cpu"


def to_latent_in(lat: LatentLike) -> LatentIn:
    return LatentIn(lat.payload(), lat.dtype_name, tuple(lat.shape), lat.fingerprint, int(lat.ratio))  # type: ignore[arg-type]


def encode_each(compressor: Compressor, batch: Sequence[tuple[str, str, int]], windows_per_batch: int
                ) -> tuple[dict[str, LatentIn], dict[str, Exception]]:
    """Latents of ``(sha, text, n_tokens)`` items by sha, and the items that failed by sha.

    One call for the batch; where it fails, each text alone, so one bad text does
    not fail the documents that shared its batch (the local indexer and the Ray
    encoders both encode this way).
    """
    try:
        return _compress(compressor, batch, windows_per_batch), {}
    except Exception as e:  # noqa: BLE001
        if len(batch) == 1:
            log.exception("encoder failed on a segment of %d tokens", batch[0][2])
            return {}, {batch[0][0]: e}
        log.warning("encoder failed on a batch of %d segments (%s); encoding them one by one", len(batch), e)
    fresh: dict[str, LatentIn] = {}
    failed: dict[str, Exception] = {}
    for item in batch:
        f, e = encode_each(compressor, [item], windows_per_batch)
        fresh.update(f)
        failed.update(e)
    return fresh, failed


def _compress(compressor: Compressor, batch: Sequence[tuple[str, str, int]], windows_per_batch: int
              ) -> dict[str, LatentIn]:
    lats = compressor.compress([text for _, text, _ in batch], windows_per_batch=windows_per_batch)
    if len(lats) != len(batch):
        raise RuntimeError(f"compressor returned {len(lats)} latent arrays for {len(batch)} texts")
    out = {}
    for (sha, _, _), lat in zip(batch, lats):
        li = to_latent_in(lat)
        if li.fingerprint != compressor.fingerprint:
            raise RuntimeError(f"compressor returned latents with fingerprint {li.fingerprint}, "
                               f"expected {compressor.fingerprint}")
        out[sha] = li
    return out


# ------------------------------------------------------------------ events
@dataclass(frozen=True)
class DocOutcome:
    """How one document ended: indexed, error or skipped (as stored), or
    requeued (changed while read), cancelled, removed (deleted meanwhile),
    pending (changed too often in a row; waits for its next change)."""

    document_id: int
    path: str
    status: str
    reason: str | None = None
    n_segments: int = 0
    encoded: int = 0  # segments encoded by this run
    reused: int = 0  # segments whose latents already existed (unchanged text)
    tokens: int = 0
    page_count: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class Progress:
    """A snapshot of the current run, sent after every document and encoder batch.

    A run starts when work arrives at an idle indexer and ends when it is
    idle again (``idle``). tokens_per_s counts encoded tokens over encoder
    time. eta_s: the tokens parsed but not yet encoded at that rate, plus
    the queued documents at the average time per document so far (a queued
    file's length is unknown until it is parsed); None while unknown.
    """

    docs_done: int
    docs_total: int
    docs_failed: int
    segments_done: int
    segments_encoded: int
    segments_reused: int
    tokens_encoded: int
    tokens_per_s: float | None
    eta_s: float | None
    elapsed_s: float
    current: str | None = None
    outcome: DocOutcome | None = None
    idle: bool = False


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class IndexerConfig:
    """Sizes of the work. Segments of ~512 tokens fill one encoder window of
    the default model; 16 of them per call keeps the CPU's matmuls fat
    without holding much; ``max_docs_in_flight`` bounds the parsed text and
    latents held before their documents commit."""

    max_tokens: int = DEFAULT_MAX_TOKENS  # segment size, in encoder tokens
    batch_segments: int = 16  # segments per encoder call
    batch_tokens: int = 8192  # and at most this many tokens per call
    windows_per_batch: int = 16
    max_docs_in_flight: int = 8  # parsed documents waiting for latents (bounds memory)
    max_requeues: int = 5  # a file rewritten faster than it can be indexed waits for its next event
    limits: IngestLimits = field(default_factory=IngestLimits)

    @classmethod
    def for_device(cls, device_type: str, **kw) -> "IndexerConfig":
        """The sizes for an encoder on ``device_type``: a GPU gets batches 8x fuller.

        16 segments of 512 tokens keep a CPU busy, but leave a GPU's matrix units mostly idle
        (a 0.6B encoder takes ~10 TFLOP per 8k-token batch, milliseconds on a data-centre GPU),
        so on CUDA a call carries up to 128 segments / 64k tokens. More documents are parsed ahead
        to fill those batches; their latents, float16, stay small beside the GPU's memory.
        """
        if device_type == "cuda":
            kw = {"batch_segments": 128, "batch_tokens": 65536, "windows_per_batch": 128, "max_docs_in_flight": 32,
                  **kw}
        return cls(**kw)


@dataclass
class _Job:
    doc_id: int
    path: str
    updated_at: float
    started: float
    parsed: ParsedDocument
    fingerprint: str
    missing: list[str]  # shas to encode, in order, distinct
    have: set[str] = field(default_factory=set)  # shas that already have latents (the store copies them)
    reused: int = 0


@dataclass
class _Run:
    started: float = field(default_factory=time.monotonic)
    docs_done: int = 0
    docs_failed: int = 0
    segments_done: int = 0
    segments_encoded: int = 0
    segments_reused: int = 0
    tokens_encoded: int = 0
    tokens_seen: int = 0  # all tokens of finished documents (for the ETA)
    encode_s: float = 0.0


class Indexer:
    """A queue of document ids and one worker thread that indexes them.

    ``enqueue(ids)`` (deduplicated), ``start()``, ``wait_idle()``,
    ``cancel()`` (drop the queue and the documents in flight, which go back
    to 'pending'), ``close()``. Callbacks run on the worker thread and must
    be quick; an exception in one is logged and ignored.
    """

    def __init__(
        self,
        store: LatentStore,
        compressor: Compressor,
        config: IndexerConfig | None = None,
        callbacks: Iterable[ProgressCallback] = (),
    ) -> None:
        self.store = store
        self.compressor = compressor
        self.config = config or IndexerConfig.for_device(device_type(compressor))
        self._callbacks: list[ProgressCallback] = list(callbacks)
        self._cond = threading.Condition()
        self._queue: OrderedDict[int, None] = OrderedDict()
        self._requeues: dict[int, int] = {}
        self._jobs: list[_Job] = []  # parsed, waiting for latents (worker thread only)
        self._fresh: dict[str, LatentIn] = {}  # latents encoded for jobs in flight, by sha
        self._inflight: set[int] = set()  # popped from the queue, not finished (jobs included)
        self._cancel = False
        self._stop = False
        self._thread: threading.Thread | None = None
        self._run: _Run | None = None
        self._current: str | None = None
        self._paused = 0  # > 0: hold off between steps (an answer is being generated)
        self.halted: str | None = None  # why indexing stopped (the store refused writes), until new work arrives

    # ----------------------------------------------------------------- API
    @property
    def fingerprint(self) -> str:
        return self.compressor.fingerprint

    def add_callback(self, cb: ProgressCallback) -> None:
        self._callbacks.append(cb)

    def start(self) -> "Indexer":
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="lclm-indexer", daemon=True)
            self._thread.start()
        return self

    def enqueue(self, doc_ids: int | Iterable[int]) -> int:
        """Add documents to the queue. Ids already queued keep their place; ids
        in flight are not queued again (an edit meanwhile is caught by the
        store's ``if_updated_at`` check and re-queued then)."""
        ids = [doc_ids] if isinstance(doc_ids, int) else list(doc_ids)
        with self._cond:
            added = 0
            for i in ids:
                if i not in self._queue and i not in self._inflight:
                    self._queue[int(i)] = None
                    added += 1
            if added:
                self._cancel = False
                self.halted = None
                if self._run is None:
                    self._run = _Run()
                self._cond.notify_all()
        return added

    def enqueue_needing_work(self) -> int:
        """Queue every document the store says needs work for this compressor
        (new, edited, interrupted, or with latents from another fingerprint)."""
        return self.enqueue(d.id for d in self.store.documents_needing_work(self.fingerprint))

    def pending(self) -> int:
        with self._cond:
            return len(self._queue) + len(self._inflight)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until the queue is empty and nothing is in flight; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue or self._inflight:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
        return True

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the worker between steps while the block runs (nests).

        Why: on a laptop's few cores, encoding and answering at once make the
        answer several times slower; a person waiting for an answer comes
        first, the folder can wait seconds. The step in progress (one encoder
        batch at most) finishes first.
        """
        with self._cond:
            self._paused += 1
        try:
            yield
        finally:
            with self._cond:
                self._paused -= 1
                self._cond.notify_all()

    def cancel(self) -> None:
        """Drop queued work; documents in flight go back to 'pending' (the
        next run or start-up picks them up). The worker keeps running."""
        with self._cond:
            self._queue.clear()
            self._cancel = True
            self._cond.notify_all()

    def close(self, timeout: float | None = 30.0) -> None:
        """Cancel and stop the worker (waits for the encoder batch in progress)."""
        with self._cond:
            self._queue.clear()
            self._cancel = True
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("indexer thread did not stop within %.0f s", timeout or 0)
            self._thread = None

    def __enter__(self) -> "Indexer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -------------------------------------------------------------- worker
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not (self._stop or self._queue or self._jobs or self._cancel) or (
                        self._paused and not (self._stop or self._cancel)):
                    self._cond.wait()
                if self._stop and not self._jobs:
                    return
                cancel, self._cancel = self._cancel, False
            try:
                if cancel or self._stop:
                    self._abort_jobs()
                    continue
                self._step()
            except StoreUnavailable as e:  # disk full, read-only: stop, keep the queue's documents pending
                self._halt(str(e))
            except Exception:  # noqa: BLE001 - the worker must survive anything
                log.exception("indexer step failed; dropping the documents in flight")
                self._abort_jobs(status="error", reason="internal error while indexing (see the log)")
            finally:
                self._maybe_idle()

    def _step(self) -> None:
        """Parse documents until a batch's worth of segments waits, encode one
        batch, commit the documents it completed."""
        while self._todo_tokens() < self.config.batch_tokens and len(self._jobs) < self.config.max_docs_in_flight:
            doc_id = self._pop()
            if doc_id is None:
                break
            self._prepare(doc_id)
            if self._cancel_requested():
                return
        if self._jobs:
            self._encode_batch()
            self._commit_ready()

    def _pop(self) -> int | None:
        with self._cond:
            if not self._queue:
                return None
            doc_id, _ = self._queue.popitem(last=False)
            self._inflight.add(doc_id)
            return doc_id

    def _cancel_requested(self) -> bool:
        with self._cond:
            return self._cancel or self._stop

    def _todo_tokens(self) -> int:
        done = self._fresh.keys()
        seen: set[str] = set()
        total = 0
        for job in self._jobs:
            toks = {s.sha256: s.n_tokens or 0 for s in job.parsed.segments}
            for sha in job.missing:
                if sha not in done and sha not in seen:
                    seen.add(sha)
                    total += toks[sha]
        return total

    def _prepare(self, doc_id: int) -> None:
        """Steps 1-3 for one document; a document needing no encoding commits at once."""
        t0 = time.monotonic()
        try:
            doc = self.store.set_status(doc_id, "indexing")
        except NotFound:
            log.debug("document %d was deleted before indexing", doc_id)
            self._done(doc_id)
            return
        self._current = doc.path
        self._emit()
        fp = self.fingerprint

        def ocr_progress(page: int, pages: int) -> None:  # a scanned book reads for minutes: say where it is
            self._current = f"{doc.path} (OCR: page {page} of {pages})"
            self._emit()

        try:
            parsed = parse_document(doc.path, self.compressor.count_tokens, limits=self.config.limits,
                                    max_tokens=self.config.max_tokens, on_ocr=ocr_progress)
            self._current = doc.path
            shas = list(dict.fromkeys(s.sha256 for s in parsed.segments))
            have = set(self.store.find_latents_by_sha(shas, fp))
        except FileNotFoundError:
            self._fail(doc_id, doc.updated_at, doc.path, "error", "file not found (moved or deleted?)", t0)
            return
        except IngestError as e:
            self._fail(doc_id, doc.updated_at, doc.path, e.status, e.reason, t0)
            return
        except Exception as e:  # noqa: BLE001 - a parser bug is one file's error, not the run's
            log.exception("%s: reading failed", doc.path)
            self._fail(doc_id, doc.updated_at, doc.path, "error", f"reading failed: {type(e).__name__}: {e}", t0)
            return
        job = _Job(doc_id, doc.path, doc.updated_at, t0, parsed, fp, [s for s in shas if s not in have], have,
                   reused=sum(1 for s in parsed.segments if s.sha256 in have))
        with self._cond:
            self._jobs.append(job)
        self._commit_ready()

    def _take(self, job: _Job) -> None:
        """Remove a job from the waiting list; it stays in flight until finished."""
        with self._cond:
            self._jobs.remove(job)

    def _encode_batch(self) -> None:
        """Encode the next segments (first jobs first), at most one batch."""
        batch: list[tuple[str, str, int]] = []
        tokens = 0
        queued: set[str] = set()
        for job in self._jobs:
            texts = {s.sha256: s for s in job.parsed.segments}
            for sha in job.missing:
                if sha in self._fresh or sha in queued:
                    continue
                seg = texts[sha]
                n = seg.n_tokens or 0
                if batch and (len(batch) >= self.config.batch_segments or tokens + n > self.config.batch_tokens):
                    break
                batch.append((sha, seg.text, n))
                queued.add(sha)
                tokens += n
            else:
                continue
            break
        if not batch:
            return
        t = time.monotonic()
        failed = self._encode(batch)
        if failed:
            # a batch mixes documents: only those whose own text failed go to error
            for job in [j for j in self._jobs if failed.keys() & set(j.missing)]:
                e = next(failed[sha] for sha in job.missing if sha in failed)
                self._take(job)
                self._fail(job.doc_id, job.updated_at, job.path, "error", f"encoder failed: {type(e).__name__}: {e}",
                           job.started)
            batch = [b for b in batch if b[0] not in failed]
            tokens = sum(n for _, _, n in batch)
        dt = time.monotonic() - t
        run = self._run_state()
        run.encode_s += dt
        run.tokens_encoded += tokens
        run.segments_encoded += len(batch)
        log.debug("encoded %d segments (%d tokens) in %.2f s", len(batch), tokens, dt)
        self._emit()

    def _encode(self, batch: list[tuple[str, str, int]]) -> dict[str, Exception]:
        """Encode a batch into ``_fresh``; returns the texts (by sha) that failed on their own."""
        fresh, failed = encode_each(self.compressor, batch, self.config.windows_per_batch)
        self._fresh.update(fresh)
        return failed

    def _commit_ready(self) -> None:
        for job in list(self._jobs):
            if self.halted:
                return
            if all(sha in self._fresh for sha in job.missing):
                self._take(job)
                self._commit(job)
        needed = {sha for j in self._jobs for sha in j.missing}
        for sha in [s for s in self._fresh if s not in needed]:
            del self._fresh[sha]

    def _commit(self, job: _Job) -> None:
        """Step 5: one transaction for the whole document. Only the newly
        encoded latents travel; the store copies the existing ones by sha
        inside the transaction (no blob passes through Python twice)."""
        latents = {sha: self._fresh[sha] for sha in job.missing}
        info = job.parsed.info
        # The file may have changed since it was read; with no watcher (``index``)
        # nothing else would notice, and the store would keep the old text as current.
        try:
            st = os.stat(job.path)
        except FileNotFoundError:
            self._fail(job.doc_id, job.updated_at, job.path, "error", "file vanished while it was being read",
                       job.started)
            return
        except OSError:
            st = None  # unreadable now: keep what was read; the next scan says why
        if st is not None and (st.st_size, st.st_mtime) != (info.size, info.mtime):
            self._requeue(job.doc_id, job.path, job.started)
            return
        meta = DocumentMeta(size=info.size, mtime=info.mtime, sha256=info.sha256, type=info.type,
                            page_count=job.parsed.page_count)
        try:
            self.store.replace_document_content(job.doc_id, job.parsed.segments, latents, fingerprint=job.fingerprint,
                                                meta=meta, if_updated_at=job.updated_at)
        except StaleDocumentError:
            self._requeue(job.doc_id, job.path, job.started)
            return
        except NotFound:
            log.info("%s was removed while it was being indexed", job.path)
            self._finish(DocOutcome(job.doc_id, job.path, "removed", seconds=time.monotonic() - job.started))
            return
        except ValueError as e:
            # the latents we meant to reuse went with a document deleted
            # meanwhile: encode again (once or twice), then give up loudly
            if self._requeues.get(job.doc_id, 0) < 2:
                self._requeue(job.doc_id, job.path, job.started)
            else:
                self._fail(job.doc_id, job.updated_at, job.path, "error", f"store refused the content: {e}",
                           job.started, check=False)
            return
        except StoreUnavailable as e:
            self._halt(str(e))
            return
        except Exception as e:  # noqa: BLE001
            log.exception("%s: writing to the store failed", job.path)
            self._fail(job.doc_id, job.updated_at, job.path, "error", f"store write failed: {type(e).__name__}: {e}",
                       job.started, check=False)
            return
        segs = job.parsed.segments
        log.info("indexed %s: %d segments (%d encoded, %d reused), %d tokens",
                 job.path, len(segs), len(job.missing), job.reused, job.parsed.n_tokens)
        self._finish(DocOutcome(job.doc_id, job.path, "indexed", None, len(segs), len(job.missing), job.reused,
                                job.parsed.n_tokens, job.parsed.page_count, time.monotonic() - job.started),
                     tokens=job.parsed.n_tokens, segments=len(segs), reused=job.reused)

    def _fail(self, doc_id: int, updated_at: float, path: str, status: str, reason: str, t0: float,
              *, check: bool = True) -> None:
        """Record why a document gave no index, unless it changed meanwhile
        (then the newer version is what counts: it goes back in the queue)."""
        try:
            doc = self.store.get_document(doc_id)
            if doc is None:
                self._finish(DocOutcome(doc_id, path, "removed", seconds=time.monotonic() - t0))
                return
            if check and doc.updated_at != updated_at:
                self._requeue(doc_id, path, t0)
                return
            self.store.set_status(doc_id, status, reason)
        except NotFound:
            self._finish(DocOutcome(doc_id, path, "removed", seconds=time.monotonic() - t0))
            return
        except Exception:  # noqa: BLE001
            log.exception("%s: could not record its %s status", path, status)
        log.warning("%s: %s: %s", path, status, reason)
        self._finish(DocOutcome(doc_id, path, status, reason, seconds=time.monotonic() - t0), failed=True)

    def _requeue(self, doc_id: int, path: str, t0: float) -> None:
        n = self._requeues.get(doc_id, 0) + 1
        self._requeues[doc_id] = n
        if n > self.config.max_requeues:
            log.warning("%s keeps changing while it is indexed; leaving it pending until its next change", path)
            self._requeues.pop(doc_id, None)
            try:
                self.store.set_status(doc_id, "pending")
            except NotFound:
                pass
            self._finish(DocOutcome(doc_id, path, "pending", "file keeps changing", seconds=time.monotonic() - t0))
            return
        log.info("%s changed while it was indexed; indexing it again", path)
        with self._cond:
            self._inflight.discard(doc_id)
            self._queue[doc_id] = None
            self._cond.notify_all()
        self._emit(outcome=DocOutcome(doc_id, path, "requeued", seconds=time.monotonic() - t0))

    def _halt(self, reason: str) -> None:
        """The store cannot take writes (disk full, read-only): stop indexing and say why.

        Nothing is marked failed (the files are fine): documents in flight go
        back to 'pending' where the disk still takes that one-row write (else
        they stay 'indexing'); the next start picks both up.
        """
        log.error("indexing stopped: %s", reason)
        with self._cond:
            self.halted = reason
            self._queue.clear()
            self._jobs = []
            ids = list(self._inflight)
        self._fresh.clear()
        for doc_id in ids:
            try:  # best effort: a one-row update may still fit where a document did not
                self.store.set_status(doc_id, "pending")
            except Exception:  # noqa: BLE001 - 'indexing' rows are picked up at the next start too
                pass
            self._done(doc_id)

    def _abort_jobs(self, status: str = "pending", reason: str | None = None) -> None:
        """Cancel: the documents in flight return to ``status`` (nothing of them was written)."""
        with self._cond:
            self._jobs = []
            ids = sorted(self._inflight)
        self._fresh.clear()
        for doc_id in ids:
            try:
                doc = self.store.set_status(doc_id, status, reason)
                path = doc.path
            except NotFound:
                path = "?"
            except Exception:  # noqa: BLE001
                log.exception("document %d: could not reset its status", doc_id)
                path = "?"
            self._done(doc_id)
            self._emit(outcome=DocOutcome(doc_id, path, "cancelled" if status == "pending" else status, reason))

    # ------------------------------------------------------------ progress
    def _run_state(self) -> _Run:
        with self._cond:
            if self._run is None:
                self._run = _Run()
            return self._run

    def _done(self, doc_id: int) -> None:
        with self._cond:
            self._inflight.discard(doc_id)
            self._cond.notify_all()

    def _finish(self, outcome: DocOutcome, *, failed: bool = False, tokens: int = 0, segments: int = 0,
                reused: int = 0) -> None:
        self._requeues.pop(outcome.document_id, None)
        run = self._run_state()
        run.docs_done += 1
        run.docs_failed += int(failed)
        run.tokens_seen += tokens
        run.segments_done += segments
        run.segments_reused += reused
        self._done(outcome.document_id)
        self._emit(outcome=outcome)

    def _maybe_idle(self) -> None:
        with self._cond:
            idle = not (self._queue or self._inflight)
            run = self._run if idle else None
            if idle:
                self._run = None
                self._current = None
                self._cond.notify_all()
        if run is not None:
            self._emit(run=run, idle=True)

    def snapshot(self, run: _Run | None = None, *, outcome: DocOutcome | None = None, idle: bool = False,
                 todo_tokens: int | None = None) -> Progress:
        """Progress now. ``todo_tokens`` (segments parsed, not yet encoded) is
        known on the worker thread only; other threads get a docs-based ETA."""
        with self._cond:
            run = run or self._run or _Run()
            queued = len(self._queue)
            waiting = queued + len(self._inflight)
        rate = run.tokens_encoded / run.encode_s if run.encode_s > 0 else None
        elapsed = time.monotonic() - run.started
        per_doc = elapsed / run.docs_done if run.docs_done else None
        eta: float | None
        if not waiting:
            eta = 0.0
        elif todo_tokens is not None:
            # what is parsed: its tokens at the measured rate; what is queued: the average document so far
            eta_parsed = 0.0 if not todo_tokens else (todo_tokens / rate if rate else None)
            eta_queued = 0.0 if not queued else (per_doc * queued if per_doc is not None else None)
            eta = None if eta_parsed is None or eta_queued is None else eta_parsed + eta_queued
        else:
            eta = per_doc * waiting if per_doc is not None else None
        return Progress(run.docs_done, run.docs_done + waiting, run.docs_failed, run.segments_done,
                        run.segments_encoded, run.segments_reused, run.tokens_encoded, rate, eta, elapsed, self._current,
                        outcome, idle)

    def _emit(self, *, run: _Run | None = None, outcome: DocOutcome | None = None, idle: bool = False) -> None:
        if not self._callbacks:
            return
        p = self.snapshot(run, outcome=outcome, idle=idle, todo_tokens=self._todo_tokens())
        for cb in list(self._callbacks):
            try:
                cb(p)
            except Exception:  # noqa: BLE001
                log.exception("progress callback %r failed", cb)
