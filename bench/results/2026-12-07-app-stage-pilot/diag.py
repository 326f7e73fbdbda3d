from pathlib import Path
import torch
from lclm_core.lora import lora_disabled
from lclm_core.train.trainer import module_from_checkpoint, app_sampler
from lclm_core.train.app_layout import heldout_app
from lclm_core.train.data import TokenShards
m, cfg, _ = module_from_checkpoint(Path("lclm_core/default_parts/ratio-8"), dtype="float32")
tok = m.compressor.tokenizer
ex = heldout_app(app_sampler(cfg, TokenShards(Path("/work/data/shards"), "heldout"), m), 12)
def gen(e, adapted):
    ids = torch.tensor([e.teacher])
    ctx = torch.no_grad()
    with ctx:
        if adapted:
            out = m.decoder.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
        else:
            with lora_disabled(m.decoder):
                out = m.decoder.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False)
    return tok.decode(out[0, ids.shape[1]:])
hit = {False: 0, True: 0}
for e in ex:
    b, a = gen(e, False), gen(e, True)
    print(repr(e.answer_text), "| base:", repr(b), "| adapted:", repr(a))
    for k, g in ((False, b), (True, a)):
        hit[k] += g.startswith(" " + e.answer_text + "\n") or g.strip().split("\n")[0].strip() == e.answer_text
print(hit)
