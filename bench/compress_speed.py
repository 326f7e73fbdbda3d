"""Encoder throughput of the default compressor: tokens/s at N = 4, 8, 16, batch sizes compared.

Text: the Python reference topics shipped with CPython (pydoc_data.topics), so
the run needs nothing but the installed app. Every configuration runs in one
process on the same text, interleaved over repeats, and the table reports the
median, so the ratios between rows are what to read on a noisy machine.

    python bench/compress_speed.py                  # full run (a few minutes on 2 cores)
    python bench/compress_speed.py --smoke          # seconds: CI keeps the script alive
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lclm_core.default_model import default_compressor, load_default_decoder  # noqa: E402
from lclm_core.device import Placement  # noqa: E402

log = logging.getLogger("bench.compress_speed")


def corpus_tokens(comp, n_tokens: int) -> list[list[int]]:
    """Documents of ~2 windows each, cut from the Python reference topics."""
    from pydoc_data.topics import topics

    ids = comp.tokenize("\n\n".join(topics[k] for k in sorted(topics)))
    if len(ids) < n_tokens:
        ids = ids * (n_tokens // len(ids) + 1)
    ids = ids[:n_tokens]
    doc = 2 * comp.config.encoder_window_size - 37  # not a multiple of W: a partial window per doc
    return [ids[i : i + doc] for i in range(0, len(ids), doc)]


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    configs = [(dt, n, b) for dt in args.dtypes for n in args.ratios for b in args.batches]
    comps, docs = {}, {}
    for dt in args.dtypes:
        placement = Placement(torch.device("cpu"), getattr(torch, dt))
        model, tok = load_default_decoder(placement)
        for n in args.ratios:
            comps[dt, n] = default_compressor(n, placement, decoder=(model, tok))
            docs[dt, n] = corpus_tokens(comps[dt, n], args.tokens)
    times: dict[tuple, list[float]] = {c: [] for c in configs}
    for c in configs:  # warm-up: bf16 kernels need a couple of calls
        comps[c[0], c[1]].forward_ids(docs[c[0], c[1]][:2], windows_per_batch=c[2])
    for _ in range(args.repeats):
        for c in configs:  # interleaved, so drift hits every configuration alike
            dt, n, b = c
            t = time.perf_counter()
            comps[dt, n].forward_ids(docs[dt, n], windows_per_batch=b)
            times[c].append(time.perf_counter() - t)
    for c in configs:
        dt, n, b = c
        n_tok = sum(len(d) for d in docs[dt, n])
        n_lat = sum(-(-len(d) // n) for d in docs[dt, n])
        med = statistics.median(times[c])
        rows.append({"dtype": dt, "N": n, "windows/batch": b, "tokens": n_tok, "tokens/s": n_tok / med,
                     "latents/s": n_lat / med, "min s": min(times[c]), "median s": med})
    return rows


def table(rows: list[dict]) -> str:
    base = {r["dtype"]: r["tokens/s"] for r in rows if r["windows/batch"] == rows[0]["windows/batch"] and r["N"] == rows[0]["N"]}
    out = ["| dtype | N | windows/batch | tokens | tokens/s (median) | latents/s | vs first row of dtype |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['dtype']} | {r['N']} | {r['windows/batch']} | {r['tokens']} | {r['tokens/s']:.0f} | "
                   f"{r['latents/s']:.0f} | {r['tokens/s'] / base[r['dtype']]:.2f}x |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8], help="windows per forward pass")
    p.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    p.add_argument("--tokens", type=int, default=8192, help="tokens encoded per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--smoke", action="store_true", help="tiny run to check the script works")
    args = p.parse_args(argv)
    if args.smoke:
        args.ratios, args.batches, args.dtypes, args.tokens, args.repeats = [8], [2], ["float32"], 600, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = run(args)
    print(f"Encoder throughput, default compressor (Gemma-3-270M layers 0-5, W=512), CPU, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
