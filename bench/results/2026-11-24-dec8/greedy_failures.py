"""Where the N = 4 greedy copy goes wrong: position-exact share, LCS share, and the edits that align it to the passage.

Run from the repository root on a decoder-stage checkpoint (the shipped N = 4 parts came from runs/qa4-n4):
    python bench/results/2026-11-24-dec8/greedy_failures.py runs/qa4-n4/decoder/latest.pt 32
Same held-out passages as `trainer eval` (its first 32), same prompt, bf16 for speed.
"""
import difflib
import sys
from pathlib import Path

import numpy as np
import torch

from lclm_core.train.data import TokenShards
from lclm_core.train.evaluate import heldout_examples, lcs_length
from lclm_core.train.trainer import module_from_checkpoint

torch.set_num_threads(2)
m, cfg, _ = module_from_checkpoint(Path(sys.argv[1]), device="cpu", dtype="bfloat16")
m.eval()
n = int(sys.argv[2])
ex = heldout_examples(TokenShards(Path("data/shards"), "heldout"), n, cfg.passage_len, cfg.cont_len)
prompt = torch.tensor(m.prompt_ids[0])
exact, lcs, first, first_shift = [], [], [], []
sub = ins = dele = 0
with torch.no_grad():
    for s in range(0, n, 8):
        x = torch.tensor(np.stack([e.passage for e in ex[s:s + 8]]))
        b, e = x.shape[0], m.embed
        z = m.latents(x).to(e(x[:1, :1]).dtype)
        pre = torch.cat([e(torch.full((b, 1), m.bos)), e(torch.full((b, 1), m.start)), z,
                         e(torch.full((b, 1), m.end)), e(prompt)[None].expand(b, -1, -1)], 1)
        gen = m.decoder.generate(inputs_embeds=pre, attention_mask=torch.ones(pre.shape[:2], dtype=torch.long),
                                 max_new_tokens=x.shape[1], min_new_tokens=x.shape[1], do_sample=False,
                                 eos_token_id=None, pad_token_id=0)[:, -x.shape[1]:]
        for g, t in zip(gen.tolist(), x.tolist()):
            eq = np.array(g) == np.array(t)
            exact.append(eq.mean())
            lcs.append(lcs_length(g, t) / len(t))
            first.append(int(np.argmin(eq)) if not eq.all() else len(t))
            shift = None
            for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=t, b=g, autojunk=False).get_opcodes():
                if op == "replace" and i2 - i1 == j2 - j1:
                    sub += i2 - i1
                elif op != "equal":
                    ins += j2 - j1
                    dele += i2 - i1
                    shift = i1 if shift is None else shift
            if shift is not None:
                first_shift.append(shift)
ex_ = np.array(exact)
print(f"exact {ex_.mean():.3f} (per-passage SD {ex_.std(ddof=1):.3f}), LCS {np.mean(lcs):.3f}, "
      f"first wrong token median {np.median(first):.0f}")
print(f"edits aligning the copy to the passage: {sub} tokens substituted, {ins} inserted, {dele} dropped; "
      f"{len(first_shift)} of {n} copies change length somewhere, the first such edit at median token "
      f"{np.median(first_shift):.0f}")
