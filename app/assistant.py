"""The assistant: read a scope's latents, skim them for the question, expand what matters, answer, cite.

One call, three modes (the product and its two baselines):

  latent  every segment of the scope as its latent block (numbered, under its
          document's name), then the question; segments are scored (bm25 over
          their text + the decoder's attention on their latents while it reads
          the question), the best few are put back as raw passages, and the
          answer is generated. The documents block is a cached prefix, so a
          second question over the same scope does not prefill it again.
  full    the scope's raw text instead of latents (when it fits).
  rag     no documents block: the bm25 top-k raw passages only.

Citations are data (segment, document, page, character span, passage text),
never parsed out of the answer: they are the passages the answer was given.
When nothing in the scope scores as relevant, the answer is "not found in
your documents" and the decoder is not run.

Why append the expanded passages after the documents block rather than in
place of their latents (the paper's way): the block stays byte-identical,
so its cached prefix stays valid. ``expand_style="inplace"`` does the
paper's way; bench/assistant.py measures both.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterator, Sequence

import torch

from latent_store import Document, LatentStore, ScopeSegment
from lclm_core.backend import ContextLengthError, DecoderBackend, GenerationConfig, GenerationResult
from lclm_core.inputs import DecoderInputs, Latents, Part, Text
from lclm_core.latents import LatentArray
from lclm_core.prompt import INSTRUCTIONS, document_header, question_block

from .quality import fallback_text, is_listing, junk_reason

log = logging.getLogger(__name__)

MODES = ("latent", "full", "rag")
EXPAND_STYLES = ("append", "inplace")
NOT_FOUND = "Not found in your documents."
HOLD_CHARS = 12  # a reply is streamed once it has this much text that is not prompt words or a header
LISTING_WEIGHT = 0.2  # a contents or index page's score is cut to this share (app.quality.is_listing)
_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    "a an and are as at be by can could do does did for from has have how i in is it its me my of on or "
    "should that the their there this to was were what when where which who whom whose why will with would "
    "you your about tell please".split()
)


class AssistantError(RuntimeError):
    """A question that cannot be answered as asked (empty scope, too long for `full`); the message says why."""


@dataclass(frozen=True)
class AssistantConfig:
    mode: str = "latent"
    expand_k: int = 3  # passages put back as raw text
    expand_tokens: int = 1200  # and their token budget
    expand_style: str = "append"
    rag_k: int = 4
    # > 0: only the K segments that retrieval ranks best go in as latents, not the whole scope (REFRAG's
    # "retrieve many, compress all, expand few"): fewer distracting positions and a shorter prefill, at the
    # cost of a documents block that is no longer one cached prefix for every question. 0: the whole scope.
    latent_top: int = 0
    # A scope too long for the context is cut to its best-ranked passages up to this many positions (0: as
    # many as the context holds). Its block is built anew for every question (which passages go in depends
    # on the question), so it is prefilled every time: 32k positions took 87 s to the first token on a 2-core
    # CPU, 8,192 took 18 s, and F1 did not fall (+5.1, SE 4.5; bench/results/2026-12-07-big-scope).
    partial_positions: int = 8192
    more_k: int = 5  # next-ranked passages offered for "read this one too"
    max_new_tokens: int = 160
    reserve_tokens: int = 256  # positions kept for headers, the question and slack
    attention: bool = True  # the attention scorer (backends that can read attention)
    attention_ratio: float = 4.0  # a segment is relevant at this multiple of the uniform attention share
    agent_rounds: int = 0  # > 0: the paper's agent loop (the model asks `EXPAND: i,j`) for up to this many rounds
    prefix_cache: bool = True
    one_paragraph: bool = True  # stop at the first line break after the answer has begun

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.expand_style not in EXPAND_STYLES:
            raise ValueError(f"expand_style must be one of {EXPAND_STYLES}")


@dataclass(frozen=True)
class Scope:
    """What a question is asked over: all indexed documents (the default), folders, or chosen documents."""

    document_ids: tuple[int, ...] = ()
    folders: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()

    def documents(self, store: LatentStore) -> list[Document]:
        docs = store.list_documents(status=("indexed", "indexing", "pending"))
        if not (self.document_ids or self.folders or self.paths):
            return docs
        ids = set(self.document_ids)
        folders = tuple(f.rstrip("/") + "/" for f in self.folders)
        return [d for d in docs if d.id in ids or d.path in self.paths or d.path.startswith(folders)]


@dataclass(frozen=True)
class Citation:
    number: int  # the passage's number in the prompt ([1], [2], ...)
    segment_id: int
    document_id: int
    path: str
    page: int | None
    char_start: int | None
    char_end: int | None
    text: str
    score: float
    location: str | None = None  # "slide 4", "Sheet1 rows 20-40", ...; None where the page says it

    @property
    def where(self) -> str:
        """'file.pdf, page 12' or 'deck.pptx, slide 4': how every surface names this passage."""
        return place(self.path, self.page, self.location)


@dataclass
class Answer:
    question: str
    mode: str
    text: str = ""
    citations: list[Citation] = field(default_factory=list)
    found: bool = True
    left_out: list[str] = field(default_factory=list)  # documents that did not fit the context
    partial: dict[str, list[int]] = field(default_factory=dict)  # path -> [passages read, passages in all]
    junk: str = ""  # why the decoder's reply was not an answer (then the text is the best passage instead)
    raw_segments: int = 0  # segments given as raw text because they had no latents yet
    expanded: list[int] = field(default_factory=list)  # segment ids put back as raw text
    more: list[Citation] = field(default_factory=list)  # the next-ranked passages, not read as text (the UI offers them)
    positions: int = 0  # prompt length in decoder positions
    prefix_reused: bool = False
    timings: dict[str, float] = field(default_factory=dict)  # prefill_s, ttft_s, total_s
    finish_reason: str = ""
    stopped: bool = False  # the user stopped the generation: the text is what had been shown
    new_tokens: int = 0  # tokens the decoder generated (the speed in tokens/s is this over total_s - ttft_s)

    def raw_notice(self) -> str:
        """A sentence for the user where passages went in as raw text; '' where none did.

        Segments without this compressor's latents (a folder still being indexed, or a ratio just changed)
        are read as raw text. The answer stays right, but it took more of the context and a slower prefill,
        and a user who sees that should know why and that it passes once indexing catches up.
        """
        return raw_notice(self.raw_segments)

    def notes(self) -> dict:
        """What this answer could not read as planned, as data for the chat history ({} where nothing)."""
        notes: dict = {}
        if self.left_out:
            notes["left_out"] = list(self.left_out)
        if self.partial:
            notes["partial"] = {k: list(v) for k, v in self.partial.items()}
        if self.junk:
            notes["no_answer"] = self.junk
        if self.stopped:
            notes["stopped"] = True
        if self.raw_segments:
            notes["raw_segments"] = int(self.raw_segments)
        return notes


def raw_notice(n: int) -> str:
    """The sentence of ``Answer.raw_notice`` for ``n`` raw passages; a module function so that a stored
    answer (a chat reopened later, which keeps the count, not the Answer) says the same words."""
    if not n:
        return ""
    return (f"{n} passage{'' if n == 1 else 's'} had no latents from this compressor yet and "
            f"{'was' if n == 1 else 'were'} read as raw text")


# --------------------------------------------------------------------------- helpers
def content_terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and len(w) > 1]


def rrf(*rankings: Sequence[int], k: int = 60) -> dict[int, float]:
    """Reciprocal-rank fusion: robust to scorers on incomparable scales."""
    out: dict[int, float] = {}
    for ranking in rankings:
        for r, sid in enumerate(ranking):
            out[sid] = out.get(sid, 0.0) + 1.0 / (k + r + 1)
    return out


def _latent_tensor(seg: ScopeSegment) -> torch.Tensor:
    lat = seg.latent
    return LatentArray.from_payload(lat.payload, lat.dtype, lat.shape, lat.fingerprint, lat.ratio).data.float()


def place(path: str, page: int | None, location: str | None = None) -> str:
    """A passage's place as the prompt, the chat, the API and an exported chat name it: 'file.pdf, page 12',
    'deck.pptx, slide 4', 'budget.xlsx, Sheet1 rows 20-40', or the file name."""
    name = Path(path).name
    if location:
        return f"{name}, {location}"
    return f"{name}, page {page}" if page else name


@dataclass
class _Prompt:
    """The documents block as decoder inputs, and where each segment sits in it."""

    block: DecoderInputs
    ranges: dict[int, range]  # segment id -> positions (from the start of the sequence)
    raw_segments: int = 0


class Assistant:
    """Answers questions over a store. Borrows the store and compressor; owns the decoder backend."""

    def __init__(self, store: LatentStore, backend: DecoderBackend, fingerprint: str,
                 config: AssistantConfig | None = None, count_tokens=None) -> None:
        self.store = store
        self.backend = backend
        self.fingerprint = fingerprint
        self.config = config or AssistantConfig()
        tok = backend.tokenizer
        self.count_tokens = count_tokens or (lambda s: len(tok(s, add_special_tokens=False)["input_ids"]))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> "Assistant":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ public
    def ask(self, question: str, scope: Scope | None = None, **overrides) -> Answer:
        """The whole answer (``stream`` without the pieces)."""
        *_, answer = self.stream(question, scope, **overrides)
        return answer

    def warm(self, scope: Scope | None = None) -> int:
        """Prefill the scope's documents block before any question is asked; returns the positions prefilled.

        Why: later questions reuse the block, but the first one pays for all of it (13.9 s at 32k positions
        on a 2-core CPU, 2026-12-07), which is the wait a user meets first. Done while the app is idle, the
        first question starts as warm as the next ones. It builds the block exactly as ``stream`` does, so the
        question finds it in the prefix cache. Only the latent mode is warmed: rag has no block, and full's
        raw block can take minutes, which a question in another mode would wait behind. Nothing is warmed
        (0) where the block depends on the question (in-place expansion, ``latent_top``, a scope too long
        for the context, which ``_fit`` cuts by the question), where some passages have no latents yet, or
        where the block is cached already.
        """
        cfg = self.config
        if (cfg.mode != "latent" or cfg.expand_style != "append" or cfg.latent_top or not cfg.prefix_cache
                or not hasattr(self.backend, "prefill_cached")):
            return 0
        docs = (scope or Scope()).documents(self.store)
        if not docs:
            return 0
        segs = self.store.load_scope([d.id for d in docs], self.fingerprint)
        if any(s.latent is None for s in segs):  # still being encoded: the block changes when they are
            return 0
        numbered = cfg.agent_rounds > 0
        answer = Answer("", cfg.mode)
        if len(self._fit("", segs, {}, {}, numbered, cfg, answer)) < len(segs):
            return 0
        prompt = self._documents_block(segs, raw=False, numbered=numbered)
        self._prefill_docs(prompt, cfg, answer)
        if answer.prefix_reused:
            return 0
        log.info("documents block warmed: %d positions in %.1f s", len(prompt.block),
                 answer.timings["prefill_docs_s"])
        return len(prompt.block)

    def expand(self, answer: Answer, segment_id: int, scope: Scope | None = None, **overrides) -> Iterator[str | Answer]:
        """Answer again with one more passage put back as raw text (the UI's "read this passage too")."""
        return self.stream(answer.question, scope, mode=answer.mode, extra_segments=(*answer.expanded, segment_id),
                           **overrides)

    def stream(self, question: str, scope: Scope | None = None, *, extra_segments: Sequence[int] = (),
               stop: threading.Event | None = None, **overrides) -> Iterator[str | Answer]:
        """Yield the answer's text pieces as they are generated, then the :class:`Answer`.

        ``stop``: set from another thread to end the generation after the token in progress;
        the answer then keeps the text so far and says it was stopped.
        """
        cfg = replace(self.config, **overrides) if overrides else self.config
        question = " ".join(question.split())
        if not question:
            raise AssistantError("the question is empty")
        t0 = time.perf_counter()
        answer = Answer(question, cfg.mode)
        docs = (scope or Scope()).documents(self.store)
        if not docs:
            raise AssistantError("no indexed documents in the scope: add a folder and wait for it to be indexed")
        doc_ids = [d.id for d in docs]
        bm25 = self._bm25(question, doc_ids)
        if cfg.mode == "rag":
            yield from self._answer_rag(question, doc_ids, bm25, cfg, answer, t0, stop)
            return
        segs = self.store.load_scope(doc_ids, self.fingerprint)
        numbered = cfg.agent_rounds > 0 and cfg.mode == "latent"
        attention: dict[int, float] = {}
        closeness = self._closeness(question, segs) if cfg.mode == "latent" else {}
        segs = self._fit(question, segs, bm25, closeness, numbered, cfg, answer)
        if cfg.mode == "latent" and cfg.expand_style == "inplace":
            # The paper's expansion: the chosen segments' raw text replaces their latents.
            ranked, scores = self._rank(bm25, {}, closeness, segs)
            chosen = self._choose(ranked, segs, cfg, extra_segments)
            prompt = self._documents_block(segs, raw=False, raw_ids=set(chosen), numbered=numbered)
            self._prefill_docs(prompt, cfg, answer)  # the cached documents block the answer is generated after
        else:
            prompt = self._documents_block(segs, raw=cfg.mode == "full", numbered=numbered)
            self._prefill_docs(prompt, cfg, answer)  # the cached documents block the answer is generated after
            if cfg.mode == "latent" and cfg.attention and hasattr(self.backend, "attention_mass"):
                attention = self._attention(question, prompt)
            ranked, scores = self._rank(bm25, attention, closeness, segs)
            chosen = self._choose(ranked, segs, cfg, extra_segments) if cfg.mode == "latent" else []
        answer.raw_segments = prompt.raw_segments
        relevant = self._relevant(bm25, attention, segs, cfg)
        if not relevant and not extra_segments:
            answer.found = False
            answer.text = NOT_FOUND
            answer.timings["total_s"] = time.perf_counter() - t0
            yield NOT_FOUND
            yield answer
            return
        if cfg.agent_rounds and cfg.mode == "latent":
            chosen = self._agent(question, prompt, segs, chosen, cfg)
        by_id = {s.segment.id: s for s in segs}
        cited = [by_id[i] for i in chosen] if cfg.mode == "latent" else [by_id[i] for i in ranked[: cfg.expand_k]]
        answer.citations = [self._cite(n + 1, s, scores.get(s.segment.id, 0.0)) for n, s in enumerate(cited)]
        answer.expanded = list(chosen)
        shown = {c.segment_id for c in answer.citations}
        answer.more = [self._cite(0, by_id[i], scores.get(i, 0.0)) for i in ranked if i not in shown][: cfg.more_k]
        passages = cited if (cfg.mode == "latent" and cfg.expand_style == "append") else []
        tail = self._question_block(question, passages, numbered=cfg.mode == "latent")
        yield from self._generate(tail, cfg, answer, t0, halt=stop)

    # ------------------------------------------------------------------ scoring
    def _bm25(self, question: str, doc_ids: list[int]) -> dict[int, float]:
        terms = content_terms(question)
        if not terms:
            return {}
        hits = self.store.search(" ".join(terms), document_ids=doc_ids, limit=1000, mode="any")
        return {h.segment_id: h.score for h in hits if h.score > 0}

    def _attention(self, question: str, prompt: _Prompt) -> dict[int, float]:
        """Each segment's share of the attention the question pays to the documents block."""
        q = self.backend.build([Text(f"\n\nQuestion: {question}")], add_bos=False)
        mass = self.backend.attention_mass(q)
        per = {sid: float(mass[r.start : r.stop].sum()) for sid, r in prompt.ranges.items()}
        total = sum(per.values()) or 1.0
        return {sid: m / total for sid, m in per.items()}

    def _closeness(self, question: str, segs: list[ScopeSegment]) -> dict[int, float]:
        """Each segment's best cosine between a latent row and the question's mean token embedding: cheap, read
        without running the decoder (so also on llama.cpp), and weak: it ranks, it never makes "found"."""
        b = self.backend
        q = b.token_embeddings(b.builder.build([Text(question)], add_bos=False).token_ids())
        qv = torch.nn.functional.normalize(q.float().mean(0), dim=0).cpu()
        return {s.segment.id: float((torch.nn.functional.normalize(_latent_tensor(s), dim=1) @ qv).max())
                for s in segs if s.latent is not None}

    def _rank(self, bm25: dict[int, float], attention: dict[int, float], closeness: dict[int, float],
              segs: list[ScopeSegment]) -> tuple[list[int], dict[int, float]]:
        """Segments best first by a weighted sum of each scorer's score scaled to [0, 1].

        Scaled scores rather than ranks: a passage that bm25 finds far ahead of
        the rest (the question's rare words) stays ahead; where bm25 is flat,
        attention decides; latent closeness (weak evidence) only breaks ties.
        """
        in_scope = {s.segment.id for s in segs}
        total: dict[int, float] = {}
        for scores, w in ((bm25, 1.0), (attention, 0.5), (closeness, 0.1)):
            vals = {i: v for i, v in scores.items() if i in in_scope}
            if not vals:
                continue
            lo, hi = (0.0 if scores is bm25 else min(vals.values())), max(vals.values())
            for i, v in vals.items():
                total[i] = total.get(i, 0.0) + w * ((v - lo) / (hi - lo) if hi > lo else 1.0)
        listings = {s.segment.id for s in segs if s.segment.id in total and is_listing(s.segment.text)}
        for i in listings:  # a contents or index page matches every word of a question and answers none
            total[i] *= LISTING_WEIGHT
        return sorted(total, key=lambda i: (-total[i], i)), total

    def _relevant(self, bm25: dict[int, float], attention: dict[int, float], segs: list[ScopeSegment],
                  cfg: AssistantConfig) -> set[int]:
        """Segments that match a content word of the question, or draw a clear excess of its attention."""
        in_scope = {s.segment.id for s in segs}
        out = {i for i in bm25 if i in in_scope}
        if attention:
            floor = cfg.attention_ratio / max(len(attention), 1)
            out |= {i for i, share in attention.items() if share >= floor and len(attention) > cfg.attention_ratio}
        return out

    def _choose(self, ranked: list[int], segs: list[ScopeSegment], cfg: AssistantConfig,
                extra: Sequence[int]) -> list[int]:
        """The passages to put back as raw text: asked-for ones first, then by rank, within the budget
        (``expand_k`` passages in all, or just the asked-for ones when they are more)."""
        by_id = {s.segment.id: s for s in segs}
        chosen, used = [], 0
        for sid in [*extra, *ranked]:
            if sid in chosen or sid not in by_id:
                continue
            n = by_id[sid].segment.n_tokens or self.count_tokens(by_id[sid].segment.text)
            forced = sid in extra
            # asked-for passages replace the ranked fill: "read this one too" means exactly one more
            if not forced and (len(chosen) >= max(cfg.expand_k, len(extra)) or used + n > cfg.expand_tokens):
                continue
            chosen.append(sid)
            used += n
        return chosen

    # ------------------------------------------------------------------ prompt
    def _fit(self, question: str, segs: list[ScopeSegment], bm25: dict[int, float], closeness: dict[int, float],
             numbered: bool, cfg: AssistantConfig, answer: Answer) -> list[ScopeSegment]:
        """The scope as it fits the context: all of it where it fits, else its most relevant passages.

        A scope too long for the context (one 1,000-page manual at N = 8 is ~90k positions against
        32k) keeps the segments that bm25 and the latents' closeness to the question rank best, in
        document order, and names what it skipped: documents not read at all in ``answer.left_out``,
        documents read in part in ``answer.partial``. Whole documents are never the unit: dropping the
        biggest document would drop the one a user most needs help with.

        ``latent_top`` narrows the scope by the same ranking first, on purpose rather than for lack of room,
        so it is not reported as skipped.
        """
        if cfg.mode == "latent" and 0 < cfg.latent_top < len(segs):
            top = set(self._fused(segs, bm25, closeness)[: cfg.latent_top])
            log.info("latent_top: %d of the scope's %d segments go in as latents", len(top), len(segs))
            segs = [s for s in segs if s.segment.id in top]
        b = self.backend
        by_doc: dict[int, list[ScopeSegment]] = {}
        for s in segs:
            by_doc.setdefault(s.segment.document_id, []).append(s)
        raw = cfg.mode == "full"
        seg_cost: dict[int, int] = {}  # segment -> its positions (with its label, where segments are numbered)
        head_cost: dict[int, int] = {}  # document -> its header's positions
        for d, ss in by_doc.items():
            head_cost[d], label = 0, 0
            for part, sid in self._doc_parts(ss, raw, numbered=numbered):
                n = len(b.builder.build([part], add_bos=False))
                if sid is not None:
                    seg_cost[sid], label = n + label, 0
                elif numbered and head_cost[d]:
                    label += n  # a segment's label goes with the segment it names
                else:
                    head_cost[d] += n
        tail = self._question_block(question, [], numbered=True)
        budget = (b.n_ctx - len(b.builder.build([Text(INSTRUCTIONS), *tail], add_bos=True)) - cfg.reserve_tokens
                  - cfg.max_new_tokens)
        if cfg.mode == "latent" and cfg.expand_style == "append":
            budget -= cfg.expand_tokens + 16 * cfg.expand_k  # the passages and their headers
        total = sum(head_cost.values()) + sum(seg_cost.values())
        if total <= budget:
            return segs
        if cfg.mode == "full":
            raise AssistantError(f"the scope's raw text ({total:,} positions) does not fit the decoder's "
                                 f"{b.n_ctx:,}: use the latent mode or a smaller scope")
        if cfg.partial_positions:
            budget = min(budget, cfg.partial_positions)
        doc_of = {s.segment.id: s.segment.document_id for s in segs}
        keep, used, opened = set(), 0, set()
        for i in self._fused(segs, bm25, closeness):
            need = seg_cost[i] + (0 if doc_of[i] in opened else head_cost[doc_of[i]])
            if used + need <= budget:
                keep.add(i)
                used += need
                opened.add(doc_of[i])
        for d, ss in by_doc.items():
            read = sum(s.segment.id in keep for s in ss)
            if not read:
                answer.left_out.append(ss[0].path)
            elif read < len(ss):
                answer.partial[ss[0].path] = [read, len(ss)]
        log.info("scope of %d positions over the %d available: %d of %d passages read, %d documents not read",
                 total, budget, len(keep), len(segs), len(answer.left_out))
        return [s for s in segs if s.segment.id in keep]

    @staticmethod
    def _fused(segs: list[ScopeSegment], bm25: dict[int, float], closeness: dict[int, float]) -> list[int]:
        """Segment ids best first, for choosing which segments are read at all: bm25 fused with latent closeness.

        Only segments that match a word of the question have a bm25 rank (ties at zero are no evidence);
        closeness ranks them all, weakly; contents and index pages go last.
        """
        ids = [s.segment.id for s in segs]
        matching = sorted((i for i in ids if bm25.get(i, 0) > 0), key=lambda i: -bm25[i])
        fused = rrf(matching, sorted((i for i in ids if i in closeness), key=lambda i: -closeness[i]))
        listing = {s.segment.id for s in segs if is_listing(s.segment.text)}
        return sorted(ids, key=lambda i: (i in listing, -fused.get(i, 0.0), i))

    @staticmethod
    def _doc_parts(segs: list[ScopeSegment], raw: bool, raw_ids: set[int] = frozenset(),
                   numbered: bool = False) -> list[tuple[Part, int | None]]:
        """One document: its name, then each segment as latents or text, with the segment each part carries.

        Segment numbers and pages go in only when the model must name segments
        (the agent loop): at N = 8 a label costs as many positions as 60 tokens
        of text compress to, and citations never come from the answer text.
        """
        out: list[tuple[Part, int | None]] = [(Text(document_header(segs[0].path.rsplit('/', 1)[-1])), None)]
        for s in segs:
            if numbered:
                page = f" (page {s.segment.page})" if s.segment.page else ""
                out.append((Text(f"[{s.segment.id}]{page} "), None))
            if raw or s.latent is None or s.segment.id in raw_ids:
                out.append((Text(s.segment.text.strip() + "\n"), s.segment.id))
            else:
                out.append((Latents(_latent_tensor(s)), s.segment.id))
        return out

    def _documents_block(self, segs: list[ScopeSegment], raw: bool, raw_ids: set[int] = frozenset(),
                         numbered: bool = False) -> _Prompt:
        b = self.backend
        pairs: list[tuple[Part, int | None]] = [(Text(INSTRUCTIONS), None)]
        by_doc: dict[int, list[ScopeSegment]] = {}
        for s in segs:
            by_doc.setdefault(s.segment.document_id, []).append(s)
        for ss in by_doc.values():
            pairs.extend(self._doc_parts(ss, raw, raw_ids, numbered))
        block = b.build([part for part, _ in pairs], add_bos=True)
        # Parts tokenise independently, so each one's positions follow from its own length.
        ranges: dict[int, range] = {}
        p = 1 if b.builder.bos_id is not None else 0
        for part, sid in pairs:
            n = len(b.builder.build([part], add_bos=False))
            if sid is not None:
                ranges[sid] = range(p, p + n)
            p += n
        n_raw = 0 if raw else sum(1 for s in segs if s.latent is None)
        return _Prompt(block, ranges, n_raw)

    def _question_block(self, question: str, passages: list[ScopeSegment], numbered: bool) -> list[Part]:
        return [Text(question_block(question, [(place(s.path, s.segment.page, s.segment.location), s.segment.text)
                                               for s in passages]))]

    def _prefill_docs(self, prompt: _Prompt, cfg: AssistantConfig, answer: Answer) -> torch.Tensor:
        t = time.perf_counter()
        b = self.backend
        if cfg.prefix_cache and hasattr(b, "prefill_cached"):
            if b.n_past:
                b.reset()
            logits = b.prefill_cached(prompt.block)
            answer.prefix_reused = getattr(b, "last_prefix_hit", 0) > 0
        else:
            b.reset()
            logits = b.prefill(prompt.block)
        answer.timings["prefill_docs_s"] = time.perf_counter() - t
        return logits

    # ------------------------------------------------------------------ modes
    def _answer_rag(self, question: str, doc_ids: list[int], bm25: dict[int, float], cfg: AssistantConfig,
                    answer: Answer, t0: float, stop: threading.Event | None = None) -> Iterator[str | Answer]:
        if not bm25:
            answer.found, answer.text = False, NOT_FOUND
            yield NOT_FOUND
            yield answer
            return
        ranked = sorted(bm25, key=lambda i: -bm25[i])
        pool = {s.id: s for s in self.store.get_segments_by_id(ranked[: 4 * cfg.rag_k])}
        # a contents or index page matches every word of a question and answers none: content first
        top = sorted((i for i in ranked if i in pool), key=lambda i: is_listing(pool[i].text))[: cfg.rag_k]
        segs = {i: pool[i] for i in top}
        docs = {d.id: d.path for d in self.store.list_documents()}
        picked = [ScopeSegment(segs[i], docs.get(segs[i].document_id, ""), None) for i in top if i in segs]
        answer.citations = [self._cite(n + 1, s, bm25[s.segment.id]) for n, s in enumerate(picked)]
        answer.expanded = [s.segment.id for s in picked]
        self.backend.reset()
        t = time.perf_counter()
        logits = self.backend.prefill(self.backend.build([Text(INSTRUCTIONS), *self._question_block(question, picked, True)],
                                                         add_bos=True))
        answer.timings["prefill_docs_s"] = time.perf_counter() - t
        yield from self._generate([], cfg, answer, t0, logits=logits, halt=stop)

    def _agent(self, question: str, prompt: _Prompt, segs: list[ScopeSegment], chosen: list[int],
               cfg: AssistantConfig) -> list[int]:
        """The paper's loop: the model sees numbered segments and may ask to read some in full."""
        by_id = {s.segment.id for s in segs}
        asked: list[int] = []
        for _ in range(cfg.agent_rounds):
            tail = Text(f"\n\nQuestion: {question}\nTo read segments in full, reply EXPAND: and their numbers. "
                        f"Otherwise reply ANSWER:.\nReply:")
            logits = self.backend.prefill_cached(prompt.block, [tail]) if hasattr(self.backend, "prefill_cached") \
                else self.backend.prefill([tail])
            reply = "".join(self.backend.generate(GenerationConfig(max_new_tokens=24, stop=["\n"]), logits=logits))
            m = re.search(r"EXPAND:\s*([\d,\s\[\]]+)", reply, re.IGNORECASE)
            wanted = [int(x) for x in re.findall(r"\d+", m.group(1))] if m else []
            wanted = [i for i in wanted if i in by_id and i not in asked]
            log.debug("agent round: %r -> %s", reply, wanted)
            if not wanted:
                break
            asked.extend(wanted)
        merged = list(dict.fromkeys([*asked, *chosen]))
        return merged[: max(cfg.expand_k, len(asked))]

    def _generate(self, tail: list[Part], cfg: AssistantConfig, answer: Answer, t0: float,
                  logits: torch.Tensor | None = None, halt: threading.Event | None = None) -> Iterator[str | Answer]:
        b = self.backend
        t = time.perf_counter()
        try:
            if tail:
                logits = b.prefill(b.build(tail, add_bos=False))
        except ContextLengthError as e:
            raise AssistantError(f"the prompt does not fit the decoder's context: {e}") from e
        answer.positions = b.n_past
        answer.timings["prefill_question_s"] = time.perf_counter() - t
        res = GenerationResult()
        text, shown = "", 0  # shown: how much of text has been yielded
        names = {c.path for c in answer.citations}
        gen = b.generate(GenerationConfig(max_new_tokens=cfg.max_new_tokens, stop=["\nQuestion:", "\n\n"]),
                         logits=logits, result=res)
        for piece in gen:
            if "ttft_s" not in answer.timings:
                answer.timings["ttft_s"] = time.perf_counter() - t0
            if halt is not None and halt.is_set():  # the user pressed stop: this token is not shown
                answer.stopped = True
                gen.close()
                break
            stop = cfg.one_paragraph and text.strip() and "\n" in piece
            if stop:
                # A small model that has said its answer starts over on the next line; one paragraph is the answer.
                piece = piece.split("\n", 1)[0]
                res.finish_reason = "stop"
            if not text.strip():
                piece = piece.lstrip("\n") if not text else piece
            text += piece
            # Held back while it could still be a non-answer ("Answer:", a header): never shown, then retracted.
            if len(text.strip()) >= HOLD_CHARS and not junk_reason(text, names):
                if text[shown:]:
                    yield text[shown:]
                shown = len(text)
            if stop:
                gen.close()
                break
        answer.text = text[:shown].strip() if answer.stopped else text.strip()  # stopped: what the user saw
        answer.finish_reason = "stopped" if answer.stopped else res.finish_reason
        answer.new_tokens = len(res.token_ids)
        answer.junk = "" if answer.stopped else junk_reason(answer.text, names)
        if answer.junk:
            log.info("reply not shown (%s): %r", answer.junk, answer.text[:200])
            best = answer.citations[0] if answer.citations else None
            answer.text = fallback_text(best.where if best else None, best.text if best else None)
            if not shown:
                yield answer.text
        elif text[shown:] and not answer.stopped:
            yield text[shown:]
        answer.timings.setdefault("ttft_s", time.perf_counter() - t0)
        answer.timings["total_s"] = time.perf_counter() - t0
        yield answer

    def _cite(self, number: int, s: ScopeSegment, score: float) -> Citation:
        g = s.segment
        return Citation(number, g.id, g.document_id, s.path, g.page, g.char_start, g.char_end, g.text, score,
                        g.location)


__all__ = ["Assistant", "AssistantConfig", "AssistantError", "Answer", "Citation", "Scope", "MODES", "NOT_FOUND",
           "place", "raw_notice"]
