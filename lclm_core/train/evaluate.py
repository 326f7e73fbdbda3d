"""Honest measures of what the latents carry, each beside its baselines in the same run.

continuation: loss on the Y tokens that follow a passage x, given x as
  (a) raw text, (b) its own latents, (c) latents of a *different* passage
  (a derangement of the batch), (d) nothing. ``gap_closed`` = (d - b) / (d - a)
  is how much of raw context's benefit the latents recover; ``content_gap`` =
  (c - b) / (d - a) is the part that depends on *this* passage's content — the
  genre/style of the corpus is in (c) as well, and the CPU pilot showed that
  latents learn the genre first.
reconstruction: after ``[start] z(x) [end] <prompt>``, teacher-forced token
  accuracy on x and greedy exact-token accuracy (position by position) of a
  generated copy; the floor is the same with an empty memory block. Position
  by position, one dropped or added token scores the rest of a good copy as
  wrong, so the greedy copy is also scored by its longest common subsequence
  with x (the share of x's tokens the copy gives in order, gaps allowed),
  beside the same measure for the empty-memory copy (common words match
  anyway).
qa (evaluate_qa): questions cut from held-out passages (qa.py: what follows a
  cue, a blanked word, a made-up fact), answered with the passage as raw text,
  its own latents, another passage's latents, or nothing. An answer counts as
  exact when every answer token is the argmax under teacher forcing, which is
  exactly when greedy decoding starts its answer with it (whatever follows).
  The prompt is the training format, with no demonstration: the frozen base
  decoder reading raw text has never seen it, the latents' encoder has.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .data import Example
from .qa import QAExample, collate
from .objectives import RECONSTRUCTION_PROMPTS, LCLMTrainModule

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    loss_raw: float
    loss_own: float
    loss_shuffled: float
    loss_none: float
    recon_tf_acc: float
    recon_tf_floor: float
    recon_greedy_acc: float
    recon_greedy_floor: float
    n_examples: int
    recon_greedy_lcs: float = float("nan")
    recon_greedy_lcs_floor: float = float("nan")
    # Each passage's greedy exact-position accuracy, in example order. One early slip misaligns the
    # rest of a copy, so a passage scores near 0 or near 1 and the mean of 64 moves by points: the
    # spread gives the figure its standard error, and two checkpoints on the same passages pair up.
    recon_greedy_each: list[float] = field(default_factory=list)

    @property
    def recon_greedy_se(self) -> float:
        """Standard error of ``recon_greedy_acc`` over passages (nan where greedy copies were not run)."""
        n = len(self.recon_greedy_each)
        return float(np.std(self.recon_greedy_each, ddof=1) / np.sqrt(n)) if n > 1 else float("nan")

    @property
    def gap_closed(self) -> float:
        return (self.loss_none - self.loss_own) / max(self.loss_none - self.loss_raw, 1e-9)

    @property
    def content_gap(self) -> float:
        return (self.loss_shuffled - self.loss_own) / max(self.loss_none - self.loss_raw, 1e-9)

    def as_dict(self, each: bool = False) -> dict:
        """The figures; ``each`` adds the per-passage greedy scores (for pairing two reports)."""
        d = {k: v for k, v in self.__dict__.items() if k != "recon_greedy_each"}
        d.update(gap_closed=self.gap_closed, content_gap=self.content_gap, recon_greedy_se=self.recon_greedy_se)
        if each:
            d["recon_greedy_each"] = list(self.recon_greedy_each)
        return d


def _ce(module: LCLMTrainModule, embeds: torch.Tensor, first: int, targets: torch.Tensor) -> torch.Tensor:
    """Per-example mean CE of targets that start at position ``first`` (full vocabulary)."""
    h = module.decoder.model(inputs_embeds=embeds, use_cache=False).last_hidden_state
    hid = h[:, first - 1 : first - 1 + targets.shape[1]]
    logits = module.decoder.get_output_embeddings()(hid).float()
    return F.cross_entropy(logits.transpose(1, 2), targets, reduction="none").mean(1), logits.argmax(-1)


def derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """A permutation with no fixed point: every passage gets someone else's latents."""
    if n < 2:
        raise ValueError("shuffled latents need at least 2 examples per batch")
    while True:
        p = rng.permutation(n)
        if not (p == np.arange(n)).any():
            return p


@torch.no_grad()
def evaluate(module: LCLMTrainModule, examples: list[Example], batch_size: int = 8, greedy: bool = True,
             seed: int = 0) -> EvalResult:
    """All measures on the same examples; continuation uses (passage, continuation) pairs."""
    module.eval()
    dev = next(module.compressor.adapter.parameters()).device
    rng = np.random.default_rng(seed)
    sums = {k: 0.0 for k in ("raw", "own", "shuf", "none", "tf", "tf0", "gr", "gr0", "lcs", "lcs0")}
    each: list[float] = []
    n = 0
    prompt = torch.tensor(module.prompt_ids[0], device=dev)
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        if len(chunk) < 2:
            break
        x = torch.tensor(np.stack([e.passage for e in chunk]), device=dev)
        y = torch.tensor(np.stack([e.continuation for e in chunk]), device=dev)
        b, t = x.shape
        z = module.latents(x)
        dt = module.embed(x[:1, :1]).dtype
        z = z.to(dt)
        zs = z[torch.as_tensor(derangement(b, rng), device=dev)]
        e = module.embed
        bos = e(torch.full((b, 1), module.bos, device=dev))
        start = e(torch.full((b, 1), module.start, device=dev))
        end = e(torch.full((b, 1), module.end, device=dev))
        ey, ex, ep = e(y), e(x), e(prompt)[None].expand(b, -1, -1)
        raw, _ = _ce(module, torch.cat([bos, ex, ey], 1), 1 + t, y)
        own, _ = _ce(module, torch.cat([bos, start, z, end, ey], 1), 3 + z.shape[1], y)
        shuf, _ = _ce(module, torch.cat([bos, start, zs, end, ey], 1), 3 + z.shape[1], y)
        none, _ = _ce(module, torch.cat([bos, ey], 1), 1, y)
        # Reconstruction, teacher-forced: argmax at each position of x.
        rec_in = torch.cat([bos, start, z, end, ep], 1)
        floor_in = torch.cat([bos, start, end, ep], 1)
        _, am = _ce(module, torch.cat([rec_in, ex], 1), rec_in.shape[1], x)
        _, am0 = _ce(module, torch.cat([floor_in, ex], 1), floor_in.shape[1], x)
        sums["tf"] += (am == x).float().mean(1).sum().item()
        sums["tf0"] += (am0 == x).float().mean(1).sum().item()
        if greedy:
            for key, prefix in (("", rec_in), ("0", floor_in)):
                exact, lcs = _greedy_scores(module, prefix, x)
                sums["gr" + key] += sum(exact)
                sums["lcs" + key] += sum(lcs)
                if not key:
                    each += exact
        for k, v in (("raw", raw), ("own", own), ("shuf", shuf), ("none", none)):
            sums[k] += v.sum().item()
        n += b
    module.train()
    if n == 0:
        raise ValueError("evaluation needs at least 2 examples")
    nan = float("nan")  # greedy copies not measured: say so, never 0
    g = {k: sums[k] / n if greedy else nan for k in ("gr", "gr0", "lcs", "lcs0")}
    return EvalResult(
        sums["raw"] / n, sums["own"] / n, sums["shuf"] / n, sums["none"] / n,
        sums["tf"] / n, sums["tf0"] / n, g["gr"], g["gr0"], n, g["lcs"], g["lcs0"], each,
    )


def lcs_length(a: list[int], b: list[int]) -> int:
    """Longest common subsequence of two token lists (O(len(a) * len(b)), 128 x 128 here)."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _greedy_scores(module: LCLMTrainModule, prefix: torch.Tensor, x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Each example's greedy copy: its exact-position accuracy and its LCS share of x."""
    out = module.decoder.generate(
        inputs_embeds=prefix, attention_mask=torch.ones(prefix.shape[:2], dtype=torch.long, device=prefix.device),
        max_new_tokens=x.shape[1], min_new_tokens=x.shape[1], do_sample=False, eos_token_id=None, pad_token_id=0,
    )
    gen = out[:, -x.shape[1]:]
    exact = (gen == x).float().mean(1).tolist()
    lcs = [lcs_length(g.tolist(), t.tolist()) / x.shape[1] for g, t in zip(gen, x)]
    return exact, lcs


@torch.no_grad()
def evaluate_qa(module: LCLMTrainModule, examples: list[QAExample], batch_size: int = 8, seed: int = 0,
                pad_id: int = 0) -> dict:
    """Exact-answer rate (greedy) per condition, overall and per kind of question, on the same examples."""
    module.eval()
    dev = next(module.compressor.adapter.parameters()).device
    rng = np.random.default_rng(seed)
    hits: dict[str, list[float]] = {c: [] for c in ("raw", "own", "shuffled", "none")}
    kinds: list[str] = []
    e = module.embed
    for s in range(0, len(examples), batch_size):
        chunk = examples[s : s + batch_size]
        if len(chunk) < 2:
            break
        x, y, ans, _ = (torch.as_tensor(a, device=dev) for a in collate(chunk, pad_id, score=True))
        b = x.shape[0]
        z = module.latents(x).to(e(x[:1, :1]).dtype)
        zs = z[torch.as_tensor(derangement(b, rng), device=dev)]
        bos, start, end = (e(torch.full((b, 1), t, device=dev)) for t in (module.bos, module.start, module.end))
        prefixes = {"raw": torch.cat([bos, e(x)], 1), "own": torch.cat([bos, start, z, end], 1),
                    "shuffled": torch.cat([bos, start, zs, end], 1), "none": bos}
        for cond, pre in prefixes.items():
            _, am = _ce(module, torch.cat([pre, e(y)], 1), pre.shape[1], y)
            right = (am == y) | ~ans  # only answer tokens must be right
            hits[cond] += right.all(1).float().tolist()
        kinds += [c.kind for c in chunk]
    module.train()
    if not kinds:
        raise ValueError("QA evaluation needs at least 2 examples")
    out: dict = {"qa_examples": len(kinds)}
    for cond, h in hits.items():
        out[f"qa_exact_{cond}"] = float(np.mean(h))
        for k in sorted(set(kinds)):
            out[f"qa_exact_{cond}_{k}"] = float(np.mean([v for v, kk in zip(h, kinds) if kk == k]))
    return out


def heldout_examples(shards, n: int, passage_len: int, cont_len: int, seed: int = 1234) -> list[Example]:
    """A fixed set of held-out examples (same seed, same examples on every run)."""
    rng = np.random.default_rng(seed)
    return [shards.sample(rng, passage_len, cont_len) for _ in range(n)]


__all__ = ["EvalResult", "evaluate", "evaluate_qa", "heldout_examples", "derangement", "RECONSTRUCTION_PROMPTS"]
