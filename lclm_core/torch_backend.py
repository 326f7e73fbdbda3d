"""Decoder backend on a transformers causal LM (any device, any dtype).

Latent rows are concatenated with the (scaled) token embeddings and fed as
``inputs_embeds``; the KV cache carries the sequence between calls.
"""

from __future__ import annotations

import logging
from typing import Sequence

import torch
from transformers import DynamicCache

from .backend import DecoderBackend
from .inputs import DecoderInputs, EmbedSpan, TokenSpan

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

    def close(self) -> None:
        self.cache = None
        self.model = None  # type: ignore[assignment]
