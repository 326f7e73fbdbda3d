"""The app's own indexing and answering at the published LCLM size, on a GPU, side by side with full context.

The published checkpoints (latent-context/0.6b-4b-LCLM-{4,8,16}x: a Qwen3-Embedding-0.6B
encoder, a Qwen3-4B-Instruct-2507 decoder) cannot be downloaded here, so this builds
checkpoints of exactly their shapes with random weights, in the published layout, where it
runs. Answers are meaningless; speed and memory are the real ones.

What runs is the app's path, nothing benchmark-only:
  - ``app.services.load_models`` on each checkpoint (``Settings.checkpoint``; the loader users run);
  - ``app.watcher.FolderSync`` + ``app.indexer.Indexer`` (sizes from ``IndexerConfig.for_device``)
    index one .txt document per context length into the store, one document at a time;
  - ``app.assistant.Assistant.ask`` answers over one document: latent mode at N = 4, 8, 16 and
    full mode (the raw text), each a cold ask (empty decoder cache) and a warm one (a second
    question over the same document: the prefix cache).

Measured per (mode, length): encoder tokens/s and the document's indexing wall time; time to
first token with latents cached (cold ask), and with compression included (that document's
indexing + the cold ask); warm time to first token; decode tokens/s (32 tokens generated
through ``DecoderBackend.generate`` after the answer, end-of-text ignored, since a random
model stops anywhere); peak GPU memory (``torch.cuda.max_memory_allocated``, weights
included) and the KV cache's bytes. A length that does not fit the decoder's context, or
runs out of memory, is a row saying so. The documents are real text no one here wrote:
CPython's ``pydoc_data.topics``, then the standard library's own source files.

The tokenizer is byte-level BPE trained on that text, its vocabulary padded with unused
entries to Qwen3's 151,643 regular tokens, plus <|endoftext|>, <|im_start|>, <|im_end|> and
the three memory tokens; Qwen3's own tokenizer has 151,643 + 26 specials and other merges,
so a token here covers a little more text than there (the report gives characters per token).

    python bench/gpu_scale.py --out $OUT/gpu-scale                          # on the GPU (one call)
    python bench/gpu_scale.py --size tiny --device cpu --lengths 1024 4096  # here: the same code, tiny models

The device call, with the wheels the GPU image lacks (``python scripts/gpu_run.py stage-scale`` here):
    carry .gpu/scale;  python3 scripts/gpu_run.py scale     (runs this with --out $OUT/gpu-scale)
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("bench.gpu_scale")

# Shapes of the published parts (their config.json files on the hub, as released).
PUBLISHED = {
    "encoder": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                    num_key_value_heads=8, head_dim=128, vocab_size=151669, max_position_embeddings=32768,
                    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "decoder": dict(hidden_size=2560, intermediate_size=9728, num_hidden_layers=36, num_attention_heads=32,
                    num_key_value_heads=8, head_dim=128, vocab_size=151936, max_position_embeddings=262144,
                    rope_theta=5_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
}
TINY = {
    "encoder": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=16, vocab_size=2048, max_position_embeddings=4096),
    "decoder": dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, head_dim=24, vocab_size=2048, max_position_embeddings=16384),
}
QWEN3_REGULAR_TOKENS = 151_643
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|memory_start|>", "<|memory|>", "<|memory_end|>"]
# The paper's figures (Qwen3-4B decoder, one H100/H200-class GPU): time to first token at 64k tokens,
# and peak memory, from "End-to-End Context Compression at Scale" (arXiv 2606.09659).
PAPER = {"ttft_64k_16x_s": 0.48, "ttft_64k_full_s": 4.47, "peak_gb_16x_flat": 26.0, "peak_gb_full_256k": 119.0}


# ------------------------------------------------------------------ text and tokenizer
def paragraphs() -> "list[str]":
    """Real text in a fixed order: Python's topic help, then the standard library's source files."""
    from pydoc_data.topics import topics

    out = [p for k in sorted(topics) for p in topics[k].split("\n\n") if p.strip()]
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for f in sorted(stdlib.glob("*.py")) + sorted(stdlib.glob("*/*.py")):
        try:
            out += [p for p in f.read_text(encoding="utf-8").split("\n\n") if p.strip()]
        except (UnicodeDecodeError, OSError):
            continue
    return out


def build_tokenizer(texts: "list[str]", regular: int):
    """Byte-level BPE trained on ``texts``, padded with unused entries to ``regular`` ids, then the specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=regular, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer)
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for i in range(len(vocab), regular):  # unreachable entries: no merge makes them
        vocab[f"<unused_{i}>"] = i
    tok = Tokenizer.from_str(json.dumps(spec))
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=SPECIALS[0], pad_token=SPECIALS[0],
                                   additional_special_tokens=SPECIALS[1:])


# ------------------------------------------------------------------ checkpoints
def qwen3_config(shape: dict, vocab_size: int | None = None):
    from transformers import Qwen3Config

    kw = dict(shape)
    if vocab_size is not None:
        kw["vocab_size"] = max(kw["vocab_size"], vocab_size)
    return Qwen3Config(**kw)


def parameter_count(config, causal_lm: bool) -> int:
    """Parameters of a model of ``config``, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        m = (AutoModelForCausalLM if causal_lm else AutoModel).from_config(config)
    return sum(p.numel() for p in m.parameters())


def make_checkpoints(root: Path, shapes: dict, ratios: "list[int]", tokenizer, device: str, dtype) -> dict[int, Path]:
    """One random encoder and decoder (saved once), and per ratio a published-layout folder that links to them.

    The weights are initialised on ``device`` (a 4B model initialised on a CPU takes minutes) and saved
    in ``dtype``; every ratio gets its own random adapter and ``model_config.json``.
    """
    import torch
    from transformers import AutoModel, AutoModelForCausalLM

    from lclm_core.adapter import build_adapter
    from lclm_core.checkpoint import ADAPTER_FILE, CONFIG_FILE, save_adapter
    from lclm_core.config import LCLMConfig

    shared = root / "shared"
    torch.manual_seed(0)
    enc_cfg, dec_cfg = qwen3_config(shapes["encoder"], len(tokenizer)), qwen3_config(shapes["decoder"], len(tokenizer))
    for name, cfg, cls in (("encoder", enc_cfg, AutoModel), ("decoder", dec_cfg, AutoModelForCausalLM)):
        with torch.device(device):
            model = cls.from_config(cfg, dtype=dtype)
        if cls is AutoModelForCausalLM:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.save_pretrained(shared / name)
        tokenizer.save_pretrained(shared / name)
        del model
    out = {}
    for n in ratios:
        d = root / f"lclm-{n}x"
        d.mkdir(parents=True, exist_ok=True)
        for name in ("encoder", "decoder"):
            (d / name).symlink_to(shared / name, target_is_directory=True)
        LCLMConfig(compression_ratio=n, encoder_window_size=1024).save(d / CONFIG_FILE)
        save_adapter(build_adapter("mlp", enc_cfg.hidden_size, dec_cfg.hidden_size), d / ADAPTER_FILE)
        out[n] = d
    return out


# ------------------------------------------------------------------ documents
def write_documents(folder: Path, lengths: "list[int]", paras: "list[str]", tokenizer) -> dict[int, Path]:
    """One .txt per length, each ``length`` tokens of consecutive paragraphs (none shared between files)."""
    folder.mkdir(parents=True, exist_ok=True)
    out, k = {}, 0
    for length in lengths:
        parts, n = [], 0
        while n < length:  # the estimate from the paragraphs, then the joined text's own count (a little more slack)
            p = paras[k % len(paras)]
            k += 1
            parts.append(p)
            n += len(tokenizer(p, add_special_tokens=False)["input_ids"]) + 1
            if n >= length:
                n = len(tokenizer("\n\n".join(parts), add_special_tokens=False)["input_ids"]) - 64
        path = folder / f"ctx-{length // 1024:04d}k.txt"
        path.write_text("\n\n".join(parts), encoding="utf-8")
        out[length] = path
    return out


def question_for(store, doc_id: int, salt: int) -> str:
    """A question whose words are in the document's middle passage (so bm25 finds it relevant)."""
    from app.assistant import content_terms

    segs = store.get_segments(doc_id)
    words = [w for w in content_terms(segs[len(segs) // 2].text) if w.isalpha() and len(w) > 3]
    words = words[salt * 3 : salt * 3 + 3] or words[:3] or ["text"]
    return f"What does the document say about {' '.join(words)}?"


# ------------------------------------------------------------------ measuring
@dataclass
class Row:
    mode: str  # latent | full
    ratio: int | None
    length: int  # nominal context length in tokens
    tokens: int = 0  # the document's tokens as indexed
    positions: int = 0  # prompt positions the decoder read (cold ask)
    index_s: float | None = None  # the document's indexing wall time (parse + encode + commit)
    encoder_tok_s: float | None = None
    ttft_cached_s: float | None = None
    ttft_with_compression_s: float | None = None
    ttft_warm_s: float | None = None
    prefill_docs_s: float | None = None
    decode_tok_s: float | None = None
    peak_gb: float | None = None
    kv_gb: float | None = None
    prefix_reused: bool = False
    note: str = ""


class Gpu:
    """Memory read-outs and syncs that are no-ops on a CPU."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 1e9 if self.cuda else None

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            self.torch.cuda.empty_cache()

    def is_oom(self, e: BaseException) -> bool:
        return isinstance(e, self.torch.OutOfMemoryError) or "out of memory" in str(e).lower()


def decode_rate(backend, steps: int = 32) -> float:
    """Tokens/s of ``generate`` continuing the current sequence for ``steps`` tokens (end-of-text ignored)."""
    from lclm_core.backend import GenerationConfig, GenerationResult
    from lclm_core.inputs import Text

    saved, backend.eos_ids = backend.eos_ids, set()
    try:
        logits = backend.prefill(backend.build([Text(" Answer:")], add_bos=False))
        res = GenerationResult()
        t = time.perf_counter()
        for _ in backend.generate(GenerationConfig(max_new_tokens=steps), logits=logits, result=res):
            pass
        return len(res.token_ids) / (time.perf_counter() - t)
    finally:
        backend.eos_ids = saved


def index_documents(store, comp, folder: Path, gpu: Gpu, batch_tokens: int | None) -> dict[str, tuple[float, float, int]]:
    """Index each document alone, smallest first: path -> (wall s, encoder tokens/s, tokens).

    One document per indexer run, so each run's progress (tokens over encoder time) is that document's.
    """
    from app.indexer import Indexer, IndexerConfig, device_type
    from app.watcher import FolderSync

    ids: list[int] = []
    FolderSync(store, [folder], enqueue=ids.extend).reconcile()
    cfg = IndexerConfig.for_device(device_type(comp), **({"batch_tokens": batch_tokens} if batch_tokens else {}))
    events: list = []
    out = {}
    with Indexer(store, comp, cfg, [events.append]) as ix:
        for doc in sorted((store.get_document(i) for i in ids), key=lambda d: d.size or 0):
            gpu.sync()
            t = time.perf_counter()
            ix.enqueue(doc.id)
            ix.wait_idle()
            gpu.sync()
            wall = time.perf_counter() - t
            d = store.get_document(doc.id)
            if d.status != "indexed":
                raise RuntimeError(f"{d.path}: {d.status} {d.error}")
            out[d.path] = (wall, events[-1].tokens_per_s, sum(s.n_tokens or 0 for s in store.get_segments(d.id)))
    return out


def batch_sweep(comp, doc: Path, work: Path, gpu: Gpu, sizes: "tuple[int, ...]" = (8192, 32768, 65536)) -> "list[dict]":
    """One document indexed into a fresh store per indexer batch size: the evidence for ``IndexerConfig.for_device``."""
    from latent_store import LatentStore

    out = []
    for size in sizes:
        folder = work / f"sweep-{size}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / doc.name).write_bytes(doc.read_bytes())
        with LatentStore(work / f"sweep-{size}.sqlite") as store:
            [(wall, rate, tokens)] = index_documents(store, comp, folder, gpu, size).values()
        out.append({"batch_tokens": size, "tokens": tokens, "wall_s": wall, "encoder_tok_s": rate})
        log.info("batch sweep: %s", out[-1])
    return out


def ask_rows(assistant, store, docs: dict[int, Path], mode: str, ratio: int | None, gpu: Gpu,
             indexed: dict[str, tuple[float, float, int]], deadline: float) -> "list[Row]":
    """A cold and a warm ask per document, with their memory; a failure is a row with its reason."""
    from app.assistant import AssistantError, Scope
    from app.watcher import normalize

    dec = assistant.backend
    rows = []
    for length, path in docs.items():
        doc = store.get_document(str(normalize(path)))
        wall, rate, _ = indexed.get(doc.path, (None, None, 0))
        tokens = sum(s.n_tokens or 0 for s in store.get_segments(doc.id))
        row = Row(mode, ratio, length, tokens=tokens, index_s=wall, encoder_tok_s=rate)
        rows.append(row)
        if time.monotonic() > deadline:
            row.note = "skipped: out of time"
            continue
        scope = Scope(paths=(doc.path,))
        try:
            dec.reset()
            gpu.free()
            gpu.reset_peak()
            cold = assistant.ask(question_for(store, doc.id, 0), scope, mode=mode)
            gpu.sync()
            row.peak_gb, row.kv_gb = gpu.peak_gb(), dec.kv_bytes() / 1e9
            row.positions, row.prefill_docs_s = cold.positions, cold.timings.get("prefill_docs_s")
            row.ttft_cached_s = cold.timings.get("ttft_s")
            if mode == "latent" and row.ttft_cached_s is not None and wall is not None:
                row.ttft_with_compression_s = wall + row.ttft_cached_s
            if not cold.found:
                row.note = "no passage matched the question"
            elif cold.partial:
                row.note = "read in part: " + ", ".join(f"{a}/{b} passages" for a, b in cold.partial.values())
            warm = assistant.ask(question_for(store, doc.id, 1), scope, mode=mode)
            row.ttft_warm_s, row.prefix_reused = warm.timings.get("ttft_s"), warm.prefix_reused
            row.decode_tok_s = decode_rate(dec)
            row.peak_gb = gpu.peak_gb()  # since the reset before the cold ask: cold, warm and decode
        except AssistantError as e:
            row.note = f"does not fit: {e}"
        except Exception as e:  # noqa: BLE001 - one shot on a lent GPU: a failure is a row, and the run goes on
            if gpu.is_oom(e):
                row.note = "out of GPU memory"
            else:
                log.exception("%s at %d tokens", mode, length)
                row.note = f"error: {type(e).__name__}: {e}"[:300]
            dec.reset()
            gpu.free()
        log.info("%s", row)
    return rows


# ------------------------------------------------------------------ report
def fmt(x, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def table(rows: "list[Row]") -> str:
    full = {r.length: r for r in rows if r.mode == "full"}
    out = ["| mode | length | doc tokens | positions | encoder tok/s | TTFT cached s | TTFT with compression s | "
           "TTFT warm s | full / this (cached TTFT) | decode tok/s | peak GB | KV GB | note |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r.length, r.mode == "full", r.ratio or 0)):
        f = full.get(r.length)
        ratio = (f"{f.ttft_cached_s / r.ttft_cached_s:.1f}" if r.mode == "latent" and f and f.ttft_cached_s
                 and r.ttft_cached_s else "-")
        name = f"latent N={r.ratio}" if r.mode == "latent" else "full"
        out.append(f"| {name} | {r.length // 1024}k | {r.tokens:,} | {r.positions:,} | {fmt(r.encoder_tok_s, ',.0f')} | "
                   f"{fmt(r.ttft_cached_s)} | {fmt(r.ttft_with_compression_s)} | {fmt(r.ttft_warm_s)} | {ratio} | "
                   f"{fmt(r.decode_tok_s, '.1f')} | {fmt(r.peak_gb, '.1f')} | {fmt(r.kv_gb, '.2f')} | {r.note} |")
    return "\n".join(out)


def sweep_table(sweep: "list[dict]") -> str:
    if not sweep:
        return "Indexer batch sizes: not measured."
    lines = [f"Indexer batch size, one {sweep[0]['tokens']:,}-token document into a fresh store (N of the first ratio):", "",
             "| batch tokens | wall s | encoder tok/s |", "|---|---|---|"]
    lines += [f"| {x['batch_tokens']:,} | {x['wall_s']:.2f} | {fmt(x['encoder_tok_s'], ',.0f')} |" for x in sweep]
    return "\n".join(lines)


def paper_table(rows: "list[Row]") -> str:
    at = {(r.mode, r.ratio, r.length): r for r in rows}
    ours16, full = at.get(("latent", 16, 65536)), at.get(("full", None, 65536))
    return "\n".join([
        "| figure | paper | ours |", "|---|---|---|",
        f"| TTFT at 64k, 16x | {PAPER['ttft_64k_16x_s']} s | {fmt(ours16 and ours16.ttft_with_compression_s)} s with "
        f"compression, {fmt(ours16 and ours16.ttft_cached_s)} s cached |",
        f"| TTFT at 64k, full context | {PAPER['ttft_64k_full_s']} s | {fmt(full and full.ttft_cached_s)} s |",
        f"| peak memory, 16x | ~{PAPER['peak_gb_16x_flat']:.0f} GB, flat to 512k | "
        + ", ".join(f"{r.length // 1024}k: {fmt(r.peak_gb, '.1f')} GB" for r in rows if r.ratio == 16) + " |",
        f"| peak memory, full at 256k | {PAPER['peak_gb_full_256k']:.0f} GB | "
        + ", ".join(f"{r.length // 1024}k: {fmt(r.peak_gb, '.1f')} GB" for r in rows if r.mode == "full") + " |",
    ])


def write(out: Path, meta: dict, rows: "list[Row]") -> None:
    from bench.report_files import write_report

    md = "\n".join([
        f"# GPU scale: {meta['device_name']} ({meta['size']} shapes, random weights)", "",
        f"Encoder {meta['encoder_params'] / 1e9:.2f}B parameters, decoder {meta['decoder_params'] / 1e9:.2f}B, {meta['dtype']}; "
        f"torch {meta['torch']}, transformers {meta['transformers']}; tokenizer {meta['chars_per_token']:.2f} characters "
        f"per token; weights on the device {fmt(meta.get('weights_gb'), '.1f')} GB; checkpoint built in "
        f"{meta['build_s']:.0f} s, loaded in {', '.join(f'{x:.1f}' for x in meta['load_s'])} s; indexer batches of "
        f"{meta['batch_tokens']} tokens. Wall time {meta['wall_s']:.0f} s.", "",
        table(rows), "", sweep_table(meta["batch_sweep"]), "", "Against the paper (its decoder is the same Qwen3-4B):", "", paper_table(rows), "",
        "TTFT cached: the ask with the document's latents already in the store and an empty decoder cache. "
        "With compression: that document's indexing (parse, encode, commit) plus the cached TTFT. "
        "Warm: a second question over the same document (the prefix cache). Peak memory includes the weights.",
    ])
    write_report(out, md, {"meta": meta, "rows": [asdict(r) for r in rows], "paper": PAPER})
    print(md, flush=True)


# ------------------------------------------------------------------ main
def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True, help="report path without suffix (.md and .json are written)")
    p.add_argument("--size", choices=["published", "tiny"], default="published")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--lengths", type=int, nargs="+", default=[8192, 32768, 65536, 131072, 262144, 524288])
    p.add_argument("--batch-tokens", type=int, help="indexer batch size in tokens (default: IndexerConfig.for_device)")
    p.add_argument("--budget-s", type=float, default=480.0, help="lengths not started by then are skipped")
    p.add_argument("--work", type=Path, help="where checkpoints and stores go (default: a temporary folder)")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    t0 = time.monotonic()
    deadline = t0 + args.budget_s

    import torch
    import transformers

    from app.assistant import AssistantConfig
    from app.indexer import IndexerConfig
    from app.services import load_models, open_assistant, open_store
    from app.settings import Settings
    from lclm_core.device import resolve

    placement = resolve(args.device, args.dtype)
    gpu = Gpu(args.device)
    shapes = PUBLISHED if args.size == "published" else TINY
    lengths = sorted(args.lengths)
    tmp = tempfile.TemporaryDirectory(prefix="lclm-gpu-scale-") if args.work is None else None
    work = Path(tmp.name) if tmp else args.work
    try:
        paras = paragraphs()
        t = time.monotonic()
        regular = QWEN3_REGULAR_TOKENS if args.size == "published" else shapes["decoder"]["vocab_size"] - len(SPECIALS)
        tok = build_tokenizer(paras[:20000], regular)
        ckpts = make_checkpoints(work / "checkpoints", shapes, args.ratios, tok, str(placement.device), placement.dtype)
        build_s = time.monotonic() - t
        docs = write_documents(work / "docs", lengths, paras, tok)
        text = "\n\n".join(paras[:200])
        meta = {
            "size": args.size, "device_name": torch.cuda.get_device_name() if gpu.cuda else platform.processor() or "cpu",
            "dtype": str(placement.dtype).removeprefix("torch."), "torch": torch.__version__,
            "transformers": transformers.__version__, "build_s": build_s, "load_s": [], "lengths": lengths,
            "encoder_params": parameter_count(qwen3_config(shapes["encoder"], len(tok)), False),
            "decoder_params": parameter_count(qwen3_config(shapes["decoder"], len(tok)), True),
            "chars_per_token": len(text) / len(tok(text, add_special_tokens=False)["input_ids"]),
            "tokenizer_size": len(tok), "paper": PAPER, "wall_s": 0.0, "weights_gb": None,
            "batch_tokens": args.batch_tokens or IndexerConfig.for_device(placement.device.type).batch_tokens,
            "batch_sweep": [],
        }
        rows: list[Row] = []
        # Highest N first, then full context, then the lower ratios: if time runs out, what goes
        # is the lower ratios' longest lengths, never the paper's comparison (16x against full).
        order = sorted(args.ratios, reverse=True)
        for i, n in enumerate(order):
            if time.monotonic() > deadline:
                rows += [Row("latent", n, L, note="skipped: out of time") for L in lengths]
                continue
            settings = Settings(data_dir=work / f"data-{n}x", device=args.device, dtype=args.dtype, checkpoint=str(ckpts[n]))
            gpu.free()
            t = time.monotonic()
            models = load_models(settings)
            meta["load_s"].append(time.monotonic() - t)
            store = open_store(settings)
            models.compressor.compress(["Warm-up text for the encoder. " * 60] * 4)  # kernels chosen outside the timing
            indexed = index_documents(store, models.compressor, docs[lengths[0]].parent, gpu, args.batch_tokens)
            assistant = open_assistant(settings, store, models=models, config=AssistantConfig(max_new_tokens=32))
            if gpu.cuda and meta["weights_gb"] is None:
                meta["weights_gb"] = torch.cuda.memory_allocated() / 1e9
            rows += ask_rows(assistant, store, docs, "latent", n, gpu, indexed, deadline)
            if i == 0:
                rows += ask_rows(assistant, store, docs, "full", None, gpu, {}, deadline)
                mid = [L for L in lengths if L <= 65536][-1:] or lengths[:1]
                if time.monotonic() < deadline:
                    meta["batch_sweep"] = batch_sweep(models.compressor, docs[mid[0]], work / "sweep", gpu)
            meta["wall_s"] = time.monotonic() - t0
            write(args.out, meta, rows)
            assistant.close()
            store.close()
            del models, assistant
    finally:
        if tmp:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
