"""The decoder backend interface, shared by the torch and llama.cpp implementations.

A backend owns one decoding sequence: ``prefill`` appends inputs (token spans
and latent spans) to it, ``generate`` streams text from where it stands. The
generation loop, sampling and stop strings live here once; a backend only
knows how to run its model forward.
"""

from __future__ import annotations

import abc
import logging
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch

from .inputs import DecoderInputs, EmbedSpan, InputBuilder, Part, TokenSpan

log = logging.getLogger(__name__)


class ContextLengthError(ValueError):
    """The prompt (plus what is already in the sequence) does not fit the decoder's context."""

    def __init__(self, needed: int, n_ctx: int, n_past: int = 0) -> None:
        self.needed, self.n_ctx, self.n_past = needed, n_ctx, n_past
        super().__init__(
            f"the prompt needs {needed} positions after {n_past} already in use, but the decoder's context holds "
            f"{n_ctx}; use fewer or shorter documents, or a higher compression ratio"
        )


@dataclass
class GenerationConfig:
    """How to continue a sequence.

    temperature 0 means greedy. stop: strings that end generation (not included
    in the output). The end-of-sequence tokens always stop.
    """

    max_new_tokens: int = 256
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    stop: Sequence[str] = ()
    seed: int | None = None


def sample_next(logits: torch.Tensor, cfg: GenerationConfig, generator: torch.Generator | None) -> int:
    """One token id from (vocab,) logits: greedy at temperature 0, else top-k / top-p sampling."""
    if cfg.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / cfg.temperature
    if cfg.top_k > 0:
        kth = torch.topk(logits, min(cfg.top_k, logits.numel())).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if cfg.top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, descending=True)
        cum = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        drop = cum - torch.softmax(sorted_logits, dim=-1) > cfg.top_p  # keep the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, idx, drop), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))


class _StopMatcher:
    """Streams text while holding back any tail that could still become a stop string."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.text = ""
        self.emitted = 0
        self.stopped = False

    def feed(self, text: str) -> str:
        """Given the full decoded text so far, return the next safe piece."""
        self.text = text
        cut = min((i for i in (text.find(s, max(0, self.emitted - len(s))) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            piece, self.emitted = text[self.emitted : cut], max(self.emitted, cut)
            return piece
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(text)), 0, -1):
                if text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = len(text) - hold
        piece = text[self.emitted : end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return piece

    def flush(self) -> str:
        return "" if self.stopped else self.text[self.emitted :]


class _Detokenizer:
    """Incremental decoding of a growing id list, in O(new tokens) per step.

    Decodes only a short window (from the last emitted boundary), because
    decoding the whole list every step is quadratic, and because tokenizers
    that merge spaces or bytes across tokens need a little left context. A
    multi-byte character split over tokens decodes as U+FFFD until its last
    byte arrives: such a tail is held back so streamed text is never revised.
    """

    def __init__(self, tokenizer, ids: list[int]) -> None:
        self.tokenizer, self.ids = tokenizer, ids
        self.prefix, self.read = 0, 0  # window start, end of what is already in text
        self.text = ""

    def _decode(self, a: int, b: int | None = None) -> str:
        return self.tokenizer.decode(self.ids[a:b], skip_special_tokens=True)

    def step(self) -> bool:
        """Take in the newest id; True if text grew."""
        before = self._decode(self.prefix, self.read)
        after = self._decode(self.prefix)
        if len(after) > len(before) and not after.endswith("\ufffd"):
            self.text += after[len(before):]
            self.prefix, self.read = self.read, len(self.ids)
            return True
        return False

    def finish(self) -> str:
        before = self._decode(self.prefix, self.read)
        self.text += self._decode(self.prefix)[len(before):]
        self.prefix = self.read = len(self.ids)
        return self.text


@dataclass
class GenerationResult:
    """Filled in by :meth:`DecoderBackend.generate` as it runs (read after the iterator ends)."""

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = ""  # "stop" | "eos" | "length" | "context"


class DecoderBackend(abc.ABC):
    """One decoder and one sequence. Use as a context manager, or call close()."""

    name: str = "backend"

    def __init__(self, tokenizer, memory_tokens=None) -> None:
        self.tokenizer = tokenizer
        self.builder = InputBuilder(tokenizer, memory_tokens)
        self.n_past = 0
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_ids: set[int] = {eos} if isinstance(eos, int) else set(eos or ())

    # --- what a backend implements --------------------------------------------
    @property
    @abc.abstractmethod
    def n_ctx(self) -> int:
        """Positions the sequence may hold."""

    @property
    @abc.abstractmethod
    def hidden_size(self) -> int:
        """Width of an input embedding (and of a latent)."""

    @abc.abstractmethod
    def token_embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        """(n, hidden) input-space rows of token ids, scaled as the model scales them."""

    @abc.abstractmethod
    def _forward(self, span: TokenSpan | EmbedSpan, want_logits: bool) -> torch.Tensor | None:
        """Append one span at positions n_past.. and return last-position logits (vocab,) if asked."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Forget the sequence (n_past back to 0)."""

    def close(self) -> None:
        """Release what the backend holds; the object is unusable afterwards."""

    # --- shared ----------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def build(self, parts: Sequence[Part], add_bos: bool | None = None) -> DecoderInputs:
        """Decoder inputs for parts; a BOS is added only at the start of a sequence."""
        return self.builder.build(parts, add_bos=self.n_past == 0 if add_bos is None else add_bos)

    def prefill(self, inputs: DecoderInputs | Sequence[Part]) -> torch.Tensor:
        """Append inputs to the sequence; return the next-token logits (vocab,) float32."""
        if not isinstance(inputs, DecoderInputs):
            inputs = self.build(inputs)
        n = len(inputs)
        if n == 0:
            raise ValueError("nothing to prefill")
        if self.n_past + n > self.n_ctx:
            raise ContextLengthError(n, self.n_ctx, self.n_past)
        return self._prefill_spans(inputs).float()

    def _prefill_spans(self, inputs: DecoderInputs) -> torch.Tensor:
        """Run every span in order; a backend may batch them differently."""
        for s in inputs.spans[:-1]:
            self._forward(s, want_logits=False)
        logits = self._forward(inputs.spans[-1], want_logits=True)
        assert logits is not None
        return logits

    def generate(
        self,
        cfg: GenerationConfig | None = None,
        logits: torch.Tensor | None = None,
        result: GenerationResult | None = None,
    ) -> Iterator[str]:
        """Stream text pieces continuing the sequence.

        logits: the next-token logits returned by the last prefill (they are not
        recomputed). Generated tokens join the sequence, except the last one,
        which is sampled but never run (that would cost a forward pass for
        nothing); a caller that continues the sequence prefills
        ``TokenIds((result.token_ids[-1],))`` first. If given, ``result``
        receives the token ids and why generation ended.
        """
        cfg = cfg or GenerationConfig()
        result = result if result is not None else GenerationResult()
        if logits is None:
            raise ValueError("generate() continues a prefill: pass the logits prefill() returned")
        gen = torch.Generator().manual_seed(cfg.seed) if cfg.seed is not None else None
        stop = _StopMatcher(cfg.stop)
        ids = result.token_ids
        detok = _Detokenizer(self.tokenizer, ids)
        result.finish_reason = "length"
        for _ in range(cfg.max_new_tokens):
            tok = sample_next(logits, cfg, gen)
            if tok in self.eos_ids:
                result.finish_reason = "eos"
                break
            ids.append(tok)
            if detok.step():
                piece = stop.feed(detok.text)
                if piece:
                    yield piece
            if stop.stopped:
                result.finish_reason = "stop"
                return
            if self.n_past + 1 > self.n_ctx:
                result.finish_reason = "context"
                break
            logits = self._forward(TokenSpan((tok,)), want_logits=True).float()
        if ids and not stop.stopped:
            # The last tokens may have been held back (an unfinished character or a
            # possible stop prefix); generation is over, so they are final now.
            piece = stop.feed(detok.finish())
            if stop.stopped:
                result.finish_reason = "stop"
            tail = piece + stop.flush()
            if tail:
                yield tail

    def complete(self, parts: Sequence[Part], cfg: GenerationConfig | None = None) -> str:
        """Prefill parts on a fresh sequence and return the whole generated text."""
        self.reset()
        logits = self.prefill(self.build(parts, add_bos=True))
        return "".join(self.generate(cfg, logits=logits))
