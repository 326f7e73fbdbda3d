"""Compact tokenised shards and the sampler that cuts training examples from them.

A dataset directory holds ``meta.json`` and, per split and shard,
``{split}-{k:05d}.tokens.npy`` (uint32 token ids, documents back to back) and
``{split}-{k:05d}.offsets.npy`` (int64 start of each document, plus the end).
Shards stay under ~16 MB so that they can be carried to a lent GPU machine
in pieces; uint32 because Gemma's vocabulary (262,144) does not fit 16 bits.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

SHARD_TOKENS = 4_000_000  # 16 MB of uint32


def pad_id(tokenizer) -> int:
    """The tokenizer's pad id, or 0 where it has none: padded positions are masked out of every loss and
    figure, so any id serves, but one that exists keeps the embedding lookup in range."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


class ShardWriter:
    """Appends tokenised documents to shards of one split."""

    def __init__(self, root: Path, split: str, shard_tokens: int = SHARD_TOKENS) -> None:
        self.root, self.split, self.shard_tokens = Path(root), split, shard_tokens
        self.root.mkdir(parents=True, exist_ok=True)
        self.k = 0
        self.tokens: list[np.ndarray] = []
        self.n = 0
        self.docs = 0
        self.total = 0

    def add(self, ids: Iterable[int]) -> None:
        arr = np.asarray(list(ids), dtype=np.uint32)
        if arr.size == 0:
            return
        self.tokens.append(arr)
        self.n += arr.size
        if self.n >= self.shard_tokens:
            self.flush()

    def flush(self) -> None:
        if not self.tokens:
            return
        offsets = np.concatenate([[0], np.cumsum([t.size for t in self.tokens])]).astype(np.int64)
        stem = self.root / f"{self.split}-{self.k:05d}"
        np.save(f"{stem}.tokens.npy", np.concatenate(self.tokens))
        np.save(f"{stem}.offsets.npy", offsets)
        self.docs += len(self.tokens)
        self.total += self.n
        self.k += 1
        self.tokens, self.n = [], 0

    def close(self) -> dict:
        self.flush()
        return {"shards": self.k, "documents": self.docs, "tokens": self.total}


@dataclass
class Example:
    """One training example: a passage to compress and what follows it in the same document."""

    passage: np.ndarray  # (T,) token ids
    continuation: np.ndarray  # (Y,) token ids


class TokenShards:
    """Memory-mapped shards of one split, sampled by position (longer documents weigh more)."""

    def __init__(self, root: Path, split: str = "train") -> None:
        self.root = Path(root)
        files = sorted(self.root.glob(f"{split}-*.tokens.npy"))
        if not files:
            raise FileNotFoundError(f"no {split} shards in {self.root} (run: python -m lclm_core.train.prepare_data)")
        self.tokens = [np.load(f, mmap_mode="r") for f in files]
        self.offsets = [np.load(str(f).replace(".tokens.npy", ".offsets.npy")) for f in files]
        sizes = np.array([t.size for t in self.tokens], dtype=np.float64)
        self.weights = sizes / sizes.sum()
        self.n_tokens = int(sizes.sum())

    @staticmethod
    def meta(root: Path) -> dict:
        return json.loads((Path(root) / "meta.json").read_text())

    def sample(self, rng: np.random.Generator, passage_len: int, cont_len: int, tries: int = 64) -> Example:
        """A random window inside one document: passage_len tokens, then cont_len more."""
        need = passage_len + cont_len
        for _ in range(tries):
            s = rng.choice(len(self.tokens), p=self.weights)
            toks, offs = self.tokens[s], self.offsets[s]
            pos = int(rng.integers(0, toks.size))
            d = int(np.searchsorted(offs, pos, side="right") - 1)
            a, b = int(offs[d]), int(offs[d + 1])
            if b - a < need:
                continue
            start = int(rng.integers(a, b - need + 1))
            w = np.asarray(toks[start : start + need], dtype=np.int64)
            return Example(w[:passage_len], w[passage_len:])
        raise ValueError(f"no document of {need}+ tokens found in {tries} tries; use shorter passages")

    def documents(self, min_len: int = 0) -> Iterable[np.ndarray]:
        """Every document in order (evaluation reads the held-out split this way)."""
        for toks, offs in zip(self.tokens, self.offsets):
            for a, b in zip(offs[:-1], offs[1:]):
                if b - a >= min_len:
                    yield np.asarray(toks[a:b], dtype=np.int64)
