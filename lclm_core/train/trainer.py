"""The compressor trainer: the paper's staged recipe on accelerate, resumable, one command.

Stages (each resumes from its own last checkpoint, and starts from the
previous stage's with ``--init-from``):
  adapter  - adapter only (lr 1e-3 in the paper);
  encoder  - + LoRA on the encoder's layers (the encoder is a trainable copy of
             the decoder's first layers; LoRA keeps the shipped parts small);
  decoder  - + LoRA on the decoder (the teacher stays the untouched decoder);
             ``--w-raw-keep`` holds its reading of plain text to the
             untouched decoder's, and ``--decoder-qa-fraction`` mixes in QA
             batches, so that what the LoRA learns for latents does not cost
             the raw-text QA the app also relies on;
  app      - the app's own prompt (app_layout.py): several documents as latent
             blocks, most of them distractors, quoted passages, the question;
             the answer's cross-entropy and the KL from a teacher reading only
             the gold passage (PISCO; ``--app-teacher``: the decoder as the
             stage began, frozen, or the untouched base). Trains what the decoder
             stage trains; ``--app-fraction`` of the steps are such batches;
  qa       - QA tuning, training what the encoder stage trains: a share of
             the steps (``--qa-fraction``) are question-answer batches made
             from the shards (qa.py; loss on the answers, the teacher's hidden
             states over question and answer), the rest the usual objectives,
             so that what the earlier stages learnt is kept.
The objectives and their weights: see objectives.py.

One process on a CPU here; the same command under ``accelerate launch`` runs
data-parallel on several GPUs or nodes (each process samples its own
examples; DDP averages gradients).

    python -m lclm_core.train.trainer train --data data/shards --out runs/n4 --ratio 4 --stage adapter --steps 2000
    accelerate launch -m lclm_core.train.trainer train ...            # several processes
    python -m lclm_core.train.trainer eval --ckpt runs/n4/adapter/latest.pt --data data/shards
    python -m lclm_core.train.trainer export --ckpt runs/n4/encoder/latest.pt --out lclm_core/default_parts/ratio-4
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..checkpoint import save_adapter
from ..config import LCLMConfig
from ..default_model import default_config, gguf_sha256, load_default_decoder, truncated_view, with_own_layers
from ..device import Placement, resolve
from ..inputs import InputBuilder, tokenize_text
from ..lora import LoRALinear, apply_lora, lora_state_dict
from ..model import LCLMCompressor
from .app_layout import TARGETS, TEACHERS, AppSampler, freeze_teacher, evaluate_app, heldout_app, teacher_answers
from .data import Example, TokenShards, pad_id
from .evaluate import evaluate, evaluate_qa, heldout_examples
from .objectives import RECONSTRUCTION_PROMPTS, LCLMTrainModule, LossWeights
from .qa import QASampler, collate

log = logging.getLogger(__name__)

STAGES = ("adapter", "encoder", "decoder", "app", "qa")
WEIGHT_NAMES = tuple(f.name for f in dataclasses.fields(LossWeights))  # one --w-NAME flag each


@dataclass
class TrainConfig:
    data: str
    out: str
    stage: str = "adapter"
    decoder: str = "default"  # "default" (the embedded Gemma) or an HF causal-LM directory
    ratio: int = 4
    window: int = 512
    passage_len: int = 128
    cont_len: int = 64
    batch_size: int = 4
    reconstruct_fraction: float = 0.5  # share of each batch that also does reconstruction
    steps: int = 1000
    lr_adapter: float = 1e-3
    lr_encoder: float = 2e-4
    lr_decoder: float = 5e-5
    warmup: int = 50
    weight_decay: float = 0.0
    encoder_layers: int = 6
    encoder_lora_rank: int = 16
    decoder_lora_rank: int = 8
    lora_alpha: float = 32.0
    weights: LossWeights = field(default_factory=LossWeights)
    distill_layers: tuple[int, ...] = (3, 6, 9, 12, 15, 18)
    restricted_vocab: int = 8192
    device: str = "auto"
    dtype: str = "auto"
    seed: int = 0
    save_every: int = 100
    eval_every: int = 0
    eval_examples: int = 32
    log_every: int = 10
    init_from: str | None = None
    # The decoder LoRA alone, from another ratio's parts or checkpoint: reading latents out
    # and answering briefly carry over between ratios, so a new ratio's decoder stage starts there.
    init_decoder_from: str | None = None
    max_minutes: float = 0.0  # stop (and save) after this long; 0 = no limit
    qa_fraction: float = 0.5  # stage qa: share of steps that are QA batches
    decoder_qa_fraction: float = 0.0  # stage decoder: share of steps that are QA batches
    qa_unknown_share: float = 0.15  # stage qa: share of fact questions whose fact was left out
    interleave_chunk: int = 32  # tokens per chunk of the interleaved objective (a multiple of the ratio)
    app_fraction: float = 0.5  # stage app: share of steps that are app-layout batches (the rest: the usual objectives)
    app_documents: int = 6  # documents (one compressed passage each) per app-layout example
    app_quotes: int = 3  # at most this many passages quoted back as raw text (the app's expand_k)
    app_gold_quoted: float = 0.6  # share of examples whose gold passage is among the quotes
    app_targets: str = "gold"  # "gold": the template answer; "teacher": the teacher's own greedy answer (PISCO)
    app_teacher: str = "start"  # "start": the decoder as the stage began, LoRA included (frozen); "base": untouched

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}")
        if self.passage_len > self.window:
            raise ValueError(f"passage_len {self.passage_len} exceeds the encoder window {self.window}: one passage is one window")
        if self.app_targets not in TARGETS:
            raise ValueError(f"app_targets must be one of {TARGETS}")
        if self.app_teacher not in TEACHERS:
            raise ValueError(f"app_teacher must be one of {TEACHERS}")
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        self.distill_layers = tuple(self.distill_layers)


# --- building ---------------------------------------------------------------------
def load_decoder(cfg: TrainConfig, placement: Placement):
    if cfg.decoder == "default":
        return load_default_decoder(placement)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(cfg.decoder)
    model = AutoModelForCausalLM.from_pretrained(cfg.decoder, dtype=placement.dtype).to(placement.device).eval()
    model.requires_grad_(False)
    return model, tok


def lclm_config(cfg: TrainConfig, tok) -> LCLMConfig:
    c = default_config(cfg.ratio)
    c.encoder_window_size = cfg.window
    builder = InputBuilder(tok, c.memory_tokens)
    c.memory_tokens = builder.memory
    c.validate()
    return c


def build_module(cfg: TrainConfig, model, tok) -> LCLMTrainModule:
    """The frozen decoder + a compressor whose encoder is a trainable copy of its first layers."""
    model.requires_grad_(False)
    backbone = truncated_view(model.model, cfg.encoder_layers)
    backbone.layers = copy.deepcopy(backbone.layers)  # trained apart from the decoder's own layers
    if cfg.encoder_lora_rank:
        apply_lora(backbone.layers, cfg.encoder_lora_rank, cfg.lora_alpha)
    c = lclm_config(cfg, tok)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        comp = LCLMCompressor.build(c, backbone, tok, model.config.hidden_size, trained=True)
    comp.adapter.to(model.device)
    if cfg.stage in ("decoder", "app") and cfg.decoder_lora_rank:
        # On a copy of the layers: the loaded decoder is cached and shared by the process.
        model = with_own_layers(model)
        apply_lora(model.model.layers, cfg.decoder_lora_rank, cfg.lora_alpha)
    builder = InputBuilder(tok, c.memory_tokens)
    bos = tok.bos_token_id if tok.bos_token_id is not None else builder.start_id
    prompts = [tokenize_text(tok, p) for p in RECONSTRUCTION_PROMPTS]
    module = LCLMTrainModule(comp, model, (bos, builder.start_id, builder.end_id), cfg.weights,
                             cfg.distill_layers, cfg.restricted_vocab, prompts, cfg.interleave_chunk)
    # What trains in this stage.
    module.requires_grad_(False)
    comp.adapter.requires_grad_(True)
    for name, p in module.named_parameters():
        if "lora_" in name:
            in_encoder = name.startswith("compressor.")
            p.requires_grad_(in_encoder and cfg.stage != "adapter" or (not in_encoder and cfg.stage in ("decoder", "app")))
    return module


def param_groups(module: LCLMTrainModule, cfg: TrainConfig) -> list[dict]:
    groups = {"adapter": [], "encoder": [], "decoder": []}
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        key = "adapter" if ".adapter." in f".{name}" else "encoder" if name.startswith("compressor.") else "decoder"
        groups[key].append(p)
    lrs = {"adapter": cfg.lr_adapter, "encoder": cfg.lr_encoder, "decoder": cfg.lr_decoder}
    return [{"params": ps, "lr": lrs[k], "name": k} for k, ps in groups.items() if ps]


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Adapter + every LoRA matrix: all a checkpoint needs (the base weights never change)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items() if ".adapter." in f".{k}" or "lora_" in k}


def lr_at(step: int, cfg: TrainConfig, elapsed_minutes: float = 0.0) -> float:
    """Linear warm-up, then cosine to 10%, over the steps or the time budget, whichever ends first.

    A run on a lent machine is bounded by minutes, not steps (its speed is not
    known beforehand), so the schedule must still decay within the minutes.
    """
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    if cfg.max_minutes:
        t = max(t, elapsed_minutes / cfg.max_minutes)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


# --- checkpoints ------------------------------------------------------------------
def save_checkpoint(path: Path, module, optimizer, step: int, tokens: int, cfg: TrainConfig, history: list,
                    stream: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"trainable": trainable_state(module), "optimizer": optimizer.state_dict(), "step": step,
                "tokens_seen": tokens, "stream": stream, "config": asdict(cfg), "history": history}, tmp)
    tmp.replace(path)  # a kill mid-write leaves the previous checkpoint intact


def load_trainable(module, state: dict[str, torch.Tensor]) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint has parameters this model lacks: {unexpected[:5]}")


def read_init(path: Path, ratio: int) -> tuple[dict[str, torch.Tensor], int]:
    """(trained tensors, tokens seen) from a training checkpoint, or from shipped parts (a directory).

    Shipped parts make a later stage reproducible from the repository alone:
    ``--init-from lclm_core/default_parts/ratio-4``.
    """
    if not path.is_dir():
        ck = torch.load(path, map_location="cpu", weights_only=False)
        return ck["trainable"], ck.get("tokens_seen", 0)
    from safetensors.torch import load_file

    meta = json.loads((path / "base.json").read_text())
    n = LCLMConfig.load(path / "model_config.json").compression_ratio
    if n != ratio:
        raise ValueError(f"{path} holds parts for N = {n}, not the N = {ratio} being trained")
    state = {f"compressor.adapter.{k}": v for k, v in load_file(str(path / "adapter" / "adapter.safetensors")).items()}
    lora = path / "encoder" / "lora.safetensors"
    if lora.exists():
        state.update({f"compressor.encoder.backbone.{k}": v for k, v in load_file(str(lora)).items()})
    if (path / "decoder" / "lora.safetensors").exists():  # only a decoder stage has the LoRA wrappers to take it
        state.update(read_decoder_lora(path))
    return state, int(meta.get("tokens_seen", 0))


def read_decoder_lora(path: Path) -> dict[str, torch.Tensor]:
    """The decoder LoRA of shipped parts (a directory) or of a checkpoint, whatever its ratio.

    The decoder reads latents of any ratio through the same LoRA shapes; only the
    encoder side depends on N, so this is the one part that can move across ratios.
    """
    if path.is_dir():
        from safetensors.torch import load_file

        f = path / "decoder" / "lora.safetensors"
        if not f.exists():
            raise FileNotFoundError(f"{path} has no decoder LoRA ({f}): only a decoder stage's parts do")
        return {f"decoder.model.{k}": v for k, v in load_file(str(f)).items()}
    ck = torch.load(path, map_location="cpu", weights_only=False)
    state = {k: v for k, v in ck["trainable"].items() if k.startswith("decoder.")}
    if not state:
        raise ValueError(f"{path} holds no decoder LoRA (stage {ck['config'].get('stage')})")
    return state


def decoder_lora_scale(path: Path) -> float | None:
    """The scale (alpha / rank) a decoder LoRA was trained at: parts record it, a checkpoint's config implies it."""
    if path.is_dir():
        meta = json.loads((path / "base.json").read_text())
        return float(meta["decoder_lora_scale"]) if "decoder_lora_scale" in meta else None
    # mmap: only the config is read here; the tensors stay on disk (read_init has loaded them already)
    c = torch.load(path, map_location="cpu", weights_only=False, mmap=True)["config"]
    return c["lora_alpha"] / c["decoder_lora_rank"] if c.get("decoder_lora_rank") else None


def fit_decoder_lora(module, state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """A decoder LoRA trained at another rank or alpha, made to compute the same update in this module.

    Growing the rank is how a run buys the decoder more capacity without losing what it learned:
    the new rows of A keep this module's random start and the new columns of B are zero, so the
    merged weights are exactly the source's (B is rescaled where alpha / rank differs), and the
    new directions start learning at the first step. Shrinking would drop learned directions: refused.
    """
    wrappers = {name: m for name, m in module.named_modules() if isinstance(m, LoRALinear) and name.startswith("decoder.")}
    keys = [k for k in state if k.startswith("decoder.") and k.endswith(".lora_A")]
    if not keys or not wrappers:
        return state  # nothing to fit (load_trainable says so if the module lacks the wrappers)
    src_scale = decoder_lora_scale(source)
    out = dict(state)
    for ka in keys:
        name, kb = ka[: -len(".lora_A")], ka[: -len("A")] + "B"
        layer = wrappers.get(name)
        if layer is None:
            continue
        a, b = state[ka], state[kb]
        r = a.shape[0]
        if r > layer.rank:
            raise ValueError(f"{source} has a rank-{r} decoder LoRA; this run's is rank {layer.rank} "
                             f"(--decoder-lora-rank): a LoRA can grow, not shrink")
        ratio = 1.0 if src_scale is None else src_scale / layer.scale
        if r == layer.rank and ratio == 1.0:
            continue
        new_a = layer.lora_A.detach().cpu().clone()
        new_a[:r] = a
        new_b = torch.zeros_like(layer.lora_B, device="cpu")
        new_b[:, :r] = b * ratio
        out[ka], out[kb] = new_a, new_b
    return out


# --- the loop -----------------------------------------------------------------------
def step_rngs(seed: int, stream: int, rank: int, step: int) -> tuple[np.random.Generator, np.random.Generator]:
    """(this process's batch generator, the one every process shares to pick the step's kind).

    Keyed by step, so a resumed run draws what the uninterrupted one would have. Keyed by
    the stream too, the tokens the run's starting point had seen: without it every run
    started from trained parts redrew the very batches the runs before it trained on
    (each decoder stage of the shipped parts saw the same ~1,400 first batches). A run
    from scratch has stream 0 and keeps the keys it always had, so its batches are unchanged.
    """
    head = [seed, stream] if stream else [seed]
    return np.random.default_rng([*head, rank, step]), np.random.default_rng([*head, step])


def train(cfg: TrainConfig) -> Path:
    from accelerate import Accelerator

    placement = resolve(cfg.device, cfg.dtype)
    acc = Accelerator(cpu=placement.device.type == "cpu")
    placement = Placement(acc.device, placement.dtype)
    model, tok = load_decoder(cfg, placement)
    module = build_module(cfg, model, tok)
    stage_dir = Path(cfg.out) / cfg.stage
    latest = stage_dir / "latest.pt"
    step, tokens, history, stream = 0, 0, [], 0
    optimizer = torch.optim.AdamW(param_groups(module, cfg), weight_decay=cfg.weight_decay)
    if latest.exists():  # resume this stage
        ck = torch.load(latest, map_location="cpu", weights_only=False)
        load_trainable(module, ck["trainable"])
        optimizer.load_state_dict(ck["optimizer"])
        step, tokens, history = ck["step"], ck["tokens_seen"], ck.get("history", [])
        stream = ck.get("stream", 0)  # the stream the run began on, not its tokens now
        log.info("resumed %s at step %d (%d tokens seen)", latest, step, tokens)
    elif cfg.init_from:
        trainable, tokens = read_init(Path(cfg.init_from), cfg.ratio)
        stream = tokens  # fresh batches: not the ones the starting point was trained on
        load_trainable(module, fit_decoder_lora(module, trainable, Path(cfg.init_from)))
        log.info("initialised from %s (%d tokens seen before)", cfg.init_from, tokens)
    if cfg.init_decoder_from and not latest.exists():
        src = Path(cfg.init_decoder_from)
        load_trainable(module, fit_decoder_lora(module, read_decoder_lora(src), src))
        log.info("decoder LoRA initialised from %s", cfg.init_decoder_from)
    if cfg.stage == "app" and cfg.app_teacher == "start":
        freeze_teacher(module)  # after every load: the teacher is the decoder this run (or resume) starts from
    ddp_module, optimizer = acc.prepare(module, optimizer)
    shards = TokenShards(Path(cfg.data), "train")
    qa_share = {"qa": cfg.qa_fraction, "decoder": cfg.decoder_qa_fraction}.get(cfg.stage, 0.0)
    qa = QASampler(shards, tok, cfg.passage_len, cfg.qa_unknown_share) if qa_share > 0 else None
    pad = pad_id(tok)
    app_share = cfg.app_fraction if cfg.stage == "app" else 0.0
    app = app_sampler(cfg, shards, module) if app_share > 0 else None
    heldout = None
    if cfg.eval_every and acc.is_main_process:
        heldout = heldout_examples(TokenShards(Path(cfg.data), "heldout"), cfg.eval_examples, cfg.passage_len, cfg.cont_len)
    # The peaks come from this run's settings. A resumed optimizer's groups carry the
    # last *scheduled* rate of the run that saved them (10% of its peak at the end of
    # a cosine), and taking that as the new peak made every resume crawl at a tenth.
    peaks = {"adapter": cfg.lr_adapter, "encoder": cfg.lr_encoder, "decoder": cfg.lr_decoder}
    base_lrs = [peaks[g["name"]] for g in optimizer.param_groups]
    n_rec = max(1, round(cfg.batch_size * cfg.reconstruct_fraction)) if cfg.weights.reconstruction else 0
    t0, t_log, tok_log = time.time(), time.time(), 0
    seen: list[dict] = []
    log.info("training stage %s, N=%d, %d trainable parameters, %d process(es) on %s", cfg.stage, cfg.ratio,
             sum(p.numel() for p in module.parameters() if p.requires_grad), acc.num_processes, placement)
    while step < cfg.steps:
        rng, kind_rng = step_rngs(cfg.seed, stream, acc.process_index, step)
        for g, lr in zip(optimizer.param_groups, base_lrs):
            g["lr"] = lr * lr_at(step, cfg, (time.time() - t0) / 60)
        # Every process takes the same kind of step (the choice ignores the rank).
        kind = kind_rng.random()
        if app is not None and kind < app_share:
            batch = [app.sample(rng) for _ in range(cfg.batch_size)]
            answers = teacher_answers(module, batch) if cfg.app_targets == "teacher" else None
            loss, parts = ddp_module(None, None, app=(batch, pad, answers))
            parts = {f"app_{k}": v for k, v in parts.items()}
            n_tok = sum(e.passages.size + len(e.student) + len(e.teacher) for e in batch) * acc.num_processes
        elif qa is not None and kind < qa_share:
            x, y, ans, valid = (torch.tensor(a, device=acc.device)
                                for a in collate([qa.sample(rng) for _ in range(cfg.batch_size)], pad))
            loss, parts = ddp_module(x, y, 0, step, ans, valid)
            parts = {f"qa_{k}": v for k, v in parts.items()}
            n_tok = (x.numel() + int(valid.sum())) * acc.num_processes
        else:
            ex = [shards.sample(rng, cfg.passage_len, cfg.cont_len) for _ in range(cfg.batch_size)]
            x = torch.tensor(np.stack([e.passage for e in ex]), device=acc.device)
            y = torch.tensor(np.stack([e.continuation for e in ex]), device=acc.device)
            loss, parts = ddp_module(x, y, n_rec, step)
            n_tok = (cfg.passage_len + cfg.cont_len) * cfg.batch_size * acc.num_processes
        acc.backward(loss)
        acc.clip_grad_norm_([p for p in module.parameters() if p.requires_grad], 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        tokens += n_tok
        tok_log += n_tok
        mean_loss = acc.reduce(loss.detach().reshape(1).clone(), "mean").item()
        seen.append({"step": step, "mean": mean_loss, "local": float(loss.detach())})
        if step % cfg.log_every == 0 or step == cfg.steps:
            rate = tok_log / max(time.time() - t_log, 1e-9)
            rec = {"step": step, "tokens": tokens, "loss": mean_loss, "tok_s": rate, **{k: round(v, 5) for k, v in parts.items()}}
            history.append(rec)
            if acc.is_main_process:
                log.info("step %d loss %.4f %s %.0f tok/s", step, mean_loss, {k: round(v, 4) for k, v in parts.items()}, rate)
                stage_dir.mkdir(parents=True, exist_ok=True)
                with open(stage_dir / "log.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
            t_log, tok_log = time.time(), 0
        if cfg.eval_every and step % cfg.eval_every == 0 and acc.is_main_process:
            r = evaluate(module, heldout, greedy=False)
            log.info("eval step %d: %s", step, {k: round(v, 4) for k, v in r.as_dict().items()})
            history.append({"step": step, "eval": r.as_dict()})
        out_of_time = cfg.max_minutes and (time.time() - t0) / 60 > cfg.max_minutes
        if step % cfg.save_every == 0 or step == cfg.steps or out_of_time:
            acc.wait_for_everyone()
            if acc.is_main_process:
                save_checkpoint(latest, module, optimizer, step, tokens, cfg, history, stream)
            acc.wait_for_everyone()
        if out_of_time:
            log.info("time limit reached at step %d; resume with the same command", step)
            break
    # Every process records the reduced loss it saw and its own local one: they
    # must agree on the first and (different data) differ on the second.
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / f"losses.rank{acc.process_index}.json").write_text(json.dumps(seen))
    acc.end_training()
    return latest


def app_sampler(cfg: TrainConfig, shards: TokenShards, module: LCLMTrainModule) -> AppSampler:
    """App-layout examples for this run's decoder, ratio and passage length (app_layout.py)."""
    comp = module.compressor
    return AppSampler(shards, comp.tokenizer, InputBuilder(comp.tokenizer, comp.config.memory_tokens),
                      cfg.passage_len, cfg.ratio, cfg.app_documents, cfg.app_quotes, cfg.app_gold_quoted)


# --- evaluation and export ------------------------------------------------------------
def module_from_checkpoint(ckpt: Path | dict, placement: Placement | None = None, **overrides) -> tuple[LCLMTrainModule, TrainConfig, dict]:
    """A training module with a checkpoint's trained tensors (a path, a checkpoint already read, or shipped
    parts: a directory, read with the training settings its base.json records, so that the parts a run
    starts from are measured by the same command as the run's checkpoints)."""
    if isinstance(ckpt, Path) and ckpt.is_dir():
        meta = json.loads((ckpt / "base.json").read_text())
        trainable, tokens = read_init(ckpt, meta["train_config"]["ratio"])
        ck = {"config": meta["train_config"], "trainable": trainable, "step": meta.get("steps", 0), "tokens_seen": tokens}
    else:
        ck = ckpt if isinstance(ckpt, dict) else torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**{**ck["config"], **overrides})
    placement = placement or resolve(cfg.device, cfg.dtype)
    model, tok = load_decoder(cfg, placement)
    module = build_module(cfg, model, tok)
    load_trainable(module, ck["trainable"])
    return module, cfg, ck


def heldout_qa(module: LCLMTrainModule, data: Path, n: int, passage_len: int, batch_size: int = 8, seed: int = 4321) -> dict:
    """The QA measure on n fixed questions cut from the held-out split."""
    tok = module.compressor.tokenizer
    sampler = QASampler(TokenShards(Path(data), "heldout"), tok, passage_len)
    rng = np.random.default_rng(seed)
    examples = [sampler.sample(rng) for _ in range(n)]
    return evaluate_qa(module, examples, batch_size, pad_id=pad_id(tok))


def write_lora(state: dict[str, torch.Tensor], path: Path) -> bool:
    """Write trained LoRA A/B matrices; an untrained one (B still zero) is no part, and a file left
    there by an earlier export goes, so that the parts never mix stages.

    Stored in fp16, half the bytes of fp32 (the parts live in the repo): the loaders merge in fp32,
    and on the shipped N = 4 decoder LoRA fp16 moved logits by at most 0.008, argmax unchanged
    (bench/results/2026-11-23-raw-keep-2/fp16_check.py). Matrices that fp16 cannot hold stay fp32."""
    if not any(v.abs().sum() > 0 for k, v in state.items() if k.endswith("lora_B")):
        path.unlink(missing_ok=True)
        return False
    from safetensors.torch import save_file

    def packed(v: torch.Tensor) -> torch.Tensor:
        half = v.detach().to(torch.float16)
        return (half if torch.isfinite(half).all() else v.float()).contiguous()

    path.parent.mkdir(exist_ok=True)
    save_file({k: packed(v) for k, v in state.items()}, str(path))
    return True


def export_parts(ckpt: Path, out: Path, figures: dict | None = None, description: str = "") -> Path:
    """Write the shipped default parts (published layout + base.json) from a training checkpoint."""
    ck = torch.load(ckpt, map_location="cpu", weights_only=False)
    cfg = TrainConfig(**ck["config"])
    if cfg.decoder != "default":
        raise ValueError("only checkpoints trained on the embedded default decoder can become its parts")
    module, cfg, ck = module_from_checkpoint(ck, resolve("cpu", "float32"))
    comp = module.compressor
    out.mkdir(parents=True, exist_ok=True)
    comp.config.save(out / "model_config.json")
    save_adapter(comp.adapter, out / "adapter" / "adapter.safetensors")
    write_lora(lora_state_dict(comp.encoder.backbone), out / "encoder" / "lora.safetensors")
    # The decoder's, keyed by "layers.K....", as the loader merges it into the decoder's ``model``.
    dec_lora = write_lora(lora_state_dict(module.decoder.model), out / "decoder" / "lora.safetensors")
    meta = {
        "gguf_sha256": gguf_sha256(),
        "encoder_layers": cfg.encoder_layers,
        "lora_scale": cfg.lora_alpha / cfg.encoder_lora_rank if cfg.encoder_lora_rank else 0.0,
        **({"decoder_lora_scale": cfg.lora_alpha / cfg.decoder_lora_rank, "decoder_lora_rank": cfg.decoder_lora_rank}
           if dec_lora else {}),
        "stage": cfg.stage,
        "steps": ck["step"],
        "tokens_seen": ck["tokens_seen"],
        "description": description or f"trained: stage {cfg.stage}, {ck['tokens_seen']:,} tokens",
        "train_config": ck["config"],
        # Scalars only: per-example lists (``recon_greedy_each``) stay in the eval report.
        "figures": {k: v for k, v in (figures or {}).items() if not isinstance(v, list)},
    }
    (out / "base.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def passages_digest(examples: list[Example]) -> str:
    """sha256 of the evaluated passages' and continuations' tokens, in order.

    Two eval reports pair up passage by passage only if they read the same passages; this digest
    lets a comparison check that instead of trusting that the flags were the same.
    """
    h = hashlib.sha256()
    for e in examples:
        h.update(np.asarray(e.passage, dtype=np.int64).tobytes())
        h.update(np.asarray(e.continuation, dtype=np.int64).tobytes())
    return h.hexdigest()


def qa_figures(report: dict) -> dict:
    """The model card's share of a ``bench/eval_qa.py`` report: its summary, named by what it measured.

    Keys carry the data and the sample sizes (``needle_4k_20_haystacks``, ``faq_qa_40``) so that a
    reader of base.json sees what a figure measured and how much it can be trusted without opening
    the report. Reports made before 2026-12 measured BIG-bench disfl_qa and keep that name.
    """
    args, summ, out = report.get("args", {}), report.get("summary", {}), {}
    if "needle" in summ:
        lengths = "-".join(f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in map(int, args.get("lengths", [])))
        out[f"needle_{lengths}_{len(args.get('depths', [])) * int(args.get('trials', 0))}_haystacks"] = summ["needle"]
    for measure, key in (("faq", "faq_qa"), ("disfl_qa", "disfl_qa")):
        if measure in summ:
            out[f"{key}_{args.get('n')}"] = summ[measure]
    if out and report.get("command"):
        out["qa_measured"] = report["command"]
    return out


def _parse_config(args: argparse.Namespace) -> TrainConfig:
    kw = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig) if getattr(args, f.name, None) is not None}
    w = {k: getattr(args, f"w_{k}") for k in WEIGHT_NAMES
         if getattr(args, f"w_{k}", None) is not None}
    if w:
        kw["weights"] = LossWeights(**w)
    return TrainConfig(**kw)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    for f in dataclasses.fields(TrainConfig):
        if f.name == "weights":
            continue
        typ = {int: int, float: float, str: str}.get(type(f.default), str) if f.default is not dataclasses.MISSING else str
        if f.name == "distill_layers":
            t.add_argument("--distill-layers", dest="distill_layers", type=int, nargs="+")
        else:
            t.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=typ, required=f.default is dataclasses.MISSING)
    for k in WEIGHT_NAMES:
        t.add_argument(f"--w-{k.replace('_', '-')}", dest=f"w_{k}", type=float)
    e = sub.add_parser("eval")
    e.add_argument("--ckpt", type=Path, required=True)
    e.add_argument("--data", type=Path, required=True)
    e.add_argument("--examples", type=int, default=64)
    e.add_argument("--no-greedy", action="store_true")
    e.add_argument("--device", help="override the checkpoint's device (e.g. cpu for one trained on a GPU)")
    e.add_argument("--dtype")
    e.add_argument("--batch-size", type=int, default=8)
    e.add_argument("--passage-len", type=int, help="override the checkpoint's passage length (compare stages trained on different ones)")
    e.add_argument("--qa-examples", type=int, default=128, help="held-out QA questions (0: skip the QA measure)")
    e.add_argument("--qa-passage-len", type=int, default=256, help="passage tokens of the QA questions")
    e.add_argument("--app-examples", type=int, default=0,
                   help="held-out app-layout questions (app_layout.py; the run's --app-* settings; 0: skip)")
    e.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    x = sub.add_parser("export")
    x.add_argument("--ckpt", type=Path, required=True)
    x.add_argument("--out", type=Path, required=True)
    x.add_argument("--figures", type=Path, help="a JSON file of evaluation figures for the model card (trainer eval --out)")
    x.add_argument("--qa-report", type=Path, help="a bench/eval_qa.py report (its .json) whose summary joins the figures")
    x.add_argument("--description", default="", help="how the checkpoint was trained (hardware, time), for base.json")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.cmd == "train":
        train(_parse_config(args))
    elif args.cmd == "eval":
        overrides = {k: v for k in ("device", "dtype", "passage_len") if (v := getattr(args, k))}
        module, cfg, ck = module_from_checkpoint(args.ckpt, **overrides)
        figures = {"ratio": cfg.ratio, "stage": cfg.stage, "steps": ck["step"], "tokens_seen": ck["tokens_seen"]}
        if args.examples:  # 0: the QA measure alone
            ex = heldout_examples(TokenShards(args.data, "heldout"), args.examples, cfg.passage_len, cfg.cont_len)
            figures.update(examples=len(ex), passages_sha256=passages_digest(ex),
                           **evaluate(module, ex, args.batch_size, greedy=not args.no_greedy).as_dict(each=True))
        if args.app_examples:
            tok = module.compressor.tokenizer
            ex = heldout_app(app_sampler(cfg, TokenShards(args.data, "heldout"), module), args.app_examples)
            figures.update(evaluate_app(module, ex, pad_id(tok)))
        if args.qa_examples:
            figures.update(heldout_qa(module, args.data, args.qa_examples, min(args.qa_passage_len, cfg.window),
                                      args.batch_size))
        figures["measured"] = (f"held-out, {figures.get('examples', 0)} examples, batch {args.batch_size}, "
                               f"{os.cpu_count()}-core {resolve(cfg.device, cfg.dtype)}: python -m lclm_core.train.trainer "
                               + shlex.join(sys.argv[1:] if argv is None else argv))
        print(json.dumps(figures, indent=2))
        if args.out:
            args.out.write_text(json.dumps(figures, indent=2) + "\n")
    else:
        figures = json.loads(args.figures.read_text()) if args.figures else {}
        if args.qa_report:
            figures.update(qa_figures(json.loads(args.qa_report.read_text())))
        print(export_parts(args.ckpt, args.out, figures, args.description))
    return 0


if __name__ == "__main__":
    sys.exit(main())
