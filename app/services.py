"""Composition of the indexing side: one store, one compressor, one indexer, a watcher.

The CLI and the UI build these here (from ``Settings``) instead of wiring
modules themselves, so both get the same behaviour: state under
``settings.data_dir``, the reconcile scan before indexing, documents left
pending by a crash or by a model change queued at start.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
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
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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


def _under(path: str, roots: Iterable[Path]) -> bool:
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
        return cls(store, indexer, sync, folders, files, watcher)

    def start(self, *, retry_failed: bool = False) -> "IndexingService":
        """Scan the folders (and register them, when watching), queue what
        needs work, start the worker (and the watcher). ``retry_failed``:
        files that ended in error or skipped are tried again (``index`` does:
        naming a file is asking for it), else they wait for a change."""
        if self.watcher is not None:
            for f in self.folders:
                self.store.add_folder(str(f))  # `watch` with no PATH watches these again
        if self.watcher is not None:
            self.watcher.start()  # schedules observers, then reconciles
        else:
            for f in self.folders:
                r = self.sync.reconcile(f)
                for name in ("added", "changed", "touched", "unchanged", "deleted", "moved"):
                    setattr(self.report, name, getattr(self.report, name) + getattr(r, name))
        for f in self.files:
            if self.sync.sync_file(f, self.report) is None:
                log.warning("%s is not a supported document (or a temporary/hidden file); skipped", f)
        # interrupted runs and latents from another compressor, under these paths only
        roots = self.folders + self.files
        self.indexer.enqueue(d.id for d in self.store.documents_needing_work(self.indexer.fingerprint)
                             if _under(d.path, roots))
        if retry_failed:  # the user may have raised a limit or installed a missing package
            self.indexer.enqueue(d.id for d in self.store.list_documents(status=("error", "skipped"))
                                 if _under(d.path, roots))
        self.indexer.start()  # after the scan, so its report comes before the first document line
        return self

    def close(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        self.indexer.close()

    def __enter__(self) -> "IndexingService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_assistant(settings: Settings, store: LatentStore, *, ratio: int | None = None, backend: str | None = None,
                   config=None):
    """An :class:`~app.assistant.Assistant` over ``store`` with the default compressor's decoder.

    The torch backend shares the compressor's loaded model (its attention
    scorer needs torch); ``llama.cpp`` opens the GGUF in llama.cpp, which
    prefills and generates faster on a CPU but cannot read attention.
    """
    from lclm_core.torch_backend import TorchDecoder

    from .assistant import Assistant, AssistantConfig

    comp = load_compressor(settings, ratio)
    name = backend or settings.backend
    memory = comp.config.memory_tokens
    if name == "torch":
        from lclm_core.default_model import load_default_decoder
        from lclm_core.device import resolve

        model, tok = load_default_decoder(resolve(settings.device, settings.dtype))
        dec = TorchDecoder(model, tok, memory, n_ctx=32768)
    elif name in ("llama.cpp", "llama"):
        try:
            from lclm_core.llama_backend import PrefixStateCache, open_default
        except ImportError as e:  # llama-cpp-python missing or broken
            raise ServiceError(f"the llama.cpp backend is unavailable ({e}); use --backend torch") from e
        dec = open_default(comp.tokenizer, prefix_cache=PrefixStateCache(), memory_tokens=memory)
    else:
        raise ServiceError(f"unknown backend {name!r}: torch or llama.cpp")
    return Assistant(store, dec, comp.fingerprint, config or AssistantConfig(), count_tokens=comp.count_tokens)
