"""A decoder LoRA (our A/B matrices) written as a GGUF adapter that llama.cpp applies at run time.

Why not merge it into the GGUF: the base file is Q4_K_M, and merging means
dequantizing, adding and quantizing again (a different file, other rounding,
253 MB per ratio). llama.cpp instead adds ``B (A x) * scale`` beside each
quantized matmul, as the torch path does before merging.

Why not llama.cpp's ``convert_lora_to_gguf.py``: it wants a PEFT directory
plus the base model's HF directory and llama.cpp's conversion package. What
it writes is small and documented, and we write the same with gguf-py (the
library transformers already uses to read GGUF files):

- one ``<base tensor>.lora_a`` (rank x in) and ``<base tensor>.lora_b``
  (out x rank) per adapted matrix, named by gguf-py's own map from HF names
  (``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q``);
- ``general.type = adapter``, ``adapter.type = lora`` and
  ``adapter.lora.alpha``: llama.cpp scales by ``alpha / rank``, so alpha is
  written as ``scale * rank``.

The Gemma GGUF keeps the HF layout of q/k (no rotary permutation: checked
tensor for tensor against the dequantized weights transformers loads), so
the matrices go over unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


def gguf_lora_tensors(lora: dict[str, torch.Tensor], arch: str) -> dict[str, np.ndarray]:
    """{GGUF name: fp32 array} for A/B keyed like ``layers.K.self_attn.q_proj.lora_A`` (the decoder's ``model``)."""
    import gguf

    # gguf-py's name map covers the blocks it is told of: as many as the keys name.
    n_layers = 1 + max((int(m.group(1)) for k in lora if (m := re.match(r"layers\.(\d+)\.", k))), default=0)

    try:
        model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    except StopIteration:
        raise ValueError(f"gguf-py knows no architecture {arch!r}") from None
    names = gguf.get_tensor_name_map(model_arch, n_layers)
    out: dict[str, np.ndarray] = {}
    for key, t in lora.items():
        for ours, theirs in ((".lora_A", ".lora_a"), (".lora_B", ".lora_b")):
            if key.endswith(ours):
                hf = "model." + key[: -len(ours)]
                base = names.get_name(hf)
                if base is None:
                    raise ValueError(f"{hf} has no GGUF tensor in {arch}")
                out[f"{base}.weight{theirs}"] = t.detach().float().cpu().numpy()
                break
        else:
            raise ValueError(f"{key}: not a LoRA A/B matrix")
    for name in out:
        pair = name[:-1] + ("b" if name.endswith("a") else "a")
        if pair not in out:
            raise ValueError(f"{name} has no partner {pair}")
    return out


def write_gguf_lora(lora: dict[str, torch.Tensor], scale: float, out: Path, arch: str) -> Path:
    """Write the adapter file (atomically: a half-written file would be loaded next time)."""
    import gguf

    tensors = gguf_lora_tensors(lora, arch)
    rank = next(v.shape[0] for k, v in tensors.items() if k.endswith(".lora_a"))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    w = gguf.GGUFWriter(str(tmp), arch)
    w.add_type(gguf.GGUFType.ADAPTER)
    w.add_string(gguf.Keys.Adapter.TYPE, "lora")
    w.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(scale * rank))
    for name, arr in sorted(tensors.items()):
        w.add_tensor(name, np.ascontiguousarray(arr))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    tmp.replace(out)
    log.info("wrote the GGUF LoRA %s (%d matrices, rank %d)", out, len(tensors), rank)
    return out
