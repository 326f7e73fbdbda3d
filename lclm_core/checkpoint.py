"""Checkpoint I/O in the published LCLM layout.

    model_config.json            LCLMConfig keys
    encoder/                     HF AutoModel + tokenizer
    decoder/                     HF causal LM + tokenizer (with the memory tokens)
    adapter/adapter.safetensors  norm.weight, fc1.weight, fc1.bias, fc2.weight, fc2.bias

``load_checkpoint`` reads a local directory, or a hub id
(``latent-context/0.6b-4b-LCLM-8x``) through huggingface_hub when online or
already in its cache. Offline with no local copy is one clear error.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from .adapter import build_adapter
from .config import LCLMConfig
from .device import Placement, resolve
from .model import LCLMCompressor
from .torch_backend import TorchDecoder

log = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
ADAPTER_FILE = Path("adapter") / "adapter.safetensors"
ADAPTER_KEYS = {
    "mlp": {"norm.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"},
    "linear": {"norm.weight", "fc1.weight", "fc1.bias"},
}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message says what to do."""


@dataclass
class LoadedCheckpoint:
    """A compressor and, if loaded, its decoder (model + tokenizer)."""

    path: Path
    compressor: LCLMCompressor
    decoder_model: object | None
    decoder_tokenizer: object | None

    def torch_backend(self) -> TorchDecoder:
        if self.decoder_model is None:
            raise CheckpointError(f"{self.path}: the decoder was not loaded (load_decoder=False)")
        return TorchDecoder(self.decoder_model, self.decoder_tokenizer, self.compressor.config.memory_tokens)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")


def resolve_checkpoint_dir(source: str | os.PathLike) -> Path:
    """A local directory for a path or a hub id; downloads only when online."""
    p = Path(source).expanduser()
    if p.is_dir():
        return p
    text = str(source)
    if not _HUB_ID.match(text):
        raise CheckpointError(f"checkpoint {text!r}: no such directory (and it is not a hub id like owner/name)")
    how = (
        f"download it where there is network, e.g. `hf download {text} --local-dir ~/models/{text.split('/')[-1]}`, "
        f"copy that directory here and pass its path instead of {text!r}"
    )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency
        raise CheckpointError(f"checkpoint {text!r} is not a local directory and huggingface_hub is missing; {how}") from e
    try:
        return Path(snapshot_download(repo_id=text, local_files_only=_offline()))
    except Exception as e:  # offline, unreachable, unknown repo, gated...
        raise CheckpointError(
            f"checkpoint {text!r} is not on this machine and could not be downloaded ({type(e).__name__}); {how}"
        ) from e


def _check_layout(root: Path, need_decoder: bool) -> None:
    need = [root / CONFIG_FILE, root / "encoder", root / ADAPTER_FILE] + ([root / "decoder"] if need_decoder else [])
    missing = [str(p.relative_to(root)) for p in need if not p.exists()]
    if missing:
        raise CheckpointError(f"{root} is not an LCLM checkpoint: missing {', '.join(missing)}")


def files_digest(paths: list[Path]) -> str:
    """sha256 over files' names and bytes: a stable identity for weights loaded from them."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def load_adapter_state(path: Path, adapter_type: str) -> dict[str, torch.Tensor]:
    state = load_file(str(path))
    want = ADAPTER_KEYS.get(adapter_type)
    if want is not None and set(state) != want:
        raise CheckpointError(f"{path}: adapter keys {sorted(state)} do not match the {adapter_type} adapter's {sorted(want)}")
    return state


def load_checkpoint(
    source: str | os.PathLike, placement: Placement | None = None, load_decoder: bool = True
) -> LoadedCheckpoint:
    """Load a checkpoint in the published layout onto a device."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    placement = placement or resolve()
    root = resolve_checkpoint_dir(source)
    _check_layout(root, load_decoder)
    config = LCLMConfig.load(root / CONFIG_FILE)
    log.info("loading LCLM checkpoint %s (N=%d) on %s", root, config.compression_ratio, placement)

    enc_tok = AutoTokenizer.from_pretrained(root / "encoder")
    backbone = AutoModel.from_pretrained(root / "encoder", dtype=placement.dtype).to(placement.device).eval()
    state = load_adapter_state(root / ADAPTER_FILE, config.adapter_type)
    dec_dim = state["fc2.weight" if "fc2.weight" in state else "fc1.weight"].shape[0]
    # No weights_id: the fingerprint hashes the loaded tensors, so a checkpoint
    # saved and loaded again (in any dtype) keeps the fingerprint of its latents.
    compressor = LCLMCompressor.build(config, backbone, enc_tok, dec_dim)
    compressor.adapter.load_state_dict(state)
    compressor.adapter.to(placement.device)

    dec_model = dec_tok = None
    if load_decoder:
        dec_tok = AutoTokenizer.from_pretrained(root / "decoder")
        dec_model = AutoModelForCausalLM.from_pretrained(root / "decoder", dtype=placement.dtype).to(placement.device).eval()
        if dec_model.config.hidden_size != dec_dim:
            raise CheckpointError(f"{root}: adapter outputs {dec_dim} wide but the decoder's hidden size is {dec_model.config.hidden_size}")
    return LoadedCheckpoint(root, compressor, dec_model, dec_tok)


def save_adapter(adapter: torch.nn.Module, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in adapter.state_dict().items()}
    save_file(state, str(path))


def save_checkpoint(root: str | os.PathLike, compressor: LCLMCompressor, decoder_model=None, decoder_tokenizer=None) -> Path:
    """Write the published layout (the decoder only if given)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    compressor.config.save(root / CONFIG_FILE)
    compressor.encoder.backbone.save_pretrained(root / "encoder")
    compressor.tokenizer.save_pretrained(root / "encoder")
    save_adapter(compressor.adapter, root / ADAPTER_FILE)
    if decoder_model is not None:
        decoder_model.save_pretrained(root / "decoder")
        if decoder_tokenizer is not None:
            decoder_tokenizer.save_pretrained(root / "decoder")
    return root
