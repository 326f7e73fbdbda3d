"""Decoder backend on llama.cpp: latents go in as input embeddings, document prefixes are cached.

Three things here beyond "run the model":

- Embedding scaling per architecture. Latents live in the decoder's input
  space, i.e. scaled as the model scales its own token embeddings (Gemma:
  times sqrt(n_embd)). llama.cpp applies that scale inside its graph to token
  ids, but for some architectures not to rows given through ``batch.embd``;
  :data:`EMBEDDING_SCALING` says, per GGUF ``general.architecture``, what the
  model does and what llama.cpp does to embedding input, so both paths meet.
- Token embedding rows (:meth:`LlamaCppDecoder.token_embeddings`) are read
  from the GGUF's ``token_embd.weight`` and dequantized row by row, on demand:
  the full fp32 matrix of a 262k vocabulary would be 670 MB.
- A prefix state cache (:class:`PrefixStateCache`): after a block (say, the
  documents' latents) is prefilled, the sequence's KV state and the
  next-token logits are stored under a hash of everything in the sequence so
  far, so the next question over the same documents restores it in
  milliseconds instead of prefilling again. The logits are stored because
  llama.cpp's sequence state does not hold them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import mmap
import os
import struct
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .backend import ContextLengthError, DecoderBackend
from .inputs import DecoderInputs, EmbedSpan, Part, TokenSpan
from .llama_ffi import ContextConfig, LlamaContext, LlamaError

log = logging.getLogger(__name__)


# --- embedding scaling -------------------------------------------------------------


@dataclass(frozen=True)
class EmbeddingScaling:
    """How one architecture scales input embeddings.

    model_scales: the model multiplies its token embedding rows by sqrt(n_embd)
        before the first layer (so the input space, where latents live, is the
        scaled one).
    llama_scales_embd: llama.cpp's graph applies that scale to ``batch.embd``
        rows too (then we must divide latents by it before handing them over).
    """

    model_scales: bool
    llama_scales_embd: bool = False

    def token_factor(self, n_embd: int) -> float:
        """Factor from a raw ``token_embd`` row to the input space."""
        return math.sqrt(n_embd) if self.model_scales else 1.0

    def embd_factor(self, n_embd: int) -> float:
        """Factor from an input-space row to what ``batch.embd`` must receive."""
        return 1.0 / math.sqrt(n_embd) if self.model_scales and self.llama_scales_embd else 1.0


# Keyed on GGUF general.architecture; read from llama.cpp's graph builders
# (src/models/*.cpp). gemma/gemma3 scale only token ids (`ubatch.token ?
# sqrtf(n_embd) : 1.0f`, verified here bit for bit on gemma3); gemma2 scales
# every input (read from source, not run here). The others never scale. An
# architecture not listed is refused rather than guessed: a wrong scale gives
# fluent nonsense, not an error.
EMBEDDING_SCALING: dict[str, EmbeddingScaling] = {
    "gemma": EmbeddingScaling(model_scales=True, llama_scales_embd=False),
    "gemma3": EmbeddingScaling(model_scales=True, llama_scales_embd=False),
    "gemma2": EmbeddingScaling(model_scales=True, llama_scales_embd=True),
    "llama": EmbeddingScaling(model_scales=False),
    "mistral3": EmbeddingScaling(model_scales=False),
    "qwen2": EmbeddingScaling(model_scales=False),
    "qwen3": EmbeddingScaling(model_scales=False),
    "qwen3moe": EmbeddingScaling(model_scales=False),
}


class UnsupportedArchitecture(LlamaError):
    """The GGUF's architecture has no entry in :data:`EMBEDDING_SCALING`."""


def embedding_scaling(arch: str | None) -> EmbeddingScaling:
    try:
        return EMBEDDING_SCALING[arch or ""]
    except KeyError:
        raise UnsupportedArchitecture(
            f"no embedding-scaling rule for architecture {arch!r} (known: {sorted(EMBEDDING_SCALING)}); "
            "add one to lclm_core.llama_backend.EMBEDDING_SCALING after checking llama.cpp's graph for it"
        ) from None


# --- token embedding rows straight from the GGUF -----------------------------------


class GGUFTensorRows:
    """Rows of one tensor of a GGUF file, dequantized on demand.

    A minimal reader of the GGUF header (v2/v3, little-endian): gguf's
    GGUFReader parses every metadata field into Python objects, ~10 s for a
    262k-token vocabulary; this skips them and memory-maps the tensor. The
    dequantization itself is gguf's (the same formulas as ggml).
    """

    _SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
    _STRING, _ARRAY = 8, 9

    def __init__(self, path: str | Path, name: str) -> None:
        import gguf

        self.path = Path(path)
        with open(self.path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        buf = self._map
        if buf[:4] != b"GGUF":
            raise ValueError(f"{self.path} is not a GGUF file")
        version, n_tensors, n_kv = struct.unpack_from("<IQQ", buf, 4)
        if version not in (2, 3):
            raise ValueError(f"{self.path}: GGUF version {version} is not supported")
        off, alignment = 24, 32
        for _ in range(n_kv):
            key, off = self._string(buf, off)
            (vtype,) = struct.unpack_from("<I", buf, off)
            off += 4
            if key == "general.alignment" and vtype == 4:
                (alignment,) = struct.unpack_from("<I", buf, off)
            off = self._skip_value(buf, off, vtype)
        found = None
        for _ in range(n_tensors):
            tname, off = self._string(buf, off)
            (n_dims,) = struct.unpack_from("<I", buf, off)
            dims = struct.unpack_from(f"<{n_dims}Q", buf, off + 4)
            qtype, toff = struct.unpack_from("<IQ", buf, off + 4 + 8 * n_dims)
            off += 4 + 8 * n_dims + 12
            if tname == name:
                found = (dims, qtype, toff)
        if found is None:
            raise KeyError(f"{self.path} has no tensor {name!r}")
        data_start = (off + alignment - 1) // alignment * alignment
        dims, qtype, toff = found
        self.qtype = gguf.GGMLQuantizationType(qtype)
        block, type_size = gguf.GGML_QUANT_SIZES[self.qtype]
        self.n_cols, self.n_rows = int(dims[0]), int(np.prod(dims[1:], dtype=np.int64))
        self.row_bytes = self.n_cols // block * type_size
        self._data = np.frombuffer(buf, dtype=np.uint8, count=self.n_rows * self.row_bytes, offset=data_start + toff)
        self._data = self._data.reshape(self.n_rows, self.row_bytes)

    @staticmethod
    def _string(buf, off: int) -> tuple[str, int]:
        (n,) = struct.unpack_from("<Q", buf, off)
        return bytes(buf[off + 8 : off + 8 + n]).decode("utf-8", "replace"), off + 8 + n

    def _skip_value(self, buf, off: int, vtype: int) -> int:
        if vtype in self._SCALAR:
            return off + self._SCALAR[vtype]
        if vtype == self._STRING:
            (n,) = struct.unpack_from("<Q", buf, off)
            return off + 8 + n
        if vtype == self._ARRAY:
            etype, count = struct.unpack_from("<IQ", buf, off)
            off += 12
            if etype in self._SCALAR:
                return off + count * self._SCALAR[etype]
            for _ in range(count):
                off = self._skip_value(buf, off, etype)
            return off
        raise ValueError(f"{self.path}: unknown GGUF value type {vtype}")

    def rows(self, ids: Sequence[int]) -> np.ndarray:
        """(len(ids), n_cols) float32 rows."""
        import gguf

        idx = np.asarray(ids, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_rows):
            raise IndexError(f"row id out of range [0, {self.n_rows})")
        raw = self._data[idx]
        if self.qtype in (gguf.GGMLQuantizationType.F32,):
            return raw.view(np.float32).reshape(len(idx), self.n_cols).copy()
        return gguf.quants.dequantize(raw, self.qtype).reshape(len(idx), self.n_cols).astype(np.float32, copy=False)


# --- prefix state cache ----------------------------------------------------------


@dataclass(frozen=True)
class CachedPrefix:
    """A sequence state and what it needs to go on: positions held and next-token logits."""

    n_past: int
    logits: np.ndarray  # (n_vocab,) float32
    state: bytes

    @property
    def nbytes(self) -> int:
        return len(self.state) + self.logits.nbytes


class PrefixStateCache:
    """LRU of :class:`CachedPrefix` bounded by bytes, optionally backed by a directory.

    Keys are hex digests that already cover the model and the whole sequence
    content (the backend makes them), so the cache can be shared by backends
    of different models and kept on disk across runs. A disk entry is one file
    ``<key>.lcps`` written atomically; the directory is trimmed to
    ``max_disk_bytes`` by last use.
    """

    _MAGIC = b"LCPS1\n"

    def __init__(self, max_bytes: int = 1 << 30, directory: str | Path | None = None, max_disk_bytes: int = 4 << 30) -> None:
        self.max_bytes, self.max_disk_bytes = int(max_bytes), int(max_disk_bytes)
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._mem: OrderedDict[str, CachedPrefix] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._mem)

    def __contains__(self, key: str) -> bool:
        path = self._file(key)
        return key in self._mem or (path is not None and path.exists())

    def _file(self, key: str) -> Path | None:
        return self.directory / f"{key}.lcps" if self.directory is not None else None

    def get(self, key: str) -> CachedPrefix | None:
        entry = self._mem.get(key)
        if entry is not None:
            self._mem.move_to_end(key)
        else:
            entry = self._read(key)
            if entry is not None:
                self._remember(key, entry)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def put(self, key: str, entry: CachedPrefix) -> None:
        self._remember(key, entry)
        self._write(key, entry)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._mem.clear()
        self.bytes = 0

    def _remember(self, key: str, entry: CachedPrefix) -> None:
        if entry.nbytes > self.max_bytes:
            return
        old = self._mem.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
        self._mem[key] = entry
        self.bytes += entry.nbytes
        while self.bytes > self.max_bytes:
            _, dropped = self._mem.popitem(last=False)
            self.bytes -= dropped.nbytes

    def _write(self, key: str, entry: CachedPrefix) -> None:
        path = self._file(key)
        if path is None or entry.nbytes > self.max_disk_bytes:
            return
        header = json.dumps({"n_past": entry.n_past, "n_vocab": int(entry.logits.shape[0]), "state": len(entry.state)})
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                f.write(self._MAGIC + header.encode() + b"\n")
                f.write(np.ascontiguousarray(entry.logits, dtype="<f4").tobytes())
                f.write(entry.state)
            os.replace(tmp, path)
        except OSError as e:  # a full disk costs the cache, never the answer
            log.warning("could not write prefix cache file %s: %s", path, e)
            tmp.unlink(missing_ok=True)
            return
        self._trim_disk()

    def _read(self, key: str) -> CachedPrefix | None:
        path = self._file(key)
        if path is None or not path.exists():
            return None
        try:
            with open(path, "rb") as f:
                if f.read(len(self._MAGIC)) != self._MAGIC:
                    raise ValueError("bad magic")
                h = json.loads(f.readline(4096))
                logits = np.frombuffer(f.read(4 * int(h["n_vocab"])), dtype="<f4").astype(np.float32)
                state = f.read(int(h["state"]) + 1)
            if logits.shape[0] != h["n_vocab"] or len(state) != h["state"]:
                raise ValueError("truncated or overlong")
            os.utime(path)  # last use, for trimming
            return CachedPrefix(int(h["n_past"]), logits, state)
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("ignoring unreadable prefix cache file %s: %s", path, e)
            path.unlink(missing_ok=True)
            return None

    def _trim_disk(self) -> None:
        assert self.directory is not None
        files = sorted(self.directory.glob("*.lcps"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        for p in files:
            if total <= self.max_disk_bytes:
                break
            total -= p.stat().st_size
            p.unlink(missing_ok=True)


# --- the backend --------------------------------------------------------------------


def file_fingerprint(path: Path, probe: int = 1 << 20) -> str:
    """A cheap identity of a model file: its size and its first and last MiB.

    The GGUF header (metadata, tensor table) sits at the start and weights run
    to the end, so another model, quantization or conversion changes it;
    hashing a multi-GB file at every start would not be cheap.
    """
    h = hashlib.sha256()
    size = path.stat().st_size
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(probe))
        f.seek(max(0, size - probe))
        h.update(f.read(probe))
    return h.hexdigest()


_Prepared = tuple[str, np.ndarray]  # ("T", int32 ids) | ("E", float32 (n, n_embd) rows as batch.embd gets them)


class LlamaCppDecoder(DecoderBackend):
    """A GGUF model in llama.cpp as a :class:`DecoderBackend`.

    The HF tokenizer must be the GGUF's own vocabulary (the same ids); the
    backend owns its llama.cpp context and frees it on close(). Not
    thread-safe: one sequence, one caller.

    prefix_cache: where :meth:`prefill_cached` keeps states (None: no caching).
    fingerprint: identity of the model file for cache keys (default: a cheap
        digest of the file; pass a known sha256 where there is one).
    """

    name = "llama.cpp"

    def __init__(
        self,
        gguf_path: str | Path,
        tokenizer,
        memory_tokens=None,
        *,
        n_ctx: int | None = None,
        n_batch: int = 512,
        n_threads: int | None = None,
        prefix_cache: PrefixStateCache | None = None,
        fingerprint: str | None = None,
        context: ContextConfig | None = None,
        lora: tuple[tuple[str, float], ...] = (),
    ) -> None:
        super().__init__(tokenizer, memory_tokens)
        cfg = context or ContextConfig(n_ctx=n_ctx, n_batch=n_batch, n_ubatch=n_batch, n_threads=n_threads, lora=lora)
        self.path = Path(gguf_path)
        self.ctx = LlamaContext(self.path, cfg)
        try:
            self.arch = self.ctx.meta("general.architecture") or ""
            self.scaling = embedding_scaling(self.arch)
            self._token_factor = np.float32(self.scaling.token_factor(self.ctx.n_embd))
            self._embd_factor = np.float32(self.scaling.embd_factor(self.ctx.n_embd))
            specials = self.ctx.special_ids()
            self.eos_ids |= {specials[k] for k in ("eos", "eot") if specials[k] >= 0}
            self.prefix_cache = prefix_cache
            # Cached prefix states hold the adapted model's keys and values: a LoRA is part of the model's identity.
            model_id = ":".join([fingerprint or file_fingerprint(self.path),
                                 *(f"{file_fingerprint(Path(a))}x{w}" for a, w in cfg.lora)])
            # The state layout depends on the llama.cpp build and context shape, too.
            import llama_cpp

            self.fingerprint = hashlib.sha256(
                json.dumps([model_id, llama_cpp.__version__, self.ctx.n_ctx, self.ctx.n_batch]).encode()
            ).hexdigest()
        except BaseException:
            self.ctx.close()
            raise
        self._rows: GGUFTensorRows | None = None
        self._hasher = self._fresh_hasher()

    # --- DecoderBackend ----------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.ctx.n_ctx

    @property
    def hidden_size(self) -> int:
        return self.ctx.n_embd

    def token_embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        """(n, n_embd) float32 rows in the input space (Gemma: times sqrt(n_embd), as its graph does)."""
        if self._rows is None:
            self._rows = GGUFTensorRows(self.path, "token_embd.weight")
        rows = self._rows.rows(list(ids))
        if self._token_factor != 1:
            rows = rows * self._token_factor
        return torch.from_numpy(rows)

    def reset(self) -> None:
        self.ctx.clear()
        self.n_past = 0
        self._hasher = self._fresh_hasher()

    def close(self) -> None:
        self.ctx.close()
        self._rows = None

    def _forward(self, span: TokenSpan | EmbedSpan, want_logits: bool) -> torch.Tensor | None:
        prepared = self._prepare(span)
        self._feed(prepared, want_logits)
        return torch.from_numpy(self.ctx.logits()) if want_logits else None

    # --- prefix cache --------------------------------------------------------------
    def prefill_cached(self, *blocks: DecoderInputs | Sequence[Part]) -> torch.Tensor:
        """Prefill blocks in order, restoring the longest already-cached run of them.

        After each block the sequence state is stored under a key that covers
        the model and everything in the sequence up to that block, so calling
        this again with the same blocks (from the same starting sequence)
        restores instead of recomputing. Typical use: ``prefill_cached(docs)``,
        then ``prefill(question)``. Returns the next-token logits, like prefill().
        """
        if not blocks:
            raise ValueError("nothing to prefill")
        built = [
            b if isinstance(b, DecoderInputs) else self.build(b, add_bos=self.n_past == 0 and i == 0)
            for i, b in enumerate(blocks)
        ]
        total = sum(len(b) for b in built)
        if total == 0:
            raise ValueError("nothing to prefill")
        if self.n_past + total > self.n_ctx:
            raise ContextLengthError(total, self.n_ctx, self.n_past)
        prepared = [[self._prepare(s) for s in b.spans] for b in built]
        hashers, h = [], self._hasher.copy()
        for spans in prepared:
            for p in spans:
                self._hash(h, p)
            hashers.append(h.copy())
        start, logits = 0, None
        self.last_prefix_hit = 0
        if self.prefix_cache is not None:
            for i in range(len(built) - 1, -1, -1):
                entry = self.prefix_cache.get(hashers[i].hexdigest())
                if entry is not None and self._restore(entry, hashers[i]):
                    start, logits = i + 1, torch.from_numpy(entry.logits.copy())
                    self.last_prefix_hit = entry.n_past
                    log.debug("prefix cache hit: %d positions restored", entry.n_past)
                    break
        for i in range(start, len(built)):
            for j, p in enumerate(prepared[i]):
                self._feed(p, want_logits=j == len(prepared[i]) - 1)
            out = self.ctx.logits()
            logits = torch.from_numpy(out)
            if self.prefix_cache is not None:
                self.prefix_cache.put(hashers[i].hexdigest(), CachedPrefix(self.n_past, out.copy(), self.ctx.state_get()))
        assert logits is not None
        return logits

    def _restore(self, entry: CachedPrefix, hasher) -> bool:
        """Put a cached state in place; False (sequence empty again) if llama.cpp refuses it.

        A refused state leaves the sequence empty. That is harmless when the
        caller started from an empty sequence (we prefill from scratch); if it
        had content of its own, that content is gone and we say so.
        """
        had = self.n_past
        try:
            self.ctx.state_set(entry.state)
            if self.ctx.pos_max() != entry.n_past - 1:
                raise LlamaError(f"restored state holds {self.ctx.pos_max() + 1} positions, expected {entry.n_past}")
        except LlamaError as e:
            self.reset()
            if had:
                raise LlamaError(f"restoring a cached prefix failed ({e}); the sequence was reset, prefill it again") from e
            log.warning("prefix cache entry not restorable, prefilling instead: %s", e)
            return False
        self.n_past = entry.n_past
        self._hasher = hasher.copy()
        return True

    def state_key(self) -> str:
        """The cache key of the sequence as it stands (model + everything fed since reset)."""
        return self._hasher.hexdigest()

    # --- checks -------------------------------------------------------------------------
    def check_embedding_path(self, ids: Sequence[int] | None = None) -> float:
        """Max |logit difference| between feeding ids as tokens and as their input-space rows.

        0.0 (or float noise) means the scaling table is right for this model;
        a large value means it is not. Resets the sequence.
        """
        ids = list(ids) if ids is not None else [self.builder.bos_id or 0]
        self.reset()
        self.ctx.decode_tokens(ids, 0)
        a = self.ctx.logits()
        self.ctx.clear()
        self.ctx.decode_embeddings(self.token_embeddings(ids).numpy() * self._embd_factor, 0)
        b = self.ctx.logits()
        self.reset()
        return float(np.abs(a - b).max())

    # --- internals ----------------------------------------------------------------------
    def _fresh_hasher(self):
        return hashlib.sha256(b"lclm-llama-prefix-v1\0" + self.fingerprint.encode())

    def _prepare(self, span: TokenSpan | EmbedSpan) -> _Prepared:
        if isinstance(span, TokenSpan):
            return "T", np.asarray(span.ids, dtype=np.int32)
        rows = span.embeds.detach().to("cpu", torch.float32).numpy()
        if rows.ndim != 2 or rows.shape[1] != self.ctx.n_embd:
            raise ValueError(f"latents are {tuple(rows.shape)}, but this decoder takes rows of {self.ctx.n_embd}")
        if self._embd_factor != 1:
            rows = rows * self._embd_factor
        return "E", np.ascontiguousarray(rows, dtype=np.float32)

    @staticmethod
    def _hash(h, p: _Prepared) -> None:
        kind, arr = p
        h.update(f"{kind}{arr.shape}".encode())
        h.update(arr.tobytes())

    def _feed(self, p: _Prepared, want_logits: bool) -> None:
        kind, arr = p
        n = arr.shape[0]
        if self.n_past + n > self.n_ctx:
            raise ContextLengthError(n, self.n_ctx, self.n_past)
        try:
            if kind == "T":
                self.ctx.decode_tokens(arr, self.n_past, want_logits)
            else:
                self.ctx.decode_embeddings(arr, self.n_past, want_logits)
        except LlamaError as e:
            # A failed decode may leave part of the span in the KV cache: the
            # sequence is no longer what n_past says, so start over.
            self.reset()
            raise LlamaError(f"{e}; the sequence was reset") from e
        self._hash(self._hasher, p)
        self.n_past += n


def open_default(tokenizer=None, ratio: int | None = None, parts_dir: Path | None = None, **kw) -> LlamaCppDecoder:
    """The embedded default (Gemma-3-270M Q4_K_M) in llama.cpp.

    tokenizer: the default decoder's HF tokenizer; when None it comes from
    ``load_default_decoder()`` (which also loads the torch model, shared with
    the rest of the process).
    ratio: the decoder that reads that ratio's latents: with the decoder
    stage's LoRA where the shipped parts carry one (as a GGUF adapter).
    """
    from .default_model import decoder_lora_gguf, ensure_gguf, gguf_sha256, load_default_decoder

    if tokenizer is None:
        tokenizer = load_default_decoder()[1]
    kw.setdefault("fingerprint", gguf_sha256())
    lora = decoder_lora_gguf(ratio, parts_dir) if ratio is not None else None
    if lora:
        kw["lora"] = ((str(lora), 1.0),)
    return LlamaCppDecoder(ensure_gguf(), tokenizer, **kw)
