"""Does the N=4 decoder LoRA help N=8 latents before any training? The same 32 held-out passages, bf16, CPU.

Run from the repository root at commit ad35f5c (before ratio-8 had a decoder LoRA of its own):
    python bench/results/2026-11-24-dec8/warm_probe.py 32
"""
import sys, time, torch
from pathlib import Path
from lclm_core.device import resolve
from lclm_core.train.trainer import TrainConfig, build_module, load_decoder, read_init, load_trainable
from lclm_core.train.evaluate import evaluate, heldout_examples
from lclm_core.train.data import TokenShards
torch.set_num_threads(2)
n = int(sys.argv[1])
cfg = TrainConfig(data="data/shards", out="/tmp/x", stage="decoder", ratio=8, device="cpu", dtype="bfloat16")
model, tok = load_decoder(cfg, resolve("cpu", "bfloat16"))
m = build_module(cfg, model, tok)
st, _ = read_init(Path("lclm_core/default_parts/ratio-8"), 8)
load_trainable(m, st)
ex = heldout_examples(TokenShards(Path("data/shards"), "heldout"), n, 128, 64)
t = time.time(); r = evaluate(m, ex, 8, greedy=True); print("N8 base decoder", {k: round(v, 4) for k, v in r.as_dict().items()}, time.time() - t, flush=True)
from safetensors.torch import load_file
dec = {f"decoder.model.{k}": v for k, v in load_file("lclm_core/default_parts/ratio-4/decoder/lora.safetensors").items()}
load_trainable(m, dec)
r = evaluate(m, ex, 8, greedy=True); print("N8 + N4 decoder LoRA", {k: round(v, 4) for k, v in r.as_dict().items()}, flush=True)
