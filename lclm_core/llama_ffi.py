"""The one module that touches llama.cpp's C API (through llama-cpp-python's ctypes layer).

Why not the high-level ``llama_cpp.Llama``: it has no embedding input (latents
must go in through ``llama_batch.embd``), its ``save_state()`` copies the full
score matrix (GBs), and it loads models with the default buffer types, whose
AMX matmul segfaults on Xeons with AMX (DESIGN.md 4). Here one object owns the
model, the context and two batches (one for token ids, one for embedding rows,
since llama.cpp allocates a batch for one or the other), frees them exactly
once, and turns every failing return code into a Python exception.

Everything is one sequence (seq_id 0). Positions are the caller's business:
the decoder backend above tracks how many are in use.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import llama_cpp as C
import numpy as np

log = logging.getLogger(__name__)

_SEQ = 0  # the only sequence we use

# ggml_log_level -> logging level. llama.cpp is chatty (every tensor at load):
# all of it goes to debug except its errors, which usually explain an exception
# raised right after.
_ERROR = 4
_CONT = 5


class LlamaError(RuntimeError):
    """llama.cpp refused or failed an operation; the message says which and why."""


class LlamaDecodeError(LlamaError):
    """llama_decode returned non-zero. ``rc`` is its return code."""

    _MEANING = {
        1: "no KV-cache slot for the batch (the context is full)",
        2: "aborted",
        -1: "invalid input batch (positions out of order or a bad token id)",
    }

    def __init__(self, rc: int, n: int, pos0: int) -> None:
        self.rc = rc
        what = self._MEANING.get(rc, "fatal error inside llama.cpp")
        super().__init__(f"llama_decode failed with {rc} ({what}) for {n} inputs at positions {pos0}..{pos0 + n - 1}")


class _LogRouter:
    """Collects llama.cpp's log fragments into lines and hands them to ``logging``.

    Installed once per process (llama_log_set is global); the ctypes callback
    object is kept alive here, since C holds only a raw pointer to it.
    """

    def __init__(self) -> None:
        self.buf = ""
        self.level = logging.DEBUG
        self.callback = C.llama_log_callback(self._on_log)

    def _on_log(self, level: int, text: bytes | None, _user: ctypes.c_void_p) -> None:
        try:
            if level != _CONT:
                self.level = logging.ERROR if level == _ERROR else logging.DEBUG
            self.buf += (text or b"").decode("utf-8", "replace")
            while "\n" in self.buf:
                line, self.buf = self.buf.split("\n", 1)
                if line.strip():
                    log.log(self.level, "llama.cpp: %s", line)
        except Exception:  # an exception must never cross back into C
            pass


_init_lock = threading.Lock()
_router: _LogRouter | None = None


def init_llama() -> None:
    """Route llama.cpp's logging into Python and initialise its backends (once, idempotent)."""
    global _router
    with _init_lock:
        if _router is None:
            _router = _LogRouter()
            C.llama_log_set(_router.callback, ctypes.c_void_p(0))
            C.llama_backend_init()


def default_threads() -> int:
    """CPUs this process may run on (respects affinity masks and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ContextConfig:
    """How the context is made. n_ctx None: the model's training context, capped at 32768."""

    n_ctx: int | None = None
    n_batch: int = 512
    n_ubatch: int = 512
    n_threads: int | None = None
    # Extra buffer types repack weights for faster CPU matmuls; on Xeons with
    # AMX the repacked AMX path segfaults at the first decode (DESIGN.md 4).
    # Off by default everywhere: a wrong-but-fast default is a crash on some
    # laptop we never see, and on an AVX512 EPYC (2 cores) prefill and
    # generation speed were the same within noise either way.
    extra_bufts: bool = False
    # LoRA adapters (GGUF file, scale) applied to every decode of this context.
    lora: tuple[tuple[str, float], ...] = ()


class LlamaContext:
    """A loaded GGUF model plus one decoding context and its batches.

    Not thread-safe: one sequence, one caller at a time. ``close()`` (or leaving
    the ``with`` block) frees the C resources; calling it again does nothing.
    """

    def __init__(self, path: str | Path, config: ContextConfig | None = None) -> None:
        self._model = self._ctx = None
        self._tok_batch = self._emb_batch = None
        self._has_logits = False
        init_llama()
        self.path = Path(path)
        self.config = cfg = config or ContextConfig()
        if not self.path.is_file():
            raise FileNotFoundError(f"no GGUF model at {self.path}")
        try:
            mp = C.llama_model_default_params()
            mp.use_extra_bufts = cfg.extra_bufts
            model = C.llama_model_load_from_file(str(self.path).encode(), mp)
            if not model:
                raise LlamaError(f"llama.cpp could not load {self.path} (not a GGUF model, or an unsupported architecture)")
            self._model = model
            self._vocab = C.llama_model_get_vocab(model)
            self.n_embd: int = C.llama_model_n_embd(model)
            self.n_vocab: int = C.llama_vocab_n_tokens(self._vocab)
            self.n_ctx_train: int = C.llama_model_n_ctx_train(model)

            n_ctx = cfg.n_ctx or min(self.n_ctx_train, 32768)
            threads = cfg.n_threads or default_threads()
            cp = C.llama_context_default_params()
            cp.n_ctx = n_ctx
            cp.n_batch = cfg.n_batch
            cp.n_ubatch = min(cfg.n_ubatch, cfg.n_batch)
            cp.n_seq_max = 1
            cp.n_threads = threads
            cp.n_threads_batch = threads
            cp.embeddings = False
            # With the full-size SWA cache a restored state drifts from the
            # original run; with the small one it is exact (DESIGN.md 4).
            cp.swa_full = False
            ctx = C.llama_init_from_model(model, cp)
            if not ctx:
                raise LlamaError(f"llama.cpp could not create a context of {n_ctx} positions for {self.path.name} (out of memory?)")
            self._ctx = ctx
            if cfg.lora:
                self._set_adapters(cfg.lora)
            self.n_ctx: int = C.llama_n_ctx(ctx)
            self.n_batch: int = C.llama_n_batch(ctx)
            self._tok_batch = C.llama_batch_init(self.n_batch, 0, 1)
            self._emb_batch = C.llama_batch_init(self.n_batch, self.n_embd, 1)
            for b in (self._tok_batch, self._emb_batch):
                for i in range(self.n_batch):  # one sequence, always seq 0
                    b.n_seq_id[i] = 1
                    b.seq_id[i][0] = _SEQ
        except BaseException:
            self.close()
            raise
        log.info(
            "llama.cpp: %s (%s), n_ctx %d, n_batch %d, %d threads",
            self.path.name, self.meta("general.architecture"), self.n_ctx, self.n_batch, threads,
        )

    def _set_adapters(self, lora: tuple[tuple[str, float], ...]) -> None:
        """Load each GGUF LoRA onto the model and switch them on in this context.

        The adapters belong to the model: llama.cpp frees them with it, so
        close() needs no step of its own for them.
        """
        adapters = []
        for path, _ in lora:
            if not Path(path).is_file():
                raise FileNotFoundError(f"no GGUF LoRA at {path}")
            a = C.llama_adapter_lora_init(self._model, str(path).encode())
            if not a:
                raise LlamaError(f"llama.cpp could not load the LoRA {path} (not a GGUF adapter for this model?)")
            adapters.append(a)
        arr = (C.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
        scales = (ctypes.c_float * len(lora))(*[float(s) for _, s in lora])
        rc = C.llama_set_adapters_lora(self._ctx, arr, len(adapters), scales)
        if rc != 0:
            raise LlamaError(f"llama.cpp refused the LoRA adapters (code {rc})")

    # --- lifetime --------------------------------------------------------------
    def close(self) -> None:
        """Free batches, context and model (in that order); safe to call twice."""
        if self._tok_batch is not None:
            C.llama_batch_free(self._tok_batch)
            self._tok_batch = None
        if self._emb_batch is not None:
            C.llama_batch_free(self._emb_batch)
            self._emb_batch = None
        if self._ctx:
            C.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            C.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> "LlamaContext":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    @property
    def closed(self) -> bool:
        return self._ctx is None

    def _live(self):
        if self._ctx is None:
            raise LlamaError("this llama.cpp context is closed")
        return self._ctx

    # --- model facts -------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        """A GGUF metadata value as a string (None if the key is absent)."""
        if self._model is None:
            raise LlamaError("this llama.cpp context is closed")
        buf = ctypes.create_string_buffer(256)
        n = C.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        if n < 0:
            return None
        if n >= len(buf):
            buf = ctypes.create_string_buffer(n + 1)
            C.llama_model_meta_val_str(self._model, key.encode(), buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def describe(self) -> str:
        """llama.cpp's one-line model description (type, size, quantization)."""
        if self._model is None:
            raise LlamaError("this llama.cpp context is closed")
        buf = ctypes.create_string_buffer(256)
        C.llama_model_desc(self._model, buf, len(buf))
        return buf.value.decode("utf-8", "replace")

    def n_params(self) -> int:
        return int(C.llama_model_n_params(self._model))

    def special_ids(self) -> dict[str, int]:
        """bos / eos / eot ids as the GGUF declares them (-1 where there is none)."""
        v = self._vocab
        return {"bos": C.llama_vocab_bos(v), "eos": C.llama_vocab_eos(v), "eot": C.llama_vocab_eot(v)}

    def is_eog(self, token: int) -> bool:
        """True for every token llama.cpp treats as end of generation."""
        return bool(C.llama_vocab_is_eog(self._vocab, token))

    def tokenize(self, text: str, add_special: bool = False, parse_special: bool = False) -> list[int]:
        """llama.cpp's own tokenization (used to check that another tokenizer agrees with it)."""
        self._live()
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (C.llama_token * cap)()
        n = C.llama_tokenize(self._vocab, data, len(data), out, cap, add_special, parse_special)
        if n < 0:
            cap = -n
            out = (C.llama_token * cap)()
            n = C.llama_tokenize(self._vocab, data, len(data), out, cap, add_special, parse_special)
        if n < 0:
            raise LlamaError(f"llama_tokenize failed ({n})")
        return list(out[:n])

    # --- decoding ----------------------------------------------------------------
    def _check_span(self, n: int, pos0: int) -> None:
        self._live()
        if n <= 0:
            raise ValueError("nothing to decode")
        if pos0 < 0 or pos0 + n > self.n_ctx:
            raise LlamaError(f"positions {pos0}..{pos0 + n - 1} do not fit the context of {self.n_ctx}")

    def _run(self, batch, n: int, pos0: int, want_logits: bool) -> None:
        # positions: written as one block instead of n ctypes stores
        pos = np.arange(pos0, pos0 + n, dtype=np.int32)
        ctypes.memmove(batch.pos, pos.ctypes.data, pos.nbytes)
        ctypes.memset(batch.logits, 0, n)
        if want_logits:
            batch.logits[n - 1] = 1
        batch.n_tokens = n
        self._has_logits = False
        rc = C.llama_decode(self._live(), batch)
        if rc != 0:
            raise LlamaDecodeError(rc, n, pos0)
        self._has_logits = want_logits

    def decode_tokens(self, ids: Sequence[int], pos0: int, logits_last: bool = True) -> None:
        """Append token ids at positions pos0.., in n_batch chunks; logits only for the last one."""
        arr = np.asarray(ids, dtype=np.int32)
        self._check_span(len(arr), pos0)
        if arr.min() < 0 or arr.max() >= self.n_vocab:
            raise ValueError(f"token id out of range [0, {self.n_vocab})")
        b = self._tok_batch
        for start in range(0, len(arr), self.n_batch):
            chunk = np.ascontiguousarray(arr[start : start + self.n_batch])
            ctypes.memmove(b.token, chunk.ctypes.data, chunk.nbytes)
            last = start + len(chunk) == len(arr)
            self._run(b, len(chunk), pos0 + start, logits_last and last)

    def decode_embeddings(self, rows: np.ndarray, pos0: int, logits_last: bool = True) -> None:
        """Append (n, n_embd) float32 input rows at positions pos0.., in n_batch chunks.

        The rows go in as they are: whatever scaling the model applies to its
        own token embeddings, llama.cpp may or may not apply to these (that is
        the backend's business, see llama_backend.EMBEDDING_SCALING).
        """
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != self.n_embd:
            raise ValueError(f"embedding rows must be (n, {self.n_embd}), got {rows.shape}")
        if not np.isfinite(rows).all():
            raise ValueError("embedding rows contain NaN or inf")
        self._check_span(rows.shape[0], pos0)
        b = self._emb_batch
        for start in range(0, rows.shape[0], self.n_batch):
            chunk = rows[start : start + self.n_batch]
            ctypes.memmove(b.embd, chunk.ctypes.data, chunk.nbytes)
            last = start + chunk.shape[0] == rows.shape[0]
            self._run(b, chunk.shape[0], pos0 + start, logits_last and last)

    def logits(self) -> np.ndarray:
        """(n_vocab,) float32 logits of the last decoded position (a copy)."""
        if not self._has_logits:
            raise LlamaError("no logits: the last decode did not ask for them (or failed, or a state was restored)")
        ptr = C.llama_get_logits_ith(self._live(), -1)
        if not ptr:
            raise LlamaError("llama_get_logits_ith returned NULL")
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).copy()

    # --- sequence state --------------------------------------------------------------
    def clear(self) -> None:
        """Forget every position (the KV cache is emptied, data included)."""
        C.llama_memory_clear(C.llama_get_memory(self._live()), True)
        self._has_logits = False

    def state_get(self) -> bytes:
        """The sequence's KV state (no logits: llama.cpp does not keep them per sequence)."""
        ctx = self._live()
        size = C.llama_state_seq_get_size(ctx, _SEQ)
        buf = (ctypes.c_uint8 * size)()
        n = C.llama_state_seq_get_data(ctx, buf, size, _SEQ)
        if n == 0 and size > 0:
            raise LlamaError("llama_state_seq_get_data copied nothing")
        return ctypes.string_at(buf, n)

    def state_set(self, state: bytes) -> None:
        """Replace the sequence with a saved state (from a context of the same model and settings)."""
        ctx = self._live()
        self.clear()
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        n = C.llama_state_seq_set_data(ctx, buf, len(state), _SEQ)
        if n == 0:
            self.clear()
            raise LlamaError("llama.cpp refused the saved state (another model, context size or llama.cpp version?)")

    def pos_max(self) -> int:
        """The highest position held for the sequence (-1 when empty)."""
        return int(C.llama_memory_seq_pos_max(C.llama_get_memory(self._live()), _SEQ))
