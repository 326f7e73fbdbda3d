"""Decoder backend on a transformers causal LM (any device, any dtype).

Latent rows are concatenated with the (scaled) token embeddings and fed as
``inputs_embeds``; the KV cache carries the sequence between calls.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections import OrderedDict
from typing import Sequence

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from .backend import ContextLengthError, DecoderBackend
from .inputs import DecoderInputs, EmbedSpan, Part, TokenSpan

log = logging.getLogger(__name__)


def last_position(device: torch.device | str, k: int = 1) -> torch.Tensor:
    """``logits_to_keep`` for the last ``k`` positions, as an index tensor rather than the int ``k``.

    The int slices the hidden states (``h[:, -k:, :]``), rows that keep the whole prompt's stride in their
    size-1 batch dimension. On the CPU in bfloat16, torch's linear then goes through bmm, which first copies
    the whole transposed output head: for Gemma-3's 262k-word head that is 335 MB and ~0.8 s per call, where
    the same rows stored compactly take ~0.02 s (2-core CPU, torch 2.13). An index tensor gathers the rows
    into a compact copy. The app pays this at every prefill that ends in logits: in latent mode twice before
    its first token (the attention skim, then the question), about half of that time.
    """
    return torch.arange(-k, 0, device=device)


class TorchDecoder(DecoderBackend):
    """A transformers causal LM as a :class:`DecoderBackend`.

    The model is borrowed, not owned: several backends (and an encoder that
    shares its layers) may use one loaded model.
    """

    name = "torch"

    def __init__(self, model, tokenizer, memory_tokens=None, n_ctx: int | None = None) -> None:
        super().__init__(tokenizer, memory_tokens)
        self.model = model.eval()
        cfg = model.config
        self._n_ctx = int(n_ctx or getattr(cfg, "max_position_embeddings", 2048))
        self._embed = model.get_input_embeddings()
        self.cache: DynamicCache | None = None
        self.max_chunk = 2048
        # prefix key -> (n_past, logits, cache copy): a few recent document prefixes
        self._prefixes: OrderedDict[str, tuple[int, torch.Tensor, DynamicCache]] = OrderedDict()
        self.max_prefixes = 2
        self.last_prefix_hit = 0  # positions the last prefill_cached restored instead of computing
        # (key, n_past, logits) after each block prefill_cached put into the live cache, in order
        self._live: list[tuple[str, int, torch.Tensor]] = []
        if model.generation_config is not None:
            eos = model.generation_config.eos_token_id
            self.eos_ids |= {eos} if isinstance(eos, int) else set(eos or ())

    @property
    def n_ctx(self) -> int:
        return self._n_ctx

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def device(self) -> torch.device:
        return self._embed.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self._embed.weight.dtype

    @torch.no_grad()
    def token_embeddings(self, ids: Sequence[int]) -> torch.Tensor:
        # The embedding module applies the model's own scale (Gemma: sqrt(hidden)).
        return self._embed(torch.tensor(list(ids), dtype=torch.long, device=self.device))

    def reset(self) -> None:
        """Start a new sequence. The old cache is kept until the next pass replaces it, so that
        ``prefill_cached`` can still cut it back to a prefix the new sequence shares."""
        self.n_past = 0

    def _croppable(self) -> bool:
        """True when every layer of the live cache keeps every position (no sliding window), so the
        cache can be cut back to a shorter prefix in place instead of kept as a copy."""
        layers = getattr(self.cache, "layers", None)
        return bool(layers) and all(type(x) is DynamicLayer and not x.is_sliding for x in layers)

    def _truncate(self, n: int) -> None:
        """Cut the live cache back to its first ``n`` positions (a croppable cache only).

        Slicing, not ``DynamicCache.crop``: crop's argument changed meaning across transformers 5.x
        (an absolute length, then a count to remove), and the device we benchmark on may run another 5.x.
        """
        for layer in self.cache.layers:
            if layer.is_initialized and layer.keys is not None and layer.keys.numel():
                layer.keys = layer.keys[..., :n, :]
                layer.values = layer.values[..., :n, :]
        self.n_past = n

    def kv_bytes(self) -> int:
        """Bytes the live KV cache holds (keys and values of every layer)."""
        layers = (getattr(self.cache, "layers", None) or []) if self.n_past else []
        return sum(t.numel() * t.element_size() for x in layers for t in (getattr(x, "keys", None), getattr(x, "values", None))
                   if isinstance(t, torch.Tensor))

    def _embeds(self, span: TokenSpan | EmbedSpan) -> torch.Tensor:
        if isinstance(span, TokenSpan):
            return self.token_embeddings(span.ids)
        return span.embeds.to(device=self.device, dtype=self.dtype)

    @torch.no_grad()
    def _prefill_spans(self, inputs: DecoderInputs) -> torch.Tensor:
        """All spans through the model together, in chunks of ``max_chunk`` positions.

        A prompt of many documents is dozens of spans; one forward pass per
        span costs far more than the same rows in a few passes, and the chunk
        bound keeps activation memory flat for long prompts.
        """
        rows = torch.cat([self._embeds(s) for s in inputs.spans])
        n = rows.shape[0]
        logits = None
        for a in range(0, n, self.max_chunk):
            logits = self._run(rows[a : a + self.max_chunk], want_logits=a + self.max_chunk >= n)
        return logits

    @torch.no_grad()
    def _forward(self, span: TokenSpan | EmbedSpan, want_logits: bool) -> torch.Tensor | None:
        return self._run(self._embeds(span), want_logits)

    def _run(self, embeds: torch.Tensor, want_logits: bool) -> torch.Tensor | None:
        n = embeds.shape[0]
        if self.cache is None or self.n_past == 0:
            self.cache = DynamicCache(config=self.model.config)  # the old one (if any) is freed here
            self._live = []
        pos = torch.arange(self.n_past, self.n_past + n, device=self.device)[None]
        out = self.model(
            inputs_embeds=embeds[None],
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=last_position(self.device),
        )
        self.cache = out.past_key_values
        self.n_past += n
        return out.logits[0, -1].float() if want_logits else None

    @torch.no_grad()
    def logits_for(self, inputs) -> torch.Tensor:
        """All-position logits (L, vocab) of inputs on a fresh, uncached pass: for tests and scoring."""
        embeds = torch.cat(
            [
                self.token_embeddings(s.ids) if isinstance(s, TokenSpan) else s.embeds.to(self.device, self.dtype)
                for s in inputs.spans
            ]
        )
        return self.model(inputs_embeds=embeds[None], use_cache=False).logits[0].float()

    # --- prefix reuse and attention read-out (what the assistant needs) ---------------------
    def _digest(self, h, inputs: DecoderInputs) -> None:
        for sp in inputs.spans:
            if isinstance(sp, TokenSpan):
                h.update(b"T" + torch.tensor(sp.ids, dtype=torch.int64).numpy().tobytes())
            else:  # the stored bytes as they are (float16 latents: no float32 copy of a 100k-row prompt)
                t = sp.embeds.detach().to("cpu").contiguous()
                h.update(b"E" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
                h.update(memoryview(t.view(torch.uint8).numpy()))

    @torch.no_grad()
    def prefill_cached(self, *blocks: DecoderInputs | Sequence[Part]) -> torch.Tensor:
        """Like ``LlamaCppDecoder.prefill_cached``: reuse the longest run of blocks seen before.

        Two ways to keep a prefix, by what the cache allows:
        - a model whose layers all keep every position (Qwen3, Llama): the live cache itself. The
          blocks' keys and lengths are remembered, and a later call that starts with the same blocks
          cuts the cache back to them in place. No copy: at 128k positions a Qwen3-4B cache is
          about 19 GB, and a copy beside it is what would not fit on the GPU;
        - a model with sliding-window layers (Gemma), whose cache has dropped old positions and
          cannot be cut back: a copy of the cache after each block (small: only the global layers
          grow with the prompt), ``max_prefixes`` of them, keyed by a digest of everything up to
          that block.
        Either way a second question over the same documents skips their prefill.
        """
        if not blocks:
            raise ValueError("nothing to prefill")
        built = [b if isinstance(b, DecoderInputs) else self.build(b, add_bos=i == 0) for i, b in enumerate(blocks)]
        total = sum(len(b) for b in built)
        if total > self.n_ctx:
            raise ContextLengthError(total, self.n_ctx, 0)
        keys, h = [], hashlib.sha256(str(id(self.model)).encode())
        for b in built:
            self._digest(h, b)
            keys.append(h.hexdigest())
        start, logits = 0, None
        live = self._live if self.cache is not None and self._croppable() else []
        same = 0
        while same < min(len(live), len(keys)) and live[same][0] == keys[same]:
            same += 1
        if same:
            _, n, logits = live[same - 1]
            self._truncate(n)
            self._live = live[:same]
            start = same
        else:
            self.reset()
            for i in range(len(built) - 1, -1, -1):
                hit = self._prefixes.get(keys[i])
                if hit is not None:
                    self.n_past, logits, cache = hit
                    self.cache = copy.deepcopy(cache)
                    self._prefixes.move_to_end(keys[i])
                    start = i + 1
                    break
        self.last_prefix_hit = self.n_past
        if self.n_past:
            log.debug("prefix reuse: %d positions", self.n_past)
        for i in range(start, len(built)):
            if len(built[i]):
                logits = self._prefill_spans(built[i])
            if self._croppable():
                self._live.append((keys[i], self.n_past, logits))
            else:
                self._prefixes[keys[i]] = (self.n_past, logits, copy.deepcopy(self.cache))
                while len(self._prefixes) > self.max_prefixes:
                    self._prefixes.popitem(last=False)
        assert logits is not None
        return logits.float()

    @torch.no_grad()
    def attention_mass(self, inputs: DecoderInputs) -> torch.Tensor:
        """(n_past,) attention that ``inputs`` (e.g. a question) pays to every position already
        in the sequence, summed over heads, query positions and the global-attention layers.

        The sequence is left as it was: the pass runs with eager attention (the fused kernels do not
        return weights) on the live cache, which is then cut back, or on a copy where the cache cannot
        be cut back (sliding-window layers).
        """
        if self.cache is None or self.n_past == 0:
            raise ValueError("attention_mass reads attention over a prefilled sequence")
        n_prev = self.n_past
        in_place = self._croppable()
        cache = self.cache if in_place else copy.deepcopy(self.cache)
        rows = torch.cat([self._embeds(s) for s in inputs.spans])
        cfg = self.model.config
        prev = getattr(cfg, "_attn_implementation", None) or "sdpa"
        self.model.set_attn_implementation("eager")
        try:
            pos = torch.arange(n_prev, n_prev + rows.shape[0], device=self.device)[None]
            out = self.model(inputs_embeds=rows[None], position_ids=pos, past_key_values=cache, use_cache=True,
                             output_attentions=True, logits_to_keep=last_position(self.device))
        finally:
            self.model.set_attn_implementation(prev)
            if in_place:
                self._truncate(n_prev)
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * len(out.attentions)
        mass = torch.zeros(n_prev, dtype=torch.float32, device=self.device)
        for att, kind in zip(out.attentions, types):
            if kind == "full_attention" and att is not None and att.shape[-1] >= n_prev:
                mass += att[0, :, :, :n_prev].float().sum((0, 1))
        return mass.cpu()

    def close(self) -> None:
        self.cache = None
        self._live = []
        self._prefixes.clear()
        self.model = None  # type: ignore[assignment]
