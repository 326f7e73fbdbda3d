"""Continuation and reconstruction of compressors side by side, on the same held-out examples.

Each row is one compressor (the untrained default at the same N, and every
training checkpoint given); each column is a measure beside its baseline
(see lclm_core/train/evaluate.py):

    python bench/eval_compressor.py --data /work/data/shards --ckpt runs/n4/adapter/latest.pt runs/n4/encoder/latest.pt
    python bench/eval_compressor.py --data ... --ckpt ... --smoke       # seconds, CI keeps it alive

gap_closed = (none - own) / (none - raw); content_gap = (shuffled - own) / (none - raw).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report_files import write_report  # noqa: E402
from lclm_core.device import resolve  # noqa: E402
from lclm_core.train.data import TokenShards  # noqa: E402
from lclm_core.train.evaluate import evaluate, heldout_examples  # noqa: E402
from lclm_core.train.trainer import TrainConfig, build_module, load_decoder, module_from_checkpoint  # noqa: E402

log = logging.getLogger("bench.eval_compressor")

COLUMNS = [
    ("loss_raw", "loss raw"), ("loss_own", "loss own latents"), ("loss_shuffled", "loss shuffled latents"),
    ("loss_none", "loss none"), ("gap_closed", "gap closed vs none"), ("content_gap", "content gap (vs shuffled)"),
    ("recon_tf_acc", "recon TF acc"), ("recon_tf_floor", "recon TF floor"),
    ("recon_greedy_acc", "recon greedy acc"), ("recon_greedy_floor", "recon greedy floor"),
    ("recon_greedy_lcs", "recon greedy LCS"), ("recon_greedy_lcs_floor", "recon greedy LCS floor"),
]


def table(rows: list[tuple[str, dict]]) -> str:
    out = ["| compressor | " + " | ".join(c for _, c in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for name, d in rows:
        cells = ["n/a" if d[k] != d[k] else  # NaN: not measured in this run
                 f"{100 * d[k]:.1f}%" if k in ("gap_closed", "content_gap") or "acc" in k or "floor" in k else f"{d[k]:.3f}"
                 for k, _ in COLUMNS]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, nargs="*", default=[])
    p.add_argument("--labels", nargs="*", default=[], help="a row label per checkpoint (default: its stage, N and tokens)")
    p.add_argument("--ratio", type=int, help="N of the untrained baseline (default: the first checkpoint's)")
    p.add_argument("--examples", type=int, default=64)
    p.add_argument("--passage-len", type=int, default=128)
    p.add_argument("--cont-len", type=int, default=64)
    p.add_argument("--no-greedy", action="store_true")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--out", type=Path, help="write the table (.md) and figures (.json) here")
    p.add_argument("--smoke", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.smoke:
        args.examples, args.passage_len, args.cont_len = 4, 32, 16
    placement = resolve("cpu", args.dtype)
    ratio = args.ratio
    if ratio is None:
        ratio = torch.load(args.ckpt[0], map_location="cpu", weights_only=False)["config"]["ratio"] if args.ckpt else 4
    examples = heldout_examples(TokenShards(args.data, "heldout"), args.examples, args.passage_len, args.cont_len)
    rows: list[tuple[str, dict]] = []
    t0 = time.time()
    base_cfg = TrainConfig(data=str(args.data), out="", ratio=ratio, dtype=args.dtype)
    model, tok = load_decoder(base_cfg, placement)
    untrained = build_module(base_cfg, model, tok)  # the adapter at its seeded initialisation
    rows.append((f"untrained N={ratio}", evaluate(untrained, examples, greedy=not args.no_greedy).as_dict()))
    for i, ck in enumerate(args.ckpt):
        module, cfg, state = module_from_checkpoint(ck, placement)
        name = f"{cfg.stage} N={cfg.ratio}, {state['tokens_seen'] / 1e6:.2f}M tok"
        if i < len(args.labels):
            name = f"{args.labels[i]}: {name}"
        rows.append((name, evaluate(module, examples, greedy=not args.no_greedy).as_dict()))
        log.info("%s: %s", name, rows[-1][1])
    text = (f"Held-out examples: {len(examples)} x ({args.passage_len} compressed + {args.cont_len} continuation tokens), "
            f"decoder Gemma-3-270M {args.dtype} on CPU, {time.time() - t0:.0f} s\n\n" + table(rows))
    print(text)
    if args.out:
        write_report(args.out, text, dict(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
