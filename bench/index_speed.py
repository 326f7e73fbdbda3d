"""Indexing speed and index size of the default compressor, next to raw text and KV cache.

What it runs: the app's own pipeline (``app.watcher.FolderSync`` scan ->
``app.indexer.Indexer``: parse, segment, encode, one transaction per
document) on a folder holding Debian's R-intro.pdf (package r-doc-pdf) and
the 40 longest Python reference topics (``pydoc_data.topics``, shipped with
CPython) as .txt files, once per compression ratio N, each into a fresh store.

What it prints (markdown):
- speed: documents/s and tokens/s, wall clock from scan to idle (parsing and
  SQLite included) and encoder-only;
- size per 1M tokens: the latent blobs and the whole store file (latents +
  segment text + FTS index) at each N, the extracted text, and the decoder's
  KV cache for the same tokens read as text and read as latents (T / N
  positions). The KV size comes from the decoder's config: 2 (K and V) x
  kv_heads x head_dim x 2 bytes (bf16) per position per layer; Gemma-3's
  sliding-window layers keep at most ``sliding_window`` positions, so two
  columns: every layer keeping every position (what a plain cache without
  sliding-window eviction holds), and full-attention layers only + a capped
  sliding part. Per 1M tokens is a unit, not a claim: Gemma-3-270M reads 32k.

    python bench/index_speed.py                 # full run (minutes on 2 cores)
    python bench/index_speed.py --smoke         # seconds after the model loads
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.indexer import Indexer, IndexerConfig, Progress  # noqa: E402
from app.watcher import FolderSync  # noqa: E402
from latent_store import LatentStore  # noqa: E402

log = logging.getLogger("bench.index_speed")

R_INTRO = Path("/usr/share/R/doc/manual/R-intro.pdf")
M = 1_000_000


# ------------------------------------------------------------------ corpus
def make_corpus(dest: Path, smoke: bool, pdf: Path) -> None:
    """R-intro.pdf (the first 4 pages in --smoke) and Python topics as .txt files."""
    from pydoc_data.topics import topics

    dest.mkdir(parents=True, exist_ok=True)
    if pdf.exists():
        if smoke:
            from pypdf import PdfReader, PdfWriter

            w = PdfWriter()
            for page in PdfReader(pdf).pages[18:22]:
                w.add_page(page)
            with open(dest / pdf.name, "wb") as f:
                w.write(f)
        else:
            shutil.copy(pdf, dest / pdf.name)
    else:
        log.warning("%s not found (Debian package r-doc-pdf): text documents only", pdf)
    by_size = sorted(topics, key=lambda k: -len(topics[k]))
    mid = len(by_size) // 3
    chosen = by_size[mid : mid + 3] if smoke else by_size[:40]  # smoke: three mid-sized topics
    for name in chosen:
        (dest / f"topic-{name}.txt").write_text(topics[name], encoding="utf-8")


# --------------------------------------------------------------- KV cache
@dataclass(frozen=True)
class KVShape:
    layers: int
    full_layers: int
    kv_heads: int
    head_dim: int
    sliding_window: int | None
    bytes_per_value: int = 2  # bf16

    @property
    def per_position_layer(self) -> int:
        return 2 * self.kv_heads * self.head_dim * self.bytes_per_value

    def all_layers(self, positions: float) -> float:
        """Every layer keeps every position."""
        return self.layers * self.per_position_layer * positions

    def with_swa(self, positions: float) -> float:
        """Full-attention layers keep every position; sliding layers at most the window."""
        sliding = self.layers - self.full_layers
        window = min(positions, self.sliding_window or positions)
        return self.per_position_layer * (self.full_layers * positions + sliding * window)


def kv_shape(config) -> KVShape:  # noqa: ANN001 - a transformers config
    types = list(getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return KVShape(config.num_hidden_layers, sum(t == "full_attention" for t in types), config.num_key_value_heads,
                   head_dim, getattr(config, "sliding_window", None))


# ------------------------------------------------------------------- runs
@dataclass
class Result:
    ratio: int
    documents: int
    indexed: int
    pages: int
    segments: int
    tokens: int
    wall_s: float
    encode_s: float
    latent_bytes: int
    store_bytes: int
    text_bytes: int


def index_once(comp, corpus: Path, workdir: Path) -> Result:
    """Index the corpus into a fresh store; time from scan to idle."""
    events: list[Progress] = []
    with LatentStore(workdir / "store.sqlite") as store:
        t0 = time.perf_counter()
        ix = Indexer(store, comp, IndexerConfig(), [events.append])
        FolderSync(store, [corpus], enqueue=ix.enqueue).reconcile()
        with ix:
            ix.wait_idle()
        wall = time.perf_counter() - t0
        docs = store.list_documents()
        for d in docs:
            if d.status != "indexed":
                log.warning("%s: %s %s", d.path, d.status, d.error)
        st = store.stats()
        tokens = sum(s.n_tokens or 0 for d in docs for s in store.get_segments(d.id))
    last = events[-1]
    encode_s = last.tokens_encoded / last.tokens_per_s if last.tokens_per_s else float("nan")
    return Result(comp.config.compression_ratio, len(docs), sum(d.status == "indexed" for d in docs),
                  sum(d.page_count or 0 for d in docs), st.segments, tokens, wall, encode_s, st.latent_bytes,
                  st.db_bytes, st.text_bytes)  # db_bytes: pages as the connection sees them, WAL included once


def warm_up(comp) -> None:
    """bf16 CPU kernels are slow on their first calls; keep that out of the timing."""
    for _ in range(2):
        comp.compress(["Warm-up text for the encoder. " * 40] * 2)


# ------------------------------------------------------------------ tables
def mb(x: float) -> str:
    return f"{x / 1e6:,.1f} MB" if x < 1e9 else f"{x / 1e9:,.2f} GB"


def tables(results: list[Result], kv: KVShape, dec_dim: int) -> str:
    out = ["| N | documents (indexed) | pages | segments | tokens | wall s | docs/s | tokens/s (wall) | tokens/s (encoder) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        out.append(f"| {r.ratio} | {r.documents} ({r.indexed}) | {r.pages} | {r.segments} | {r.tokens:,} | {r.wall_s:.1f} | "
                   f"{r.documents / r.wall_s:.2f} | {r.tokens / r.wall_s:,.0f} | {r.tokens / r.encode_s:,.0f} |")
    out += ["", "Bytes per 1M tokens (latents float16, %d wide; KV bf16: %d layers, %d full-attention, %d KV head(s) x %d, "
            "sliding window %s):" % (dec_dim, kv.layers, kv.full_layers, kv.kv_heads, kv.head_dim, kv.sliding_window), "",
            "| N | latent blobs | store file (latents + text + FTS) | raw text (UTF-8) | KV of the text, all layers | "
            "KV of the text, SWA capped | KV of the latents (T/N), SWA capped |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        per = M / r.tokens
        out.append(f"| {r.ratio} | {mb(r.latent_bytes * per)} | {mb(r.store_bytes * per)} | {mb(r.text_bytes * per)} | "
                   f"{mb(kv.all_layers(M))} | {mb(kv.with_swa(M))} | {mb(kv.with_swa(M / r.ratio))} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="4 PDF pages + 3 small texts (seconds after the model loads)")
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--pdf", type=Path, default=R_INTRO)
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    import torch

    from lclm_core.default_model import default_compressor, load_default_decoder
    from lclm_core.device import resolve

    placement = resolve(args.device, args.dtype)
    t = time.perf_counter()
    model, tok = load_default_decoder(placement)
    load_s = time.perf_counter() - t
    kv = kv_shape(model.config)
    with tempfile.TemporaryDirectory(prefix="lclm-index-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        make_corpus(corpus, args.smoke, args.pdf)
        results = []
        for n in args.ratios:
            comp = default_compressor(n, placement, decoder=(model, tok))
            warm_up(comp)
            work = Path(tmp) / f"store-{n}"
            work.mkdir()
            results.append(index_once(comp, corpus.resolve(), work))
            log.info("N=%d done in %.1f s", n, results[-1].wall_s)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    print(f"index_speed{' --smoke' if args.smoke else ''}: default compressor (trained: {comp.trained}) on {placement}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {load}; decoder loaded in {load_s:.1f} s\n")
    print(tables(results, kv, comp.dec_dim))
    expected = {r.ratio: comp.dec_dim * 2 * math.ceil(512 / r.ratio) / 512 for r in results}
    print("\nlatent bytes/token if every segment were 512 tokens: "
          + ", ".join(f"N={n}: {b:.0f}" for n, b in expected.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
