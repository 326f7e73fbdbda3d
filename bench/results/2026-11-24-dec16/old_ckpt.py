"""A trainer checkpoint holding shipped parts as they are, so `trainer eval` runs the same command on old and new parts.

python old_ckpt.py lclm_core/default_parts/ratio-16 /work/res/old16/latest.pt  (the ratio is read from the parts)
"""
import json, sys
from pathlib import Path

import torch

from lclm_core.config import LCLMConfig
from lclm_core.train.trainer import read_init

parts = Path(sys.argv[1])
base = json.loads((parts / "base.json").read_text())
ratio = LCLMConfig.load(parts / "model_config.json").compression_ratio
state, tokens = read_init(parts, ratio)
Path(sys.argv[2]).parent.mkdir(parents=True, exist_ok=True)
torch.save({"config": base["train_config"], "trainable": state, "step": base["steps"], "tokens_seen": tokens}, sys.argv[2])
print("wrote", sys.argv[2], "N =", ratio, len(state), "tensors")
