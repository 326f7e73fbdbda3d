"""SnapKV (Li et al., 2024, arXiv 2404.14469) on the torch backend: the KV-cache-compression baseline.

Why our own: NVIDIA's ``kvpress`` 0.5.5 (PyPI) requires ``transformers<5.3``
and this project runs 5.x, so the press is implemented here, after the paper:

1. prefill the prompt except its last ``window`` positions (the observation
   window: the end of the prompt, where the question is);
2. run the window with eager attention and read, per layer and head, the
   softmax attention its queries pay to every earlier position;
3. sum over the window's queries, smooth with a 1-D average pool (kernel 5,
   as in the paper's code), and keep, per KV head, the ``budget - window``
   highest-scoring earlier positions plus the window itself;
4. decode from there, new tokens at their true positions.

Grouped-query attention (Gemma: 4 query heads share 1 KV head) is handled as
kvpress does: the scores of the query heads that share a KV head are
averaged. Only full-attention layers are compressed; Gemma's sliding-window
layers already keep just their window, so their cache does not grow with
the prompt. After compression only single-token steps may follow (the cached
keys no longer sit at the positions their index says; one new token at a time
sees all of them, which is all decoding needs).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lclm_core.inputs import DecoderInputs
from lclm_core.torch_backend import TorchDecoder, last_position


@dataclass(frozen=True)
class SnapKVResult:
    logits: torch.Tensor  # last-position logits (vocab,)
    kept: int  # positions kept per full-attention layer
    total: int  # prompt positions
    kv_bytes_before: int
    kv_bytes_after: int


def _full_layers(model, n_layers: int) -> list[int]:
    types = getattr(model.config, "layer_types", None) or ["full_attention"] * n_layers
    return [i for i, t in enumerate(types) if t == "full_attention"]


def kv_bytes(cache) -> int:
    """Bytes held by a DynamicCache's keys and values."""
    total = 0
    for layer in cache.layers:
        for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
            if isinstance(t, torch.Tensor):
                total += t.numel() * t.element_size()
    return total


def select(scores: torch.Tensor, keep: int, kernel: int = 5) -> torch.Tensor:
    """Indices (kv_heads, keep) of the positions to keep, in order, from (kv_heads, positions) scores."""
    pooled = F.avg_pool1d(scores[:, None, :], kernel_size=kernel, stride=1, padding=kernel // 2,
                          count_include_pad=False)[:, 0, : scores.shape[-1]]
    idx = pooled.topk(min(keep, pooled.shape[-1]), dim=-1).indices
    return idx.sort(dim=-1).values


@dataclass
class Observation:
    """A prompt prefilled with SnapKV's read-out: the full cache stays on the decoder, the scores here.

    One observed prefill serves every budget (and the uncompressed "raw"
    answer), so a benchmark comparing ratios pays the long prefill once.
    """

    logits: torch.Tensor  # last-position logits (vocab,)
    scores: dict[int, torch.Tensor]  # full-attention layer -> (kv_heads, prefix positions)
    total: int  # prompt positions
    window: int


@torch.no_grad()
def observe(dec: TorchDecoder, inputs: DecoderInputs, window: int = 32) -> Observation:
    """Prefill ``inputs`` on a fresh sequence, its last ``window`` positions with eager attention read out.

    ``dec.cache`` is left holding the whole, uncompressed prompt.
    """
    dec.reset()
    total = len(inputs)
    if total <= window:  # nothing before the window to score
        return Observation(dec._prefill_spans(inputs), {}, total, total)
    rows = torch.cat([dec._embeds(s) for s in inputs.spans])
    head, tail = rows[: total - window], rows[total - window :]
    for a in range(0, head.shape[0], dec.max_chunk):
        dec._run(head[a : a + dec.max_chunk], want_logits=False)
    model = dec.model
    prev = getattr(model.config, "_attn_implementation", None) or "sdpa"
    model.set_attn_implementation("eager")
    try:
        pos = torch.arange(dec.n_past, dec.n_past + window, device=dec.device)[None]
        out = model(inputs_embeds=tail[None], position_ids=pos, past_key_values=dec.cache, use_cache=True,
                    output_attentions=True, logits_to_keep=last_position(dec.device))
    finally:
        model.set_attn_implementation(prev)
    dec.cache = out.past_key_values
    dec.n_past += window
    scores = {}
    for li in _full_layers(model, len(out.attentions)):
        att = out.attentions[li]  # (1, heads, window, total)
        kv_heads = dec.cache.layers[li].keys.shape[1]
        s = att[0, :, :, : total - window].float().sum(1)  # (heads, prefix)
        scores[li] = s.view(kv_heads, -1, s.shape[-1]).mean(1)  # GQA: average the group
    return Observation(out.logits[0, -1].float(), scores, total, window)


@torch.no_grad()
def compressed_cache(cache, obs: Observation, budget: int, kernel: int = 5):
    """A copy of the observed cache whose full-attention layers keep ``budget`` positions (the input is untouched).

    The full-attention layers' tensors are not copied first (the memo hands the
    copy the originals): the cut replaces them with new, gathered ones.
    """
    if budget <= obs.window:
        raise ValueError(f"budget {budget} must exceed the observation window {obs.window}")
    if obs.total <= budget:
        return copy.deepcopy(cache)
    shared = [t for li in obs.scores for t in (cache.layers[li].keys, cache.layers[li].values)]
    out = copy.deepcopy(cache, {id(t): t for t in shared})
    keep_prefix, split = budget - obs.window, obs.total - obs.window
    for li, scores in obs.scores.items():
        layer = out.layers[li]
        k, v = layer.keys, layer.values  # (1, kv_heads, total, head_dim)
        idx = select(scores, keep_prefix, kernel)  # (kv_heads, keep)
        gather = idx[None, :, :, None].expand(1, k.shape[1], idx.shape[-1], k.shape[-1])
        layer.keys = torch.cat([k.gather(2, gather), k[:, :, split:]], dim=2).contiguous()
        layer.values = torch.cat([v.gather(2, gather), v[:, :, split:]], dim=2).contiguous()
    return out


def prefill_snapkv(dec: TorchDecoder, inputs: DecoderInputs, budget: int, window: int = 32,
                   kernel: int = 5) -> SnapKVResult:
    """Prefill ``inputs`` on a fresh sequence and compress its full-attention KV to ``budget`` positions.

    ``dec`` is left ready to ``generate`` from the returned logits.
    """
    if budget <= window:
        raise ValueError(f"budget {budget} must exceed the observation window {window}")
    obs = observe(dec, inputs, window)
    before = kv_bytes(dec.cache)
    if obs.total > budget:
        dec.cache = compressed_cache(dec.cache, obs, budget, kernel)
    return SnapKVResult(obs.logits, min(budget, obs.total), obs.total, before, kv_bytes(dec.cache))
