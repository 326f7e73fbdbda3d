"""Decoder backends compared: time to first token and generation speed, cold and with the prefix cached.

Prompts are what the assistant sends: ``<bos>Documents:`` + one latent block
+ `` Question: ... Answer:``, sized to 1k / 4k / 16k positions in all. Latent
rows are the decoder's own (scaled) token embeddings of the Python reference
topics (pydoc_data.topics), so the run needs nothing but the installed app.

- TTFT cold: prefill of the whole prompt on an empty sequence + choosing the
  first token (greedy).
- TTFT warm: the documents' block is already cached; llama.cpp restores its
  state through ``prefill_cached`` (state + stored logits), torch restores a
  deep copy of its KV cache (a bench-only snapshot: the torch backend has no
  prefix cache of its own). Then the question is prefilled.
- gen tok/s: the next ``--gen`` tokens one by one after the cold prompt
  (end-of-sequence ignored, so every run decodes the same count).

Configurations are interleaved over repeats and the table reports medians.

    python bench/backends.py                    # full run (~10-15 min on 2 cores)
    python bench/backends.py --smoke            # seconds: keeps the script alive
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lclm_core.backend import DecoderBackend, GenerationConfig, GenerationResult  # noqa: E402
from lclm_core.default_model import ensure_gguf, gguf_sha256, load_default_decoder  # noqa: E402
from lclm_core.device import Placement  # noqa: E402
from lclm_core.inputs import Latents, Text  # noqa: E402
from lclm_core.llama_backend import LlamaCppDecoder, PrefixStateCache  # noqa: E402
from lclm_core.torch_backend import TorchDecoder  # noqa: E402

log = logging.getLogger("bench.backends")

QUESTION = " Question: Which statement creates a new function object, and where is its name bound? Answer:"
BACKENDS = ("llama.cpp", "torch-bf16", "torch-fp32")


@dataclass
class Timings:
    ttft_cold: list[float] = field(default_factory=list)
    ttft_warm: list[float] = field(default_factory=list)
    gen_tps: list[float] = field(default_factory=list)
    state_mb: float = 0.0


def latent_rows(llm: LlamaCppDecoder, n: int) -> torch.Tensor:
    """(n, hidden) input-space rows: token embeddings of real text, cycled to length n."""
    from pydoc_data.topics import topics

    ids = llm.tokenizer("\n\n".join(topics[k] for k in sorted(topics))[:400_000], add_special_tokens=False)["input_ids"]
    ids = (ids * (n // len(ids) + 1))[:n]
    return llm.token_embeddings(ids)


class Runner:
    """One backend plus what it needs to time a prompt cold and warm."""

    def __init__(self, name: str, backend: DecoderBackend) -> None:
        self.name, self.backend = name, backend
        self._snapshots: dict[int, tuple] = {}

    def prefill_docs(self, docs: list, warm: bool):
        b = self.backend
        b.reset()
        if isinstance(b, LlamaCppDecoder):
            if not warm:
                b.prefix_cache.clear()
            return b.prefill_cached(docs)
        key = id(docs)
        if warm and key in self._snapshots:
            cache, n_past, logits = self._snapshots[key]
            b.cache, b.n_past = copy.deepcopy(cache), n_past
            return logits
        logits = b.prefill(docs)
        self._snapshots[key] = (copy.deepcopy(b.cache), b.n_past, logits)
        return logits

    def ttft(self, docs: list, question: list, warm: bool) -> float:
        t = time.perf_counter()
        self.prefill_docs(docs, warm)
        logits = self.backend.prefill(question)
        int(torch.argmax(logits))
        return time.perf_counter() - t

    def gen_tps(self, docs: list, question: list, n_tokens: int) -> float:
        b = self.backend
        self.prefill_docs(docs, warm=True)
        logits = b.prefill(question)
        eos, b.eos_ids = b.eos_ids, set()  # every run decodes exactly n_tokens
        try:
            res = GenerationResult()
            t = time.perf_counter()
            for _ in b.generate(GenerationConfig(max_new_tokens=n_tokens), logits=logits, result=res):
                pass
            dt = time.perf_counter() - t
        finally:
            b.eos_ids = eos
        return len(res.token_ids) / dt

    def state_mb(self) -> float:
        b = self.backend
        return len(b.ctx.state_get()) / 2**20 if isinstance(b, LlamaCppDecoder) else 0.0


def make_runners(args: argparse.Namespace, n_ctx: int) -> tuple[list[Runner], LlamaCppDecoder]:
    tok = load_default_decoder(Placement(torch.device("cpu"), torch.float32 if "torch-fp32" in args.backends else torch.bfloat16))[1]
    llm = LlamaCppDecoder(ensure_gguf(), tok, n_ctx=n_ctx, n_batch=args.n_batch,
                          prefix_cache=PrefixStateCache(max_bytes=4 << 30), fingerprint=gguf_sha256())
    runners = []
    for name in args.backends:
        if name == "llama.cpp":
            runners.append(Runner(name, llm))
        else:
            dtype = torch.bfloat16 if name == "torch-bf16" else torch.float32
            model, tk = load_default_decoder(Placement(torch.device("cpu"), dtype))
            runners.append(Runner(name, TorchDecoder(model, tk, n_ctx=n_ctx)))
    return runners, llm


def run(args: argparse.Namespace) -> list[dict]:
    n_ctx = (max(args.sizes) + args.gen + 255) // 256 * 256
    runners, llm = make_runners(args, n_ctx)
    q_len = len(llm.build([Text(QUESTION)], add_bos=False))
    head = len(llm.build([Text("Documents:"), Latents(torch.zeros(0, llm.hidden_size))], add_bos=True))  # bos, text, markers
    rows_all = latent_rows(llm, max(args.sizes))
    prompts = {n: ([Text("Documents:"), Latents(rows_all[: n - head - q_len])], [Text(QUESTION)]) for n in args.sizes}
    for n, (docs, question) in prompts.items():
        assert len(llm.build(docs, add_bos=True)) + q_len == n, n
    timings = {(r.name, n): Timings() for r in runners for n in args.sizes}

    def skip(r: Runner, n: int) -> bool:
        return r.name == "torch-fp32" and n > args.fp32_max

    for r in runners:  # warm-up: bf16 kernels need a couple of calls; the llama.cpp graph allocates once
        small = min(args.sizes)
        for _ in range(2):
            r.ttft(*prompts[small], warm=False)
    for rep in range(args.repeats):
        for n in args.sizes:
            for r in runners:  # interleaved, so drift hits every configuration alike
                if skip(r, n):
                    continue
                docs, question = prompts[n]
                t = timings[r.name, n]
                t.ttft_cold.append(r.ttft(docs, question, warm=False))
                t.state_mb = r.state_mb()
                t.ttft_warm.append(r.ttft(docs, question, warm=True))
                t.gen_tps.append(r.gen_tps(docs, question, args.gen))
                log.info("rep %d, %s, %d positions: cold %.2fs warm %.3fs gen %.1f tok/s", rep, r.name, n,
                         t.ttft_cold[-1], t.ttft_warm[-1], t.gen_tps[-1])
    out = []
    for n in args.sizes:
        for r in runners:
            t = timings[r.name, n]
            if not t.ttft_cold:
                out.append({"backend": r.name, "positions": n, "skipped": True})
                continue
            cold = statistics.median(t.ttft_cold)
            out.append({
                "backend": r.name, "positions": n, "ttft_cold": cold, "prefill_tps": n / cold,
                "ttft_warm": statistics.median(t.ttft_warm), "gen_tps": statistics.median(t.gen_tps),
                "state_mb": t.state_mb,
            })
    llm.close()
    return out


def table(rows: list[dict]) -> str:
    lines = [
        "| backend | positions | TTFT cold (s) | prefill tok/s | TTFT warm (s) | warm speed-up | gen tok/s | cached state (MB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.get("skipped"):
            lines.append(f"| {r['backend']} | {r['positions']} | skipped (--fp32-max) | | | | | |")
            continue
        state = f"{r['state_mb']:.1f}" if r["state_mb"] else "-"
        lines.append(
            f"| {r['backend']} | {r['positions']} | {r['ttft_cold']:.2f} | {r['prefill_tps']:.0f} | {r['ttft_warm']:.3f} "
            f"| {r['ttft_cold'] / r['ttft_warm']:.0f}x | {r['gen_tps']:.1f} | {state} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384], help="prompt positions in all")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--gen", type=int, default=32, help="tokens generated per run for gen tok/s")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    p.add_argument("--fp32-max", type=int, default=4096, help="skip torch fp32 above this many positions (slow)")
    p.add_argument("--n-batch", type=int, default=512, help="llama.cpp batch size")
    p.add_argument("--smoke", action="store_true", help="one tiny run of every backend (seconds)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.smoke:
        args.sizes, args.repeats, args.gen = [256], 1, 4
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s", stream=sys.stderr)
    if min(args.sizes) < 200:
        p.error("--sizes must be at least 200 (the question and markers take ~30 positions)")
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    rows = run(args)
    # Other processes on the machine skew 2-thread timings badly: say how busy it was.
    print(f"Decoder backends, default Gemma-3-270M, CPU ({torch.get_num_threads()} torch threads), "
          f"latents + question, medians of {args.repeats}, gen = {args.gen} tokens after the prompt; "
          f"load average {load0:.1f} at start, {os.getloadavg()[0]:.1f} at end, {time.perf_counter() - t0:.0f} s\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
