"""The training module: a frozen decoder, a trainable compressor, and the losses that teach it.

Objectives (weights in TrainConfig; all computed on one batch of examples,
each a passage x of T tokens and the continuation y of Y tokens that follows it):

- continuation: next-token cross-entropy on y after ``[bos][start] z(x) [end]``
  (the paper's main loss, on raw spans after a compressed one);
- reconstruction: cross-entropy on x after ``[bos][start] z(x) [end] <prompt>``
  ("repeat the compressed text", prompts varied);
- distill_hidden (dense): the frozen decoder reading the *raw* passage is the
  teacher; at every position of y, the student's hidden states (reading the
  latents) must match the teacher's in a set of layers. This gives
  Y x layers x hidden targets per example instead of Y numbers;
- distill_kl: KL(teacher || student) of the next-token distributions on y;
- interleaved: the window x y cut into chunks, every other one compressed:
  ``[bos] [start] z(c0) [end] c1 [start] z(c2) [end] c3 ...``; next-token
  cross-entropy on the raw chunks, and their hidden states matched to the
  teacher's reading all of it raw. A raw passage *between* latent blocks is
  what the app's in-place expansion builds (the paper's interleaved
  next-token objective);
- latent_align (dense): at latent j, the student's hidden state in each chosen
  layer should match the mean of the teacher's states over the N tokens that
  latent stands for (layer 0: the mean of their input embeddings) — a direct
  target for what the decoder computes *at* the latent positions.

The output layer (262k x 640 for Gemma) is ~40% of the cost: logits are
computed only at target positions, and optionally over a restricted
vocabulary (the batch's targets plus random negatives).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..encoder import Window
from ..lora import LoRALinear, lora_disabled
from ..model import LCLMCompressor
from .app_layout import app_loss

log = logging.getLogger(__name__)

RECONSTRUCTION_PROMPTS = (
    "\nRepeat the text above word for word:\n",
    "\nThe compressed passage, written out in full:\n",
    "\nCopy of the text:\n",
    "\nRewrite the memory exactly:\n",
)


@dataclass
class LossWeights:
    continuation: float = 1.0
    reconstruction: float = 0.5
    distill_hidden: float = 1.0
    distill_kl: float = 0.5
    latent_align: float = 0.2
    interleaved: float = 0.0
    raw_keep: float = 0.0
    app_kl: float = 1.0  # app-layout batches: KL from the teacher reading the gold passage (app_layout.py)


def rel_mse(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """MSE in units of the teacher's per-feature spread over the batch's positions.

    Plain relative MSE would be ruled by the few huge, nearly constant feature
    dimensions a transformer's residual stream carries (massive activations),
    which say nothing about the context; standardising each feature by its
    spread makes every feature count by how much it varies.
    """
    s, t = student.float(), teacher.float()
    std = t.reshape(-1, t.shape[-1]).std(0).clamp_min(1e-3).detach()
    return ((s - t) / std).pow(2).mean()


class LCLMTrainModule(nn.Module):
    """Frozen decoder (teacher and student at once) + the trainable compressor."""

    def __init__(
        self,
        compressor: LCLMCompressor,
        decoder: nn.Module,
        marker_ids: tuple[int, int, int],  # (bos, start, end)
        weights: LossWeights,
        distill_layers: tuple[int, ...],
        restricted_vocab: int = 0,
        prompt_ids: list[list[int]] | None = None,
        interleave_chunk: int = 32,
    ) -> None:
        super().__init__()
        self.compressor = compressor
        self.decoder = decoder
        self.bos, self.start, self.end = marker_ids
        self.w = weights
        n_layers = decoder.config.num_hidden_layers
        self.distill_layers = tuple(sorted({min(max(1, l), n_layers) for l in distill_layers}))
        self.restricted_vocab = restricted_vocab
        self.prompt_ids = prompt_ids or [[]]
        n = compressor.config.compression_ratio
        if interleave_chunk % n:
            raise ValueError(f"interleave_chunk {interleave_chunk} must be a multiple of the ratio {n}")
        self.interleave_chunk = interleave_chunk
        # raw_keep has something to keep only where the decoder carries a LoRA.
        self.adapted = any(isinstance(m, LoRALinear) for m in decoder.modules())

    # --- pieces --------------------------------------------------------------
    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.get_input_embeddings()(ids)

    def latents(self, passages: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, ceil(T/N), dec_dim) adapter outputs, differentiable."""
        enc = self.compressor.encoder
        prefix = enc.prefix_ids
        windows = [Window(i, prefix, tuple(p.tolist())) for i, p in enumerate(passages)]
        pooled = enc.forward_windows(windows)[:, : self.compressor.config.n_latents(passages.shape[1])]
        p = next(self.compressor.adapter.parameters())
        return self.compressor.adapter(pooled.to(p.dtype))

    def _logits(self, hidden: torch.Tensor, targets: torch.Tensor, teacher_hidden: torch.Tensor | None = None):
        """Logits at target positions only: while training, over a restricted vocabulary (``restricted_vocab``);
        in eval mode always over the whole one, since a figure read through a random subset of the words is an
        upper bound that moves from run to run."""
        w = self.decoder.get_output_embeddings().weight
        if self.training and self.restricted_vocab and self.restricted_vocab < w.shape[0]:
            # Exactly K columns every step (the batch's targets + random others): a
            # fixed shape, because CPU bf16 kernels are compiled per shape.
            score = torch.rand(w.shape[0], device=targets.device)
            score[targets.reshape(-1)] = 2.0
            vocab = score.topk(max(self.restricted_vocab, int(targets.unique().numel()))).indices
            where = torch.full((w.shape[0],), -1, dtype=torch.long, device=targets.device)
            where[vocab] = torch.arange(vocab.numel(), device=targets.device)
            targets = where[targets]
            w = w[vocab]
        s = hidden.to(w.dtype) @ w.t()
        t = teacher_hidden.to(w.dtype) @ w.t() if teacher_hidden is not None else None
        return s.float(), (t.float() if t is not None else None), targets

    def interleave_layout(self, length: int, m: int) -> tuple[int, list[tuple[int, int]]]:
        """(chunks used, [(student position, teacher position) of each raw chunk's first token]).

        An even number of chunks, so that the last one is raw (a compressed
        chunk with nothing after it would cost and teach nothing).
        """
        c = self.interleave_chunk
        k = (length // c) // 2 * 2
        raw, pos = [], 1  # after [bos]
        for j in range(k):
            if j % 2 == 0:
                pos += m + 2  # [start] z [end]
            else:
                raw.append((pos, 1 + j * c))  # teacher: [bos] then the window
                pos += c
        return k, raw

    def _interleaved(self, window: torch.Tensor, teacher_h) -> tuple[torch.Tensor, torch.Tensor]:
        """(CE, hidden distillation) on the raw chunks of an interleaved window."""
        b, c, dev = window.shape[0], self.interleave_chunk, window.device
        m = c // self.compressor.config.compression_ratio
        k, raw = self.interleave_layout(window.shape[1], m)
        if k < 2:
            raise ValueError(f"a window of {window.shape[1]} tokens holds no two chunks of {c}")
        chunks = window[:, : k * c].reshape(b, k, c)
        dt = self.embed(window[:1, :1]).dtype
        z = self.latents(chunks[:, 0::2].reshape(-1, c)).reshape(b, k // 2, m, -1).to(dt)
        mark = lambda t: self.embed(torch.full((b, 1), t, device=dev))  # noqa: E731
        pieces = [mark(self.bos)]
        for j in range(k):
            pieces += [mark(self.start), z[:, j // 2], mark(self.end)] if j % 2 == 0 else [self.embed(chunks[:, j])]
        out = self._run(torch.cat(pieces, 1), True)
        s_idx = torch.cat([torch.arange(p, p + c, device=dev) for p, _ in raw])
        t_idx = torch.cat([torch.arange(q, q + c, device=dev) for _, q in raw])
        logits, _, tgt = self._logits(out.last_hidden_state[:, s_idx - 1], chunks[:, 1::2].reshape(b, -1))
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
        distill = sum(rel_mse(out.hidden_states[l][:, s_idx], teacher_h[l][:, t_idx])
                      for l in self.distill_layers) / len(self.distill_layers)
        return ce, distill

    def _run(self, embeds: torch.Tensor, output_hidden_states: bool):
        return self.decoder.model(inputs_embeds=embeds, use_cache=False, output_hidden_states=output_hidden_states)

    # --- the step ---------------------------------------------------------------
    def forward(self, passages: torch.Tensor | None, continuations: torch.Tensor | None, n_reconstruct: int = 1,
                prompt_index: int = 0, answer_mask: torch.Tensor | None = None, valid: torch.Tensor | None = None,
                app: tuple | None = None):
        """Weighted total loss and its parts (floats) for one batch.

        ``app``: (examples, pad id, answers or None), an app-layout batch (app_layout.py) instead of
        passages and continuations; it goes through ``forward`` so that data-parallel runs sync its gradients.

        ``answer_mask`` (B, Y) limits the continuation and KL losses to those
        positions of y (a QA example's answer); ``valid`` (B, Y) limits the
        hidden-state distillation to real tokens (the rest is right padding).
        Without them every position of y counts.
        """
        w = self.w
        if app is not None:
            examples, pad_id, answers = app
            loss, parts, _ = app_loss(self, examples, pad_id, w.app_kl, answers)
            return loss, parts
        b, t_len = passages.shape
        y_len = continuations.shape[1]
        dev = passages.device
        z = self.latents(passages)  # (B, M, H) fp32
        m = z.shape[1]
        dt = self.embed(passages[:1, :1]).dtype
        marks = self.embed(torch.tensor([[self.bos, self.start]], device=dev)).expand(b, -1, -1)
        end = self.embed(torch.tensor([[self.end]], device=dev)).expand(b, -1, -1)
        parts: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=dev)

        keep_raw = bool(w.raw_keep) and self.adapted
        need_teacher = w.distill_hidden or w.distill_kl or w.latent_align or w.interleaved or keep_raw
        teacher_h = None
        ids = torch.cat([torch.full((b, 1), self.bos, device=dev), passages, continuations], 1)
        if need_teacher:
            with torch.no_grad(), lora_disabled(self.decoder):  # the teacher is the untouched decoder
                teacher_h = self._run(self.embed(ids), True).hidden_states  # each (B, 1+T+Y, H)
        if keep_raw:
            # The adapted decoder on the same raw tokens; padding (QA batches) does not count.
            real = torch.ones(b, t_len + y_len, dtype=torch.bool, device=dev)
            if valid is not None:
                real[:, t_len:] = valid
            r_h = self._run(self.embed(ids), True).hidden_states
            parts["raw_keep"] = sum(rel_mse(r_h[l][:, 1:][real], teacher_h[l][:, 1:][real])
                                    for l in self.distill_layers) / len(self.distill_layers)
            total = total + w.raw_keep * parts["raw_keep"]
            del r_h

        # Student: [bos][start] z [end] y
        s_emb = torch.cat([marks, z.to(dt), end, self.embed(continuations)], 1)
        s_out = self._run(s_emb, bool(need_teacher))
        y0 = 3 + m  # student position of y[0]
        pred = slice(y0 - 1, y0 + y_len - 1)  # positions that predict y
        last = s_out.last_hidden_state
        if w.continuation or w.distill_kl:
            t_last = teacher_h[-1][:, t_len : t_len + y_len] if (w.distill_kl and teacher_h is not None) else None
            s_last, targets = last[:, pred], continuations
            if answer_mask is not None:
                s_last, targets = s_last[answer_mask], targets[answer_mask]
                t_last = t_last[answer_mask] if t_last is not None else None
            s_logits, t_logits, tgt = self._logits(s_last, targets, t_last)
            if w.continuation:
                parts["continuation"] = F.cross_entropy(s_logits.reshape(-1, s_logits.shape[-1]), tgt.reshape(-1))
                total = total + w.continuation * parts["continuation"]
            if w.distill_kl and t_logits is not None:
                parts["distill_kl"] = F.kl_div(
                    F.log_softmax(s_logits, -1), F.log_softmax(t_logits, -1), log_target=True, reduction="none"
                ).sum(-1).mean()
                total = total + w.distill_kl * parts["distill_kl"]
        if w.distill_hidden and teacher_h is not None:
            # Same input token at both positions (y_i), so every layer is comparable.
            def at_y(h: torch.Tensor, first: int) -> torch.Tensor:
                h = h[:, first : first + y_len]
                return h[valid] if valid is not None else h

            loss = sum(
                rel_mse(at_y(s_out.hidden_states[l], y0), at_y(teacher_h[l], 1 + t_len)) for l in self.distill_layers
            ) / len(self.distill_layers)
            parts["distill_hidden"] = loss
            total = total + w.distill_hidden * loss
        if w.latent_align and teacher_h is not None:
            n = self.compressor.config.compression_ratio
            pad = m * n - t_len

            def group_mean(h: torch.Tensor) -> torch.Tensor:  # (B, T, H) -> (B, M, H)
                h = F.pad(h.float(), (0, 0, 0, pad))
                cnt = torch.full((m, 1), float(n), device=dev)
                cnt[-1] = n - pad
                return h.reshape(b, m, n, -1).sum(2) / cnt

            loss = rel_mse(z, group_mean(teacher_h[0][:, 1 : 1 + t_len]))  # layer 0: input embeddings
            for l in self.distill_layers:
                loss = loss + rel_mse(s_out.hidden_states[l][:, 2 : 2 + m], group_mean(teacher_h[l][:, 1 : 1 + t_len]))
            parts["latent_align"] = loss / (1 + len(self.distill_layers))
            total = total + w.latent_align * parts["latent_align"]
        if w.interleaved and answer_mask is None:
            ce, distill = self._interleaved(torch.cat([passages, continuations], 1), teacher_h)
            parts["interleaved_ce"], parts["interleaved_distill"] = ce, distill
            total = total + w.interleaved * (ce + distill)
        if w.reconstruction and n_reconstruct > 0:
            r = min(n_reconstruct, b)
            prompt = torch.tensor([self.prompt_ids[prompt_index % len(self.prompt_ids)]], device=dev, dtype=torch.long)
            r_emb = torch.cat(
                [marks[:r], z[:r].to(dt), end[:r], self.embed(prompt).expand(r, -1, -1), self.embed(passages[:r])], 1
            )
            x0 = 3 + m + prompt.shape[1]
            hid = self._run(r_emb, False).last_hidden_state[:, x0 - 1 : x0 + t_len - 1]
            logits, _, tgt = self._logits(hid, passages[:r])
            parts["reconstruction"] = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1))
            total = total + w.reconstruction * parts["reconstruction"]
        parts["total"] = total
        return total, {k: float(v.detach()) for k, v in parts.items()}
