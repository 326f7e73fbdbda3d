"""Decoder inputs built from parts: plain text, or a compressed block given as latents.

A compressed block is written in the prompt as ``start`` + one ``placeholder``
per latent + ``end`` (the paper's ``<|memory_start|>``, ``<|memory|>``,
``<|memory_end|>``). The placeholders' input embeddings are replaced by the
latents (adapter outputs, already in the decoder's input space, i.e. scaled as
the decoder's own token embeddings are). Each latent takes one position.

Decoders whose vocabulary lacks the memory tokens (the default Gemma) name
three tokens of their own instead, see :func:`memory_tokens_for`. Markers are
ordinary tokens (their embeddings are the decoder's); the placeholder's
embedding is never used.

Text parts are tokenised with special tokens *split*, so a document that
contains the string ``<|memory|>`` or ``<bos>`` cannot forge a marker.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, Union

import torch

from .config import MEMORY, MEMORY_END, MEMORY_START, MemoryTokens

# The default Gemma has no memory tokens. Gemma 3's vocabulary brackets soft
# (image) tokens with <start_of_image> ... <end_of_image>; we reuse that pair as
# the block markers and an <unusedN> token, never produced by the tokenizer from
# text, as the placeholder.
GEMMA_MEMORY_TOKENS = MemoryTokens(start="<start_of_image>", placeholder="<unused0>", end="<end_of_image>")


class Tokenizer(Protocol):
    def convert_tokens_to_ids(self, tokens: str) -> int: ...
    def __call__(self, text: str, **kw): ...


@dataclass(frozen=True)
class Text:
    """Plain text, tokenised by the decoder's tokenizer."""

    text: str


@dataclass(frozen=True)
class Latents:
    """A compressed block: (n, dec_dim) rows in the decoder's input space."""

    data: torch.Tensor

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"a latent block must be (n, dim), got shape {tuple(self.data.shape)}")


@dataclass(frozen=True)
class TokenIds:
    """Token ids given directly (e.g. a BOS, or ids already tokenised)."""

    ids: tuple[int, ...]


Part = Union[Text, Latents, TokenIds]


@dataclass(frozen=True)
class TokenSpan:
    ids: tuple[int, ...]


@dataclass(frozen=True)
class EmbedSpan:
    """Rows fed as input embeddings; ``placeholder_id`` marks their positions in token views."""

    embeds: torch.Tensor  # (n, dim)
    placeholder_id: int


@dataclass
class DecoderInputs:
    """A sequence of token spans and embedding spans, in prompt order.

    The llama.cpp backend feeds spans as they are (token and embedding batches
    cannot mix); the torch backend embeds the token spans and concatenates.
    """

    spans: list[TokenSpan | EmbedSpan] = field(default_factory=list)

    def __len__(self) -> int:
        return sum(len(s.ids) if isinstance(s, TokenSpan) else s.embeds.shape[0] for s in self.spans)

    def token_ids(self) -> list[int]:
        """The sequence as token ids, placeholder ids at latent positions."""
        out: list[int] = []
        for s in self.spans:
            out.extend(s.ids if isinstance(s, TokenSpan) else [s.placeholder_id] * s.embeds.shape[0])
        return out

    def latent_positions(self) -> list[range]:
        """Position range of every embedding span, relative to the start of these inputs."""
        out, p = [], 0
        for s in self.spans:
            n = len(s.ids) if isinstance(s, TokenSpan) else s.embeds.shape[0]
            if isinstance(s, EmbedSpan):
                out.append(range(p, p + n))
            p += n
        return out

    def __add__(self, other: "DecoderInputs") -> "DecoderInputs":
        return DecoderInputs(self.spans + other.spans)


def memory_tokens_for(tokenizer: Tokenizer, configured: MemoryTokens | None = None) -> MemoryTokens:
    """The marker triple this decoder uses: the paper's tokens where the vocabulary has them."""
    if configured is not None and _all_known(tokenizer, configured):
        return configured
    paper = MemoryTokens(MEMORY_START, MEMORY, MEMORY_END)
    if _all_known(tokenizer, paper):
        return paper
    if _all_known(tokenizer, GEMMA_MEMORY_TOKENS):
        return GEMMA_MEMORY_TOKENS
    raise ValueError(
        "the decoder's tokenizer has neither the memory tokens "
        f"({MEMORY_START}, {MEMORY}, {MEMORY_END}) nor a known equivalent; add them to the tokenizer"
    )


def _token_id(tokenizer: Tokenizer, token: str) -> int | None:
    tid = tokenizer.convert_tokens_to_ids(token)
    unk = getattr(tokenizer, "unk_token_id", None)
    if tid is None or (tid == unk and token != getattr(tokenizer, "unk_token", None)):
        return None
    return tid


def _all_known(tokenizer: Tokenizer, m: MemoryTokens) -> bool:
    return all(_token_id(tokenizer, t) is not None for t in (m.start, m.placeholder, m.end))


def tokenize_text(tokenizer: Tokenizer, text: str) -> list[int]:
    """Ids of plain text with no special tokens added, and none parsed from the text."""
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


class InputBuilder:
    """Turns parts into :class:`DecoderInputs` for one decoder tokenizer."""

    def __init__(self, tokenizer: Tokenizer, memory: MemoryTokens | None = None) -> None:
        self.tokenizer = tokenizer
        self.memory = memory_tokens_for(tokenizer, memory)
        self.start_id = _token_id(tokenizer, self.memory.start)
        self.placeholder_id = _token_id(tokenizer, self.memory.placeholder)
        self.end_id = _token_id(tokenizer, self.memory.end)
        self.bos_id = getattr(tokenizer, "bos_token_id", None)

    def build(self, parts: Sequence[Part], add_bos: bool = True) -> DecoderInputs:
        spans: list[TokenSpan | EmbedSpan] = []
        pending: list[int] = [self.bos_id] if add_bos and self.bos_id is not None else []
        for part in parts:
            if isinstance(part, Text):
                pending.extend(tokenize_text(self.tokenizer, part.text))
            elif isinstance(part, TokenIds):
                pending.extend(part.ids)
            elif isinstance(part, Latents):
                pending.append(self.start_id)
                spans.append(TokenSpan(tuple(pending)))
                pending = []
                if part.data.shape[0]:
                    spans.append(EmbedSpan(part.data, self.placeholder_id))
                pending.append(self.end_id)
            else:
                raise TypeError(f"not a prompt part: {part!r}")
        if pending:
            spans.append(TokenSpan(tuple(pending)))
        return DecoderInputs(spans)

    def from_token_ids(self, ids: Sequence[int], latents: Sequence[torch.Tensor]) -> DecoderInputs:
        """Fill the placeholder runs of a ready token sequence with latent blocks, in order.

        Every maximal run of placeholder ids is one block and must have exactly as
        many positions as its block has rows; anything else is an error, since a
        miscount would shift every later position.
        """
        runs: list[tuple[int, int]] = []
        i = 0
        while i < len(ids):
            if ids[i] == self.placeholder_id:
                j = i
                while j < len(ids) and ids[j] == self.placeholder_id:
                    j += 1
                runs.append((i, j))
                i = j
            else:
                i += 1
        if len(runs) != len(latents):
            raise ValueError(f"{len(runs)} placeholder block(s) in the prompt but {len(latents)} latent block(s) given")
        spans: list[TokenSpan | EmbedSpan] = []
        prev = 0
        for (a, b), lat in zip(runs, latents):
            if b - a != lat.shape[0]:
                raise ValueError(f"placeholder block at position {a} has {b - a} positions but its latents have {lat.shape[0]} rows")
            if a > prev:
                spans.append(TokenSpan(tuple(ids[prev:a])))
            spans.append(EmbedSpan(lat, self.placeholder_id))
            prev = b
        if prev < len(ids):
            spans.append(TokenSpan(tuple(ids[prev:])))
        return DecoderInputs(spans)
