"""A trainer checkpoint holding the shipped N=8 parts as they are (untouched decoder), so `trainer eval` runs the same command on both."""
import json, sys, torch
from pathlib import Path
from lclm_core.train.trainer import read_init
parts = Path(sys.argv[1]); base = json.loads((parts / "base.json").read_text())
state, tokens = read_init(parts, 8)
torch.save({"config": base["train_config"], "trainable": state, "step": base["steps"], "tokens_seen": tokens}, sys.argv[2])
print("wrote", sys.argv[2], len(state), "tensors")
