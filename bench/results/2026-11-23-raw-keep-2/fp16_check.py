"""How far fp16 storage moves the shipped decoder LoRA's logits: fp32 checkpoint LoRA vs the fp16 parts."""
import torch, numpy as np
from lclm_core.device import resolve
from lclm_core.default_model import load_default_decoder, adapted_copy
from lclm_core.lora import lora_state_dict
from lclm_core.train.trainer import module_from_checkpoint
from lclm_core.train.data import TokenShards
from pathlib import Path
CPU32 = resolve("cpu", "float32")
ck = torch.load("runs/keep2-n4/decoder/latest.pt", map_location="cpu", weights_only=False)
module, cfg, _ = module_from_checkpoint(ck, CPU32)
lora32 = {k.removeprefix("model."): v for k, v in lora_state_dict(module.decoder).items()}
base, _ = load_default_decoder(CPU32)
app, _ = load_default_decoder(CPU32, ratio=4)  # the shipped fp16 parts
m32 = adapted_copy(base, lora32, cfg.lora_alpha / cfg.decoder_lora_rank)
sh = TokenShards(Path("data/shards"), "heldout")
rng = np.random.default_rng(0)
diffs, agree = [], []
for i in range(4):
    e = sh.sample(rng, 192, 64); x = torch.tensor([list(e.passage) + list(e.continuation)])
    with torch.no_grad():
        a, b = m32(x).logits, app(x).logits
    diffs.append((a - b).abs().max().item()); agree.append((a.argmax(-1) == b.argmax(-1)).float().mean().item())
print("max |logit diff| per passage", [round(d, 4) for d in diffs], "argmax agreement", agree)
