"""Indexing on Ray against the local indexer, in one run; and shard bytes against the SQLite store.

What it runs: a corpus of real text nobody here wrote (the first pages of Debian's R-intro.pdf and
mid-sized topics of CPython's reference, as .txt), indexed into a fresh store by
- the local indexer (``IndexingService``: scan, one worker thread, the compressor loaded once);
- ``app.ray_index.index_store`` on a local Ray cluster with 1, 2 and 4 encoder actors
  (and one parser actor), the cluster started once and shared;
in alternation, ``--repeat`` rounds, so drift on a noisy machine hits every column alike.
Wall time runs from the scan's document list to the last commit; for Ray it includes starting the
actors and loading the model in each (what a run pays), and the model load is timed separately
for the local indexer (which loads it once, before). Medians over the rounds.

Then the local store is exported as shards: bytes per 1M tokens of the shards (Parquet, zstd)
and of the SQLite store (latents, text, FTS index, WAL).

    python bench/ray_index.py                      # the embedded default at N=8 (minutes on 2 cores)
    python bench/ray_index.py --smoke --checkpoint DIR   # a small corpus, any published-layout checkpoint
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.index_speed import R_INTRO, make_corpus  # noqa: E402
from bench.report_files import write_report  # noqa: E402

log = logging.getLogger("bench.ray_index")
M = 1_000_000


@dataclass
class Row:
    how: str  # "local" or "ray xN"
    round: int
    docs: int
    indexed: int
    tokens: int
    wall_s: float
    first_s: float  # when the first document was written: start-up (actors, model loads) shows here

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.wall_s

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s


def _tokens(store) -> int:
    return sum(s.n_tokens or 0 for d in store.list_documents() for s in store.get_segments(d.id))


def corpus_of(dest: Path, pdf: Path, pages: int, topics: int) -> None:
    """R-intro's first ``pages`` pages and ``topics`` mid-sized Python reference topics (real text nobody here wrote)."""
    from pydoc_data.topics import topics as all_topics
    from pypdf import PdfReader, PdfWriter

    dest.mkdir(parents=True, exist_ok=True)
    if pdf.exists() and pages:
        w = PdfWriter()
        for page in PdfReader(pdf).pages[:pages]:
            w.add_page(page)
        with open(dest / pdf.name, "wb") as f:
            w.write(f)
    by_size = sorted(all_topics, key=lambda k: -len(all_topics[k]))
    mid = len(by_size) // 4
    for name in by_size[mid: mid + topics]:
        (dest / f"topic-{name}.txt").write_text(all_topics[name], encoding="utf-8")


class FirstDocument:
    """A progress callback that notes when the first document is written."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.at: float | None = None

    def __call__(self, p) -> None:
        if self.at is None and p.outcome is not None and p.outcome.status == "indexed":
            self.at = time.perf_counter() - self.t0


def run_local(settings, comp, corpus: Path, work: Path, rnd: int) -> Row:
    from app.services import IndexingService
    from latent_store import LatentStore

    with LatentStore(work / "store.sqlite") as store:
        svc = IndexingService.create(store, comp, [corpus])
        ids = svc.scan()
        first = FirstDocument()
        svc.indexer.add_callback(first)
        t0 = first.t0
        svc.indexer.enqueue(ids)
        with svc.indexer:
            svc.indexer.wait_idle()
        wall = time.perf_counter() - t0
        docs = store.list_documents()
        return Row("local", rnd, len(docs), sum(d.status == "indexed" for d in docs), _tokens(store), wall, first.at)


def run_ray(settings, comp, corpus: Path, work: Path, actors: int, rnd: int) -> Row:
    from app.ray_index import RayOptions, index_store
    from app.services import IndexingService
    from latent_store import LatentStore

    with LatentStore(work / "store.sqlite") as store:
        ids = IndexingService.create(store, comp, [corpus]).scan()
        first = FirstDocument()
        t0 = first.t0
        r = index_store(store, settings, comp.fingerprint, ids, ratio=settings.ratio,
                        options=RayOptions(actors=actors), callbacks=[first])
        wall = time.perf_counter() - t0
        if r.error:
            raise RuntimeError(f"ray x{actors}: {r.error}")
        docs = store.list_documents()
        return Row(f"ray x{actors}", rnd, len(docs), sum(d.status == "indexed" for d in docs), _tokens(store), wall,
                   first.at)


def sizes(settings, comp, store_path: Path, out: Path) -> dict:
    from app.shards import Identity, export_store
    from latent_store import LatentStore

    with LatentStore(store_path) as store:
        store._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        tokens = _tokens(store)
        st = store.stats()
        r = export_store(store, out, Identity.of(settings, comp))
    store_bytes = sum(p.stat().st_size for p in store_path.parent.glob(store_path.name + "*"))
    return {"tokens": tokens, "shard_bytes": r.bytes, "shards": len(r.shards), "store_bytes": store_bytes,
            "latent_bytes": st.latent_bytes, "text_bytes": st.text_bytes,
            "shard_mb_per_1m": r.bytes / tokens * M / 2**20, "store_mb_per_1m": store_bytes / tokens * M / 2**20,
            "latent_mb_per_1m": st.latent_bytes / tokens * M / 2**20}


def table(rows: list[Row]) -> str:
    hows = list(dict.fromkeys(r.how for r in rows))
    local = statistics.median(r.wall_s for r in rows if r.how == "local")
    out = ["| indexer | docs | tokens | wall s | first document at s | docs/s | tokens/s | time vs local |",
           "|---|---|---|---|---|---|---|---|"]
    for h in hows:
        rs = [r for r in rows if r.how == h]
        wall = statistics.median(r.wall_s for r in rs)
        first = statistics.median(r.first_s for r in rs)
        out.append(f"| {h} | {rs[0].indexed}/{rs[0].docs} | {rs[0].tokens:,} | {wall:.1f} | {first:.1f} | "
                   f"{rs[0].docs / wall:.2f} | "
                   f"{rs[0].tokens / wall:,.0f} | {wall / local:.2f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--smoke", action="store_true", help="4 PDF pages + 3 small texts")
    p.add_argument("--pages", type=int, default=30, help="R-intro pages in the corpus (default %(default)s)")
    p.add_argument("--topics", type=int, default=20, help="Python reference topics in the corpus (default %(default)s)")
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--repeat", type=int, default=3, help="rounds (medians are quoted)")
    p.add_argument("--ratio", type=int, default=8)
    p.add_argument("--checkpoint", help="a published-layout checkpoint instead of the embedded default")
    p.add_argument("--pdf", type=Path, default=R_INTRO)
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pypdf").setLevel(logging.ERROR)

    import ray
    import torch

    from app.services import load_compressor_only
    from app.settings import Settings

    with tempfile.TemporaryDirectory(prefix="lclm-ray-bench-") as tmp:
        tmp = Path(tmp)
        settings = Settings(data_dir=tmp / "unused", device="cpu", ratio=args.ratio, checkpoint=args.checkpoint)
        t = time.perf_counter()
        comp = load_compressor_only(settings, args.ratio)
        load_s = time.perf_counter() - t
        corpus = (tmp / "corpus")
        if args.smoke:
            make_corpus(corpus, True, args.pdf)
        else:
            corpus_of(corpus, args.pdf, args.pages, args.topics)
        corpus = corpus.resolve()
        t = time.perf_counter()
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        ray_start_s = time.perf_counter() - t
        rows: list[Row] = []
        for rnd in range(args.repeat):
            rows.append(run_local(settings, comp, corpus, _fresh(tmp, "local", rnd), rnd))
            log.warning("round %d local: %.1f s", rnd, rows[-1].wall_s)
            for a in args.actors:
                rows.append(run_ray(settings, comp, corpus, _fresh(tmp, f"ray{a}", rnd), a, rnd))
                log.warning("round %d ray x%d: %.1f s", rnd, a, rows[-1].wall_s)
        ray.shutdown()
        size = sizes(settings, comp, tmp / "local-0" / "store.sqlite", tmp / "shards")
    who = f"checkpoint {args.checkpoint}" if args.checkpoint else f"embedded default N={args.ratio} (trained: {comp.trained})"
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    md = "\n".join([
        f"ray_index{' --smoke' if args.smoke else ''}: {who}, torch {torch.__version__}, ray {ray.__version__}, "
        f"{os.cpu_count()} CPUs, load average {load}; compressor loaded in {load_s:.1f} s (local, once), "
        f"local Ray cluster started in {ray_start_s:.1f} s (once); {args.repeat} rounds, medians",
        "", table(rows), "",
        "Ray's wall time includes starting its actors and loading the model in each; one parser actor.", "",
        f"Size per 1M tokens ({size['tokens']:,} tokens): shards {size['shard_mb_per_1m']:.1f} MB "
        f"({size['shards']} file(s), Parquet zstd), SQLite store {size['store_mb_per_1m']:.1f} MB "
        f"(of which latent blobs {size['latent_mb_per_1m']:.1f} MB).",
    ])
    print(md)
    if args.out:
        write_report(args.out, md, {"rows": [asdict(r) for r in rows], "sizes": size, "load_s": load_s,
                                    "ray_start_s": ray_start_s, "args": {k: str(v) for k, v in vars(args).items()}})
    return 0


def _fresh(tmp: Path, name: str, rnd: int) -> Path:
    d = tmp / f"{name}-{rnd}"
    d.mkdir()
    return d


if __name__ == "__main__":
    sys.exit(main())
