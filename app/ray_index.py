"""Indexing on a Ray cluster: ``lclm-docs index --ray [ADDRESS]``.

Why Ray Data: a folder of 100k documents is a dataset, and ``map_batches``
over long-lived actors is the standard way to run a model over one on many
machines (streaming, back-pressure, actors restarted when a node dies). We
write the two functions and the writer, not a scheduler.

The pipeline, per document:

1. parse + segment (``_Parser``: actors holding only the tokenizer; segments
   are cut in the encoder's tokens, exactly as the local indexer cuts them);
2. encode the segments whose text has no latents yet (``_Encoder``: actors
   that load the compressor once, ``num_gpus`` each where there are GPUs);
3. one writer, here in the driver, commits each document in one transaction
   with the row's ``updated_at`` checked, exactly as the local indexer does:
   the same fingerprints, the same reuse of unchanged segments, the same error
   rows. Or, with ``shards``, it appends whole documents to latent shards.

Nothing is written before a document's latents are back, so a worker that
dies loses only work in flight: its documents stay 'pending' (or out of the
shards), and a re-run finishes what is missing.

Ray is an optional extra (``pip install .[ray]``), imported only here and only
when ``--ray`` is asked for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from latent_store import DocumentMeta, LatentIn, LatentStore, NotFound, SegmentIn, StaleDocumentError, StoreUnavailable

from .indexer import DocOutcome, IndexerConfig, Progress, ProgressCallback, encode_each
from .ingest import IngestError, parse_document
from .settings import Settings

log = logging.getLogger(__name__)

INSTALL = "Ray is not installed: pip install 'latent-context-docs[ray]' (or: pip install 'ray[data]' pyarrow)"


class RayUnavailable(RuntimeError):
    """Ray is missing or the cluster cannot be reached; the message says what to do."""


@dataclass(frozen=True)
class RayOptions:
    """How the work is spread. ``address``: None starts a local cluster; "auto" or
    "ray://host:10001" joins one. ``actor_cpus`` None: a fair share of a local
    cluster's CPUs (Ray Data's read and parse tasks need some too: two 1-CPU
    actors on a 2-CPU machine starve them and the dataset stalls)."""

    address: str | None = None
    actors: int = 1  # encoder actors (each loads the compressor once)
    parsers: int = 1  # parser actors (each loads the tokenizer once)
    actor_cpus: float | None = None
    actor_gpus: float | None = None  # None: 1 per actor where the cluster has GPUs
    docs_per_batch: int | None = None  # documents per encoder call of map_batches (None: 4, 32 on GPUs)
    local_cpus: int | None = None  # CPUs of a local cluster (None: this machine's)
    max_restarts: int | None = None  # of a dead encoder actor (None: Ray Data's, which restarts and retries)


@dataclass
class RayReport:
    indexed: int = 0
    failed: int = 0
    left: int = 0  # not finished (changed meanwhile, or the run broke off): a re-run takes them
    segments: int = 0
    encoded: int = 0
    tokens_encoded: int = 0
    seconds: float = 0.0
    error: str | None = None  # why the run broke off (a lost worker, ...)
    shards: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------ workers
def _segments_json(segments: Sequence[SegmentIn]) -> str:
    return json.dumps([[s.ordinal, s.text, s.page, s.char_start, s.char_end, s.n_tokens, s.sha256, s.location]
                       for s in segments])


def _segments_from(raw: str) -> list[SegmentIn]:
    return [SegmentIn(o, t, p, a, b, n, sha, where) for o, t, p, a, b, n, sha, where in json.loads(raw)]


def _threads(cpus: float) -> None:
    """A CPU actor computes with as many threads as it has CPUs (a 0.5-CPU actor with all cores' threads
    would fight the others for them)."""
    import torch

    torch.set_num_threads(max(1, int(cpus)))


class _Parser:
    """Ray Data actor: file -> segments, cut in the encoder's tokens. Holds the tokenizer only."""

    def __init__(self, settings: Settings, config: IndexerConfig, cpus: float) -> None:
        from lclm_core.inputs import tokenize_text

        from .services import load_tokenizer

        _threads(cpus)
        tok = load_tokenizer(settings)
        self.count = lambda text: len(tokenize_text(tok, text))
        self.config = config

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {k: [] for k in ("doc_id", "path", "updated_at", "status", "reason", "size", "mtime",
                                                "sha256", "type", "page_count", "segments")}
        for doc_id, path, updated_at in zip(batch["doc_id"], batch["path"], batch["updated_at"]):
            row: dict[str, Any] = {"doc_id": int(doc_id), "path": str(path), "updated_at": float(updated_at),
                                   "status": "parsed", "reason": "", "size": 0, "mtime": 0.0, "sha256": "",
                                   "type": "", "page_count": -1, "segments": "[]"}
            try:
                parsed = parse_document(path, self.count, limits=self.config.limits, max_tokens=self.config.max_tokens)
                info = parsed.info
                row.update(size=info.size, mtime=info.mtime, sha256=info.sha256, type=info.type,
                           page_count=parsed.page_count if parsed.page_count is not None else -1,
                           segments=_segments_json(parsed.segments))
            except FileNotFoundError:
                row.update(status="error", reason="file not found (moved or deleted?)")
            except IngestError as e:
                row.update(status=e.status, reason=e.reason)
            except Exception as e:  # noqa: BLE001 - a parser bug is one file's error, as in the local indexer
                log.exception("%s: reading failed", path)
                row.update(status="error", reason=f"reading failed: {type(e).__name__}: {e}")
            for k, v in row.items():
                out[k].append(v)
        return out


class _Encoder:
    """Ray Data actor: segments -> latents, for the texts that have none yet. Loads the compressor once."""

    def __init__(self, settings: Settings, ratio: int | None, config: IndexerConfig, known: list, cpus: float,
                 fingerprint: str) -> None:
        import ray

        from .services import load_compressor_only

        from .indexer import device_type

        _threads(cpus)
        self.comp = load_compressor_only(settings, ratio)
        cpu = IndexerConfig()
        if device_type(self.comp) == "cuda" and (config.batch_segments, config.batch_tokens) == (
                cpu.batch_segments, cpu.batch_tokens):  # the CPU's sizes, not the user's --batch: a GPU's instead
            gpu = IndexerConfig.for_device("cuda")
            config = replace(config, batch_segments=gpu.batch_segments, batch_tokens=gpu.batch_tokens,
                             windows_per_batch=gpu.windows_per_batch)
        if self.comp.fingerprint != fingerprint:
            raise RuntimeError(f"this worker's compressor is {self.comp.fingerprint}, the driver's {fingerprint}: "
                               f"the cluster's nodes must hold the same model")
        self.config = config
        self.known: frozenset[str] = ray.get(known[0])  # texts that already have latents in the store

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        n = len(batch["doc_id"])
        rows = [{k: batch[k][i] for k in batch} for i in range(n)]
        todo: dict[str, tuple[str, int]] = {}
        for r in rows:
            if r["status"] == "parsed":
                for s in _segments_from(r["segments"]):
                    if s.sha256 not in self.known:
                        todo.setdefault(s.sha256, (s.text, s.n_tokens or 0))
        fresh, failed = self._encode(todo)
        out: dict[str, list] = {k: [] for k in (*batch.keys(), "latent_meta", "latent_blob", "encoded",
                                               "encoded_tokens")}
        for r in rows:
            meta, blob, encoded, tokens = [], bytearray(), 0, 0
            if r["status"] == "parsed":
                segs = _segments_from(r["segments"])
                bad = next((failed[s.sha256] for s in segs if s.sha256 in failed), None)
                if bad is not None:
                    r["status"], r["reason"] = "error", f"encoder failed: {bad}"
                else:
                    for s in dict((s.sha256, s) for s in segs if s.sha256 in fresh).values():
                        lat = fresh[s.sha256]
                        meta.append([s.sha256, lat.dtype, lat.shape[0], lat.shape[1], lat.ratio, len(lat.payload)])
                        blob += lat.payload
                        encoded += 1
                        tokens += s.n_tokens or 0
            for k in batch:
                out[k].append(r[k])
            out["latent_meta"].append(json.dumps(meta))
            out["latent_blob"].append(bytes(blob))
            out["encoded"].append(encoded)
            out["encoded_tokens"].append(tokens)
        return out

    def _encode(self, todo: dict[str, tuple[str, int]]) -> tuple[dict[str, LatentIn], dict[str, str]]:
        """Encode in the indexer's batch sizes and as it does (``encode_each``: a failing batch is retried
        text by text, so one bad text fails only its own documents)."""
        fresh: dict[str, LatentIn] = {}
        failed: dict[str, str] = {}
        items = [(sha, text, n) for sha, (text, n) in todo.items()]
        i = 0
        while i < len(items):
            chunk, tokens = [], 0
            while i < len(items) and (not chunk or (len(chunk) < self.config.batch_segments
                                                    and tokens + items[i][2] <= self.config.batch_tokens)):
                chunk.append(items[i])
                tokens += items[i][2]
                i += 1
            done, bad = encode_each(self.comp, chunk, self.config.windows_per_batch)
            fresh.update(done)
            failed.update({sha: f"{type(e).__name__}: {e}" for sha, e in bad.items()})
        return fresh, failed


def _latents_from(row: dict[str, Any], fingerprint: str) -> dict[str, LatentIn]:
    out, blob, at = {}, row["latent_blob"], 0
    for sha, dtype, n, dim, ratio, size in json.loads(row["latent_meta"]):
        out[sha] = LatentIn(bytes(blob[at:at + size]), dtype, (n, dim), fingerprint, ratio)
        at += size
    return out


# ------------------------------------------------------------------ cluster
def _ray():
    try:
        import ray
    except ImportError as e:
        raise RayUnavailable(INSTALL) from e
    return ray


def connect(opts: RayOptions) -> tuple[Any, bool]:
    """The ray module, connected; True where this call started the cluster (and should shut it down)."""
    ray = _ray()
    if ray.is_initialized():
        return ray, False
    try:
        if opts.address:
            ray.init(address=opts.address, log_to_driver=False)
        else:
            ray.init(num_cpus=opts.local_cpus or os.cpu_count() or 1, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - ConnectionError, RuntimeError, ...
        raise RayUnavailable(f"cannot start or reach the Ray cluster {opts.address or '(local)'}: {e}") from e
    return ray, True


def _sizes(ray, opts: RayOptions) -> tuple[float, float, float]:
    """CPUs per parser and encoder actor, GPUs per encoder actor."""
    res = ray.cluster_resources()
    gpus = opts.actor_gpus if opts.actor_gpus is not None else (1.0 if res.get("GPU", 0) >= 1 else 0.0)
    cpus = float(res.get("CPU", 1))
    if opts.actor_cpus is not None:
        return min(opts.actor_cpus, 1.0), opts.actor_cpus, gpus
    # leave one CPU to Ray Data's own tasks; share the rest among the actors
    share = max(0.1, (cpus - 1.0) / (opts.actors + opts.parsers))
    return min(share, 1.0), min(share, 8.0), gpus


# ------------------------------------------------------------------ driver
@dataclass
class _Work:
    doc_id: int
    path: str
    updated_at: float


class RayIndexer:
    """Runs the pipeline over documents and writes what comes back (the store, or shards)."""

    def __init__(self, settings: Settings, fingerprint: str, *, ratio: int | None = None,
                 config: IndexerConfig | None = None, options: RayOptions = RayOptions(),
                 callbacks: Iterable[ProgressCallback] = ()) -> None:
        self.settings = settings
        self.fingerprint = fingerprint
        self.ratio = ratio
        self.config = config or IndexerConfig()
        self.options = options
        self.callbacks = list(callbacks)

    def _dataset(self, ray, work: list[_Work], known: frozenset[str]):
        import ray.data

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False  # progress is ours, as for local indexing
        parse_cpus, enc_cpus, gpus = _sizes(ray, self.options)
        ds = ray.data.from_items([{"doc_id": w.doc_id, "path": w.path, "updated_at": w.updated_at} for w in work],
                                 override_num_blocks=max(1, min(len(work), 200)))
        ds = ds.map_batches(_Parser, fn_constructor_kwargs={"settings": self.settings, "config": self.config,
                                                            "cpus": parse_cpus},
                            batch_size=1, compute=ray.data.ActorPoolStrategy(size=self.options.parsers),
                            num_cpus=parse_cpus)
        enc_kw: dict[str, Any] = {"num_cpus": enc_cpus}
        if gpus:
            enc_kw["num_gpus"] = gpus
        if self.options.max_restarts is not None:
            enc_kw["max_restarts"] = self.options.max_restarts
        return ds.map_batches(_Encoder, fn_constructor_kwargs={
            "settings": self.settings, "ratio": self.ratio, "config": self.config, "known": [ray.put(known)],
            "cpus": enc_cpus, "fingerprint": self.fingerprint},
            batch_size=self.options.docs_per_batch or (32 if gpus else 4), compute=ray.data.ActorPoolStrategy(size=self.options.actors),
            **enc_kw)

    def run(self, work: list[_Work], write: Callable[[dict[str, Any]], DocOutcome], known: frozenset[str]) -> RayReport:
        report = RayReport()
        t0 = time.monotonic()
        if not work:
            return report
        ray, started = connect(self.options)
        done = 0
        try:
            for row in self._dataset(ray, work, known).iter_rows():
                outcome = write(row)
                done += 1
                if outcome.status == "indexed":
                    report.indexed += 1
                    report.segments += outcome.n_segments
                    report.encoded += int(row["encoded"])
                    report.tokens_encoded += int(row["encoded_tokens"])
                elif outcome.status in ("error", "skipped"):
                    report.failed += 1
                else:
                    report.left += 1
                self._emit(report, done, len(work), t0, outcome)
        except StoreUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - a lost worker, a node gone: what is written stays whole
            log.exception("the Ray run broke off")
            report.error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        finally:
            if started:
                ray.shutdown()
        report.left += len(work) - done
        report.seconds = time.monotonic() - t0
        self._emit(report, done, len(work), t0, None, idle=True)
        return report

    def _emit(self, r: RayReport, done: int, total: int, t0: float, outcome: DocOutcome | None,
              idle: bool = False) -> None:
        elapsed = time.monotonic() - t0
        rate = r.tokens_encoded / elapsed if r.tokens_encoded and elapsed > 0 else None
        eta = 0.0 if done >= total else (elapsed / done * (total - done) if done else None)
        p = Progress(done, total, r.failed, r.segments, r.encoded, r.segments - r.encoded, r.tokens_encoded, rate,
                     eta, elapsed, outcome.path if outcome else None, outcome, idle)
        for cb in self.callbacks:
            try:
                cb(p)
            except Exception:  # noqa: BLE001
                log.exception("progress callback %r failed", cb)


# ------------------------------------------------------------------ writers
def store_writer(store: LatentStore, fingerprint: str) -> Callable[[dict[str, Any]], DocOutcome]:
    """Commit one document as the local indexer does: one transaction, ``updated_at`` checked, or an error row."""

    def write(row: dict[str, Any]) -> DocOutcome:
        doc_id, path, updated_at = int(row["doc_id"]), str(row["path"]), float(row["updated_at"])
        status = row["status"]
        if status != "parsed":
            doc = store.get_document(doc_id)
            if doc is None:
                return DocOutcome(doc_id, path, "removed")
            if doc.updated_at != updated_at:
                return DocOutcome(doc_id, path, "pending", "changed while it was read; run again")
            store.set_status(doc_id, status, row["reason"])
            return DocOutcome(doc_id, path, status, row["reason"])
        segs = _segments_from(row["segments"])
        try:
            st = os.stat(path)
            if (st.st_size, st.st_mtime) != (row["size"], row["mtime"]):
                return DocOutcome(doc_id, path, "pending", "changed while it was read; run again")
        except FileNotFoundError:
            store.set_status(doc_id, "error", "file vanished while it was being read")
            return DocOutcome(doc_id, path, "error", "file vanished while it was being read")
        pages = int(row["page_count"])
        meta = DocumentMeta(size=int(row["size"]), mtime=float(row["mtime"]), sha256=row["sha256"], type=row["type"],
                            page_count=pages if pages >= 0 else None)
        try:
            store.replace_document_content(doc_id, segs, _latents_from(row, fingerprint), fingerprint=fingerprint,
                                           meta=meta, if_updated_at=updated_at)
        except (StaleDocumentError, ValueError):  # edited meanwhile, or reused latents deleted meanwhile
            return DocOutcome(doc_id, path, "pending", "changed while it was read; run again")
        except NotFound:
            return DocOutcome(doc_id, path, "removed")
        n_tokens = sum(s.n_tokens or 0 for s in segs)
        return DocOutcome(doc_id, path, "indexed", None, len(segs), int(row["encoded"]),
                          len({s.sha256 for s in segs}) - int(row["encoded"]), n_tokens, meta.page_count)

    return write


def index_store(store: LatentStore, settings: Settings, fingerprint: str, doc_ids: Iterable[int], *,
                ratio: int | None = None, config: IndexerConfig | None = None, options: RayOptions = RayOptions(),
                callbacks: Iterable[ProgressCallback] = ()) -> RayReport:
    """Index these documents of ``store`` on Ray; their rows end as the local indexer leaves them."""
    work = []
    for i in dict.fromkeys(doc_ids):
        d = store.get_document(i)
        if d is not None:
            work.append(_Work(d.id, d.path, d.updated_at))
    known = frozenset(store.latent_shas(fingerprint))
    ri = RayIndexer(settings, fingerprint, ratio=ratio, config=config, options=options, callbacks=callbacks)
    return ri.run(work, store_writer(store, fingerprint), known)


def index_to_shards(paths: Sequence[Path], directory: Path, settings: Settings, ident, *, ratio: int | None = None,
                    config: IndexerConfig | None = None, options: RayOptions = RayOptions(),
                    callbacks: Iterable[ProgressCallback] = (), target_bytes: int = 64 << 20) -> RayReport:
    """Encode files straight into shards under ``directory``, no store in between.

    A file already in a shard there (same path, size and mtime) is not done
    again, so a re-run after a lost worker finishes what is missing. Bad files
    are logged and reported, and left out of the shards.
    """
    from latent_store.shards import ShardDocument, ShardWriter, files_in, shard_paths

    done: set[tuple[str, int, float | None]] = set()
    for p in shard_paths([directory]) if directory.is_dir() else []:
        done |= files_in(p)
    work = []
    for i, p in enumerate(paths):
        st = p.stat()
        if (str(p), st.st_size, st.st_mtime) not in done:
            work.append(_Work(i, str(p), 0.0))
    writer = ShardWriter(directory, ident.header(), target_bytes=target_bytes, prefix=f"ray-{int(time.time())}")

    def write(row: dict[str, Any]) -> DocOutcome:
        path = str(row["path"])
        if row["status"] != "parsed":
            log.warning("%s: %s: %s", path, row["status"], row["reason"])
            return DocOutcome(int(row["doc_id"]), path, row["status"], row["reason"])
        segs = _segments_from(row["segments"])
        pages = int(row["page_count"])
        writer.add(ShardDocument(row["sha256"], path, int(row["size"]), float(row["mtime"]), row["type"],
                                 pages if pages >= 0 else None, segs, _latents_from(row, ident.fingerprint)))
        return DocOutcome(int(row["doc_id"]), path, "indexed", None, len(segs), int(row["encoded"]), 0,
                          sum(s.n_tokens or 0 for s in segs), pages if pages >= 0 else None)

    ri = RayIndexer(settings, ident.fingerprint, ratio=ratio, config=config, options=options, callbacks=callbacks)
    try:
        report = ri.run(work, write, frozenset())
    finally:
        written = writer.close()  # what came back before a break is kept: whole documents
    return replace(report, shards=written)
