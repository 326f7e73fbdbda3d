"""Composition of the indexing side: one store, one compressor, one indexer, a watcher.

The CLI and the UI build these here (from ``Settings``) instead of wiring
modules themselves, so both get the same behaviour: state under
``settings.data_dir``, the reconcile scan before indexing, documents left
pending by a crash or by a model change queued at start.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from latent_store import LatentStore

from .indexer import Compressor, Indexer, IndexerConfig, ProgressCallback
from .settings import Settings
from .watcher import FolderSync, FolderWatcher, SyncReport, normalize

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """Something the user must fix (bad device, missing model package); the message says what."""


def open_store(settings: Settings) -> LatentStore:
    """The store in the data directory (created if missing); StoreUnavailable says why it cannot be."""
    return LatentStore(settings.store_path)


def load_compressor(settings: Settings, ratio: int | None = None) -> Compressor:
    """The default compressor at ratio N on the settings' device (loads the model: seconds)."""
    from lclm_core.default_model import DefaultModelError, default_compressor
    from lclm_core.device import resolve

    try:
        placement = resolve(settings.device, settings.dtype)
        comp = default_compressor(ratio or settings.ratio, placement)
    except (ValueError, DefaultModelError) as e:
        raise ServiceError(str(e)) from e
    if not comp.trained:
        log.warning("the default compressor is untrained: its latents carry no learned content yet")
    return comp


def load_compressor_only(settings: Settings, ratio: int | None = None) -> Compressor:
    """The compressor the settings name, without a checkpoint's decoder: what an encoding worker needs."""
    if not settings.checkpoint:
        return load_compressor(settings, ratio)
    from lclm_core.checkpoint import CheckpointError, load_checkpoint
    from lclm_core.device import resolve

    try:
        return load_checkpoint(settings.checkpoint, resolve(settings.device, settings.dtype), load_decoder=False).compressor
    except (CheckpointError, ValueError, OSError) as e:
        raise ServiceError(f"cannot load the checkpoint {settings.checkpoint}: {e}") from e


def load_tokenizer(settings: Settings):
    """The compressor's tokenizer alone (segments are cut in its tokens): what a parsing worker needs."""
    from transformers import AutoTokenizer

    if settings.checkpoint:
        from lclm_core.checkpoint import CheckpointError, resolve_checkpoint_dir

        try:
            return AutoTokenizer.from_pretrained(resolve_checkpoint_dir(settings.checkpoint) / "encoder")
        except (CheckpointError, OSError) as e:
            raise ServiceError(f"cannot load the checkpoint {settings.checkpoint}'s tokenizer: {e}") from e
    from lclm_core.default_model import DefaultModelError, default_tokenizer

    try:
        return default_tokenizer()
    except DefaultModelError as e:
        raise ServiceError(str(e)) from e


def base_model_sha256(settings: Settings) -> str:
    """The decoder's base weights, by sha256: the pinned GGUF of the default, or a checkpoint's decoder files."""
    if not settings.checkpoint:
        from lclm_core.default_model import gguf_sha256

        return gguf_sha256()
    from lclm_core.checkpoint import files_digest, resolve_checkpoint_dir

    dec = resolve_checkpoint_dir(settings.checkpoint) / "decoder"
    return files_digest(sorted(p for p in dec.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf")))


def path_under(path: str, roots: Iterable[Path]) -> bool:
    p = Path(path)
    return any(p == r or r in p.parents for r in roots)


@dataclass
class IndexingService:
    """A store, its indexer and the folder sync for a set of paths.

    ``paths`` may hold folders (scanned recursively, and watched when
    ``watch``) and single files (indexed where they are).
    """

    store: LatentStore
    indexer: Indexer
    sync: FolderSync
    folders: list[Path]
    files: list[Path]
    watcher: FolderWatcher | None = None
    report: SyncReport = field(default_factory=SyncReport)
    debounce_s: float = 0.5
    rescan_s: float | None = 600.0
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @classmethod
    def create(
        cls,
        store: LatentStore,
        compressor: Compressor,
        paths: Iterable[str | os.PathLike[str]],
        *,
        config: IndexerConfig | None = None,
        callbacks: Iterable[ProgressCallback] = (),
        watch: bool = False,
        debounce_s: float = 0.5,
        rescan_s: float | None = 600.0,
    ) -> "IndexingService":
        folders, files = [], []
        for raw in paths:
            p = normalize(raw)
            if p.is_dir():
                folders.append(p)
            elif p.is_file():
                files.append(p)
            else:
                raise ServiceError(f"{raw}: no such file or folder")
        if watch and files:
            raise ServiceError(f"watch takes folders, not files: {', '.join(map(str, files))}")
        indexer = Indexer(store, compressor, config, callbacks)
        sync = FolderSync(store, folders + [f.parent for f in files], enqueue=indexer.enqueue)
        watcher = FolderWatcher(sync, debounce_s=debounce_s, rescan_s=rescan_s) if watch else None
        return cls(store, indexer, sync, folders, files, watcher, debounce_s=debounce_s, rescan_s=rescan_s)

    def start(self, *, retry_failed: bool = False) -> "IndexingService":
        """Scan the folders (and register them, when watching), queue what
        needs work, start the worker (and the watcher). ``retry_failed``:
        files that ended in error or skipped are tried again (``index`` does:
        naming a file is asking for it), else they wait for a change."""
        if self.watcher is not None:
            for f in self.folders:
                self.store.add_folder(str(f))  # `watch` with no PATH watches these again
            self.watcher.start()  # schedules observers, then reconciles
        self.indexer.enqueue(self.scan(retry_failed=retry_failed, reconcile=self.watcher is None))
        self.indexer.start()  # after the scan, so its report comes before the first document line
        return self

    def scan(self, *, retry_failed: bool = False, reconcile: bool = True) -> list[int]:
        """Make the store agree with the paths; the ids of the documents under them that need work.

        Work: new and edited files, runs interrupted, latents from another
        compressor, and with ``retry_failed`` files that ended in error or
        skipped. The Ray indexer takes this list instead of the local queue.
        """
        if reconcile:
            for f in self.folders:
                r = self.sync.reconcile(f)
                for name in ("added", "changed", "touched", "unchanged", "deleted", "moved"):
                    setattr(self.report, name, getattr(self.report, name) + getattr(r, name))
        for f in self.files:
            if self.sync.sync_file(f, self.report) is None:
                log.warning("%s is not a supported document (or a temporary/hidden file); skipped", f)
        roots = self.folders + self.files
        ids = [d.id for d in self.store.documents_needing_work(self.indexer.fingerprint) if path_under(d.path, roots)]
        if retry_failed:  # the user may have raised a limit or installed a missing package
            ids += [d.id for d in self.store.list_documents(status=("error", "skipped")) if path_under(d.path, roots)]
        return list(dict.fromkeys(ids))

    def add_folder(self, path: str | os.PathLike[str]) -> Path:
        """Watch one more folder from now on: registered in the store, scanned,
        its documents queued. The watcher is rebuilt over the new set of roots
        (watchdog schedules per root; a rebuild is simpler than patching one)."""
        p = normalize(path)
        if not p.is_dir():
            raise ServiceError(f"{path}: no such folder")
        with self._lock:
            self.store.add_folder(str(p))
            if p not in self.folders:
                self.folders.append(p)
            self._rewatch()
        return p

    def remove_folder(self, path: str | os.PathLike[str], *, forget: bool = True) -> int:
        """Stop watching a folder; ``forget`` also drops its documents and their
        latents from the store (the files on disk are never touched). Returns
        the number of documents dropped."""
        key = str(normalize(path))
        with self._lock:
            self.folders = [f for f in self.folders if str(f) != key]
            n = self.store.remove_folder(key, delete_documents=forget)
            if key != str(path):  # registered under the name the user typed
                n += self.store.remove_folder(str(path), delete_documents=forget)
            self._rewatch()
        return n

    def _rewatch(self) -> None:
        sync = FolderSync(self.store, self.folders + [f.parent for f in self.files], enqueue=self.indexer.enqueue)
        watching = self.watcher is not None
        if self.watcher is not None:
            self.watcher.stop()
        self.sync = sync
        if watching:
            self.watcher = FolderWatcher(sync, debounce_s=self.debounce_s, rescan_s=self.rescan_s).start()
        else:
            for f in self.folders:
                sync.reconcile(f)

    def reindex(self, document_ids: Iterable[int] | None = None) -> int:
        """Queue documents again (all under the folders when None), errors
        included: the user may have fixed a file or raised a limit. Unchanged
        segments keep their latents, so this costs only the parse."""
        roots = self.folders + self.files
        if document_ids is None:
            document_ids = [d.id for d in self.store.list_documents() if path_under(d.path, roots)]
        return self.indexer.enqueue(list(document_ids))

    def close(self) -> None:
        with self._lock:
            if self.watcher is not None:
                self.watcher.stop()
        self.indexer.close()

    def __enter__(self) -> "IndexingService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Models:
    """A compressor and a way to open decoders that read its latents.

    Either the embedded default (compressor at ratio N over the Gemma
    decoder) or a published LCLM checkpoint (its own encoder, adapter and
    decoder; its ratio is fixed by the checkpoint).
    """

    compressor: Compressor
    open_backend: Callable[[str], object]
    source: str  # what the user sees: "embedded default, N=4" or the checkpoint's path


def load_models(settings: Settings, *, ratio: int | None = None) -> Models:
    """The compressor and decoder factory that ``settings`` name (loads weights: seconds)."""
    if settings.checkpoint:
        return _checkpoint_models(settings)
    comp = load_compressor(settings, ratio)

    def open_backend(name: str):
        from lclm_core.torch_backend import TorchDecoder

        memory = comp.config.memory_tokens
        if name == "torch":
            from lclm_core.default_model import load_default_decoder
            from lclm_core.device import resolve

            # The decoder that reads this ratio's latents (the base, or a copy with the
            # decoder stage's LoRA where the parts carry one).
            model, tok = load_default_decoder(resolve(settings.device, settings.dtype), ratio=n)
            return TorchDecoder(model, tok, memory, n_ctx=32768)
        if name in ("llama.cpp", "llama"):
            try:
                from lclm_core.llama_backend import PrefixStateCache, open_default
            except ImportError as e:  # llama-cpp-python missing or broken
                raise ServiceError(f"the llama.cpp backend is unavailable ({e}); use the torch backend") from e
            return open_default(comp.tokenizer, prefix_cache=PrefixStateCache(), memory_tokens=memory, ratio=n)
        raise ServiceError(f"unknown backend {name!r}: torch or llama.cpp")

    n = int(getattr(comp, "ratio", None) or comp.config.compression_ratio)
    return Models(comp, open_backend, f"embedded default, N={n}")


def _checkpoint_models(settings: Settings) -> Models:
    from lclm_core.checkpoint import CheckpointError, load_checkpoint
    from lclm_core.device import resolve

    try:
        loaded = load_checkpoint(settings.checkpoint, resolve(settings.device, settings.dtype))
    except (CheckpointError, ValueError, OSError) as e:
        raise ServiceError(f"cannot load the checkpoint {settings.checkpoint}: {e}") from e

    def open_backend(name: str):
        if name != "torch":
            raise ServiceError("a published checkpoint runs on the torch backend here; for llama.cpp convert its "
                               "decoder (lclm-docs convert-decoder) and use it from Python (lclm_core.convert)")
        return loaded.torch_backend()

    n = loaded.compressor.config.compression_ratio
    return Models(loaded.compressor, open_backend, f"checkpoint {loaded.path}, N={n}")


def open_assistant(settings: Settings, store: LatentStore, *, ratio: int | None = None, backend: str | None = None,
                   config=None, models: Models | None = None):
    """An :class:`~app.assistant.Assistant` over ``store`` with the compressor's decoder.

    The torch backend shares the default compressor's loaded model (its
    attention scorer needs torch); ``llama.cpp`` opens the GGUF in llama.cpp,
    which prefills and generates faster on a CPU but cannot read attention.
    """
    from .assistant import Assistant, AssistantConfig

    models = models or load_models(settings, ratio=ratio)
    comp = models.compressor
    dec = models.open_backend(backend or settings.backend)
    return Assistant(store, dec, comp.fingerprint, config or AssistantConfig(), count_tokens=comp.count_tokens)
