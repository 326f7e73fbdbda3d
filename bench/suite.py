"""Every method on one prompt: how ``bench/run_all.py`` measures accuracy, speed and memory side by side.

An *item* is a context cut into segments, the prompt text around it, and the
query BM25 ranks the segments against. Each method turns the item into a
prompt for the same decoder:

  none            the prompt without the context: the floor
  raw             the whole context as text
  truncation-N    the context's last tokens/N tokens as text
  rag             the BM25 top-k segments as text, in document order
  snapkv-N        raw, prefilled, then its KV cache cut by SnapKV (bench/snapkv.py)
                  to as many positions as the latents-N prompt has
  latents-N       every segment as its latent block, compressed by the LCLM at ratio N
  latents+exp-N   latents-N with the BM25 top-k segments put back as text in
                  place (the paper's layout), chosen by retrieval rather than by
                  the model; the app quotes them before the question instead,
                  and bench/eval_qa.py measures the two layouts side by side

Time to first token (TTFT) runs from a built prompt to the first token's
logits: the prefill, plus BM25 for rag and expansion, plus the cache cut for
SnapKV. Compression is timed apart (``encode_s``), so a report can give TTFT
with the latents cached (what the app does: documents are compressed once,
when indexed) and with compression included (a document seen for the first
time). raw and every snapkv-N share one prefill, SnapKV's observed one (its
last 32 positions run with eager attention to read their scores): SnapKV pays
the whole prefill, which is what it is, and the benchmark pays it once.

Memory: the process' peak resident set over the prefill above the resident set
just before it (freed heap returned with ``malloc_trim``, VmHWM reset through
``/proc/self/clear_refs``; Linux), and the bytes of KV cache the decoder holds
when the first token is sampled.
"""

from __future__ import annotations

import ctypes
import gc
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from bench.eval_qa import Evaluator, merged_spans
from bench.snapkv import compressed_cache, kv_bytes, observe
from lclm_core.backend import ContextLengthError, GenerationConfig
from lclm_core.inputs import Part

FAMILIES = ("none", "raw", "truncation", "rag", "snapkv", "latents", "latents+exp")
RATIO_FAMILIES = ("truncation", "snapkv", "latents", "latents+exp")
SNAPKV_WINDOW = 32


def method_names(ratios: Sequence[int]) -> list[str]:
    """Every method at the given compression ratios, in report order."""
    names = ["none", "raw"]
    names += [f"truncation-{n}" for n in ratios] + ["rag"] + [f"snapkv-{n}" for n in ratios]
    names += [f"latents-{n}" for n in ratios] + [f"latents+exp-{n}" for n in ratios]
    return names


def parse_method(name: str) -> tuple[str, int | None]:
    """("latents", 8) for "latents-8"; ("raw", None) for "raw"."""
    family, sep, n = name.rpartition("-")
    if sep and family in RATIO_FAMILIES and n.isdigit():
        return family, int(n)
    if name in FAMILIES and name not in RATIO_FAMILIES:
        return name, None
    raise ValueError(f"unknown method {name!r}; methods: {', '.join(FAMILIES)} (ratio ones as e.g. latents-8)")


# --- memory --------------------------------------------------------------------------------
def _status_kb(field_name: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """The resident set a block adds at its peak, in MB (None where Linux's counters are missing)."""

    def __enter__(self) -> "PeakRSS":
        gc.collect()
        _malloc_trim()
        self.before = _status_kb("VmRSS")
        try:
            Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
            self.resettable = True
        except OSError:
            self.resettable = False
        self.mb: float | None = None
        return self

    def __exit__(self, *exc) -> None:
        peak = _status_kb("VmHWM")
        if self.resettable and peak is not None and self.before is not None:
            self.mb = max(peak - self.before, 0) / 1024


# --- items and outcomes ----------------------------------------------------------------------
@dataclass
class Item:
    """A context in segments (token ids of the compressor's tokenizer) and the prompt around it."""

    segments: list[list[int]]
    before: list[Part]  # prompt parts before the context
    after: list[Part]  # after it: the question, a primed answer
    bare: list[Part]  # the whole prompt of method none
    query: str = ""  # what BM25 ranks the segments against
    top_k: int = 1


@dataclass
class Outcome:
    method: str
    family: str
    ratio: int | None
    positions: int | None = None  # prompt positions the decoder reads
    raw_tokens: int = 0  # context tokens read as text
    ttft_s: float | None = None  # built prompt -> first-token logits (latents cached)
    encode_s: float = 0.0  # compression this method needs on a document seen for the first time
    peak_mb: float | None = None
    encode_peak_mb: float | None = None
    kv_bytes: int | None = None
    result: dict = field(default_factory=dict)
    error: str | None = None  # why the method could not run (the prompt does not fit)

    @property
    def ttft_cold_s(self) -> float | None:
        return None if self.ttft_s is None else self.ttft_s + self.encode_s


Finish = Callable[[object, torch.Tensor, bool], dict]  # (decoder, first logits, single steps only) -> result


def answer_with(max_new_tokens: int) -> Finish:
    """Greedy answer up to the first newline."""

    def finish(dec, logits: torch.Tensor, single_steps: bool) -> dict:
        cfg = GenerationConfig(max_new_tokens=max_new_tokens, stop=["\n"])
        return {"answer": "".join(dec.generate(cfg, logits=logits)).strip()}

    return finish


def score_continuation(ids: Sequence[int]) -> Finish:
    """Negative log-likelihood of ``ids`` continuing the prompt (teacher forcing).

    After a SnapKV cut only one new token at a time may follow (the kept keys no
    longer sit at the positions their index says), so those methods score
    token by token; the others score the continuation in one pass.
    """
    ids = list(ids)

    @torch.no_grad()
    def finish(dec, logits: torch.Tensor, single_steps: bool) -> dict:
        rows = [logits.float()]
        if single_steps:
            for t in ids[:-1]:
                rows.append(dec._run(dec.token_embeddings([t]), want_logits=True).float())
            all_logits = torch.stack(rows)
        else:
            emb = dec.token_embeddings(ids[:-1])
            pos = torch.arange(dec.n_past, dec.n_past + len(ids) - 1, device=dec.device)[None]
            out = dec.model(inputs_embeds=emb[None], position_ids=pos, past_key_values=dec.cache, use_cache=True)
            dec.cache = out.past_key_values
            dec.n_past += len(ids) - 1
            all_logits = torch.cat([logits.float()[None], out.logits[0].float()])
        logp = torch.log_softmax(all_logits, dim=-1)
        nll = -logp[torch.arange(len(ids)), torch.tensor(ids)]
        return {"nll_sum": float(nll.sum()), "tokens": len(ids)}

    return finish


def perplexity(results: Sequence[dict]) -> float | None:
    """exp of the mean NLL per token over scored results (``score_continuation``'s, or records holding them)."""
    done = [r for r in results if r.get("error") is None and "nll_sum" in r]
    n = sum(r["tokens"] for r in done)
    return math.exp(sum(r["nll_sum"] for r in done) / n) if n else None


# --- the runner --------------------------------------------------------------------------------
class Runner:
    """The methods on one base decoder; one evaluator (compressor) per ratio, whose decoder reads
    that ratio's latent methods (the base one, or an adapted copy for parts with a decoder LoRA)."""

    def __init__(self, evaluators: dict[int, Evaluator], methods: Sequence[str], window: int = SNAPKV_WINDOW,
                 base: Evaluator | None = None):
        if not evaluators:
            raise ValueError("no compressor to evaluate")
        self.evaluators = dict(evaluators)
        self.methods = list(methods)
        self.parsed = {m: parse_method(m) for m in self.methods}
        missing = {n for _, n in self.parsed.values() if n is not None} - set(self.evaluators)
        if missing:
            raise ValueError(f"methods at ratio(s) {sorted(missing)} but compressors only at {sorted(self.evaluators)}")
        # Tokenizer, raw parts and the baselines' decoder: the base evaluator, else the first ratio's.
        self.ev = base or next(iter(self.evaluators.values()))
        self.dec = self.ev.decoder
        self.window = window

    def run(self, item: Item, finish: Finish) -> list[Outcome]:
        """Every method on the item, in ``self.methods`` order."""
        ev, dec = self.ev, self.dec
        segs = item.segments
        all_ids = [t for s in segs for t in s]
        families = {f for f, _ in self.parsed.values()}
        need_latents = {n for f, n in self.parsed.values() if f in ("latents", "latents+exp", "snapkv")}

        latents, encode_s, encode_peak = {}, {}, {}
        for n in sorted(need_latents):
            with PeakRSS() as pk:
                t = time.perf_counter()
                latents[n] = self.evaluators[n].compress(segs)
                encode_s[n] = time.perf_counter() - t
            encode_peak[n] = pk.mb
        t = time.perf_counter()
        top = sorted(ev.expansion(item.query, segs, item.top_k)) if families & {"rag", "latents+exp"} else []
        rank_s = time.perf_counter() - t

        def wrap(ctx: list[Part]) -> list[Part]:
            return [*item.before, *ctx, *item.after]

        def latent_parts(n: int, raw: Sequence[int] = ()) -> list[Part]:
            return wrap(self.evaluators[n].context_parts(segs, latents[n], raw))

        prompts: dict[str, tuple[list[Part], int, float, float]] = {}  # method -> parts, raw tokens, extra s, encode s
        for m, (f, n) in self.parsed.items():
            if f == "none":
                prompts[m] = (list(item.bare), 0, 0.0, 0.0)
            elif f == "truncation":
                keep = max(1, len(all_ids) // n)
                prompts[m] = (wrap([ev.raw_part(all_ids[-keep:])]), keep, 0.0, 0.0)
            elif f == "rag":
                prompts[m] = (wrap([ev.raw_part(segs[i]) for i in top]), sum(len(segs[i]) for i in top), rank_s, 0.0)
            elif f == "latents":
                prompts[m] = (latent_parts(n), 0, 0.0, encode_s[n])
            elif f == "latents+exp":
                prompts[m] = (latent_parts(n, top), sum(len(segs[i]) for i in top), rank_s, encode_s[n])

        out: dict[str, Outcome] = {}
        if families & {"raw", "snapkv"}:
            self._observed(item, segs, all_ids, latent_parts, finish, out)
        for m, (parts, raw_tokens, extra_s, enc_s) in prompts.items():
            f, n = self.parsed[m]
            o = Outcome(m, f, n, raw_tokens=raw_tokens, encode_s=enc_s,
                        encode_peak_mb=encode_peak.get(n) if f in ("latents", "latents+exp") else None)
            out[m] = o
            # A latent method is read by its own ratio's decoder (the app's: an adapted copy where
            # the parts carry a decoder LoRA); the baselines by the base decoder, as without LCLM.
            e = self.evaluators[n] if f in ("latents", "latents+exp") else ev
            d = e.decoder
            try:
                inputs = e._fresh_prompt(parts)
            except ContextLengthError as err:
                o.error = str(err)
                continue
            o.positions = len(inputs)
            with PeakRSS() as pk:
                t = time.perf_counter()
                logits = d.prefill(merged_spans(d, inputs, e.prefill_chunk))
                o.ttft_s = time.perf_counter() - t + extra_s
            o.peak_mb, o.kv_bytes = pk.mb, kv_bytes(d.cache)
            o.result = finish(d, logits, False)
            d.reset()
        dec.reset()
        return [out[m] for m in self.methods]

    def _observed(self, item: Item, segs, all_ids, latent_parts, finish: Finish, out: dict[str, Outcome]) -> None:
        """raw and snapkv-N from one observed prefill of the whole context."""
        ev, dec = self.ev, self.dec
        raw_parts = [*item.before, *ev.context_parts(segs, None), *item.after]
        names = [m for m, (f, _) in self.parsed.items() if f in ("raw", "snapkv")]
        for m in names:
            f, n = self.parsed[m]
            out[m] = Outcome(m, f, n, raw_tokens=len(all_ids))
        try:
            inputs = ev._fresh_prompt(raw_parts)
        except ContextLengthError as e:
            for m in names:
                out[m].error = str(e)
            return
        with PeakRSS() as pk:
            t = time.perf_counter()
            obs = observe(dec, inputs, self.window)
            observe_s = time.perf_counter() - t
        full, n_past = dec.cache, dec.n_past
        for m in sorted(names, key=lambda m: self.parsed[m][0] == "raw"):  # the cuts copy; raw, last, takes it whole
            f, n = self.parsed[m]
            o = out[m]
            o.peak_mb = pk.mb
            if f == "raw":
                dec.cache = full
                o.positions, o.ttft_s = obs.total, observe_s
            else:
                budget = max(len(dec.build(latent_parts(n), add_bos=True)), self.window + 1)
                t = time.perf_counter()
                dec.cache = compressed_cache(full, obs, budget)
                o.positions, o.ttft_s = min(budget, obs.total), observe_s + time.perf_counter() - t
            dec.n_past = n_past
            o.kv_bytes = kv_bytes(dec.cache)
            o.result = finish(dec, obs.logits, f == "snapkv")
        dec.reset()
