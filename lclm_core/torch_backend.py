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

from .backend import ContextLengthError, DecoderBackend
from .inputs import DecoderInputs, EmbedSpan, Part, TokenSpan

log = logging.getLogger(__name__)


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
        self.cache = None
        self.n_past = 0

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
        if self.cache is None:
            self.cache = DynamicCache(config=self.model.config)
        pos = torch.arange(self.n_past, self.n_past + n, device=self.device)[None]
        out = self.model(
            inputs_embeds=embeds[None],
            position_ids=pos,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,
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
            else:
                h.update(b"E" + sp.embeds.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())

    @torch.no_grad()
    def prefill_cached(self, *blocks: DecoderInputs | Sequence[Part]) -> torch.Tensor:
        """Like ``LlamaCppDecoder.prefill_cached``: reuse the longest run of blocks seen before.

        The sequence state after each block is kept (a copy of the KV cache: on
        Gemma only the global layers grow with the prompt, the sliding ones stay
        at their window), keyed by a digest of everything up to that block, so a
        second question over the same documents skips their prefill.
        """
        if not blocks:
            raise ValueError("nothing to prefill")
        self.reset()
        built = [b if isinstance(b, DecoderInputs) else self.build(b, add_bos=i == 0) for i, b in enumerate(blocks)]
        total = sum(len(b) for b in built)
        if total > self.n_ctx:
            raise ContextLengthError(total, self.n_ctx, 0)
        keys, h = [], hashlib.sha256(str(id(self.model)).encode())
        for b in built:
            self._digest(h, b)
            keys.append(h.hexdigest())
        start, logits = 0, None
        self.last_prefix_hit = 0
        for i in range(len(built) - 1, -1, -1):
            hit = self._prefixes.get(keys[i])
            if hit is not None:
                self.n_past, logits, cache = hit
                self.cache = copy.deepcopy(cache)
                self._prefixes.move_to_end(keys[i])
                start = i + 1
                self.last_prefix_hit = self.n_past
                log.debug("prefix reuse: %d positions", self.n_past)
                break
        for i in range(start, len(built)):
            if len(built[i]):
                logits = self._prefill_spans(built[i])
            self._prefixes[keys[i]] = (self.n_past, logits, copy.deepcopy(self.cache))
            while len(self._prefixes) > self.max_prefixes:
                self._prefixes.popitem(last=False)
        assert logits is not None
        return logits.float()

    @torch.no_grad()
    def attention_mass(self, inputs: DecoderInputs) -> torch.Tensor:
        """(n_past,) attention that ``inputs`` (e.g. a question) pays to every position already
        in the sequence, summed over heads, query positions and the global-attention layers.

        The sequence is left as it was: the pass runs on a copy of the cache,
        with eager attention (the fused kernels do not return weights).
        """
        if self.cache is None or self.n_past == 0:
            raise ValueError("attention_mass reads attention over a prefilled sequence")
        n_prev = self.n_past
        cache = copy.deepcopy(self.cache)
        rows = torch.cat([self._embeds(s) for s in inputs.spans])
        cfg = self.model.config
        prev = getattr(cfg, "_attn_implementation", None) or "sdpa"
        self.model.set_attn_implementation("eager")
        try:
            pos = torch.arange(n_prev, n_prev + rows.shape[0], device=self.device)[None]
            out = self.model(inputs_embeds=rows[None], position_ids=pos, past_key_values=cache, use_cache=True,
                             output_attentions=True, logits_to_keep=1)
        finally:
            self.model.set_attn_implementation(prev)
        types = getattr(cfg, "layer_types", None) or ["full_attention"] * len(out.attentions)
        mass = torch.zeros(n_prev, dtype=torch.float32)
        for att, kind in zip(out.attentions, types):
            if kind == "full_attention" and att is not None and att.shape[-1] >= n_prev:
                mass += att[0, :, :, :n_prev].float().sum((0, 1)).cpu()
        return mass

    def close(self) -> None:
        self.cache = None
        self._prefixes.clear()
        self.model = None  # type: ignore[assignment]
