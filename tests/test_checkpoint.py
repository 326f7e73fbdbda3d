"""Checkpoint I/O in the published layout, on tiny models the test builds."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

import tiny
from lclm_core.checkpoint import (
    ADAPTER_FILE, CheckpointError, load_checkpoint, resolve_checkpoint_dir, save_checkpoint,
)
from lclm_core.config import LCLMConfig
from lclm_core.device import Placement
from lclm_core.inputs import Latents, Text
from lclm_core.model import LCLMCompressor
from lclm_core.torch_backend import TorchDecoder

CPU32 = Placement(torch.device("cpu"), torch.float32)
TEXTS = ["Paris is the capital of France. " * 9, "R is a language for statistical computing."]


def tiny_lclm(pooling="mean"):
    cfg = LCLMConfig(compression_ratio=4, encoder_window_size=32, pooling=pooling)
    dec = tiny.decoder("qwen")
    torch.manual_seed(3)
    comp = LCLMCompressor.build(cfg, tiny.encoder_backbone("qwen"), tiny.tokenizer("qwen"), dec.config.hidden_size)
    return comp, dec


def next_logits(decoder, tok, latents):
    with TorchDecoder(decoder, tok) as d:
        return d.prefill([Text("Context:"), Latents(latents), Text(" Answer:")])


@pytest.mark.parametrize("pooling", ["mean", "concat"])
def test_save_load_round_trip_gives_identical_latents_and_logits(tmp_path, pooling):
    comp, dec = tiny_lclm(pooling)
    before = comp.compress(TEXTS, dtype=torch.float32)
    logits_before = next_logits(dec, tiny.tokenizer("qwen"), before[0].data)

    save_checkpoint(tmp_path / "ckpt", comp, dec, tiny.tokenizer("qwen"))
    assert set(load_file(str(tmp_path / "ckpt" / ADAPTER_FILE))) == {"norm.weight", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}
    assert json.loads((tmp_path / "ckpt" / "model_config.json").read_text())["pooling"] == pooling

    loaded = load_checkpoint(tmp_path / "ckpt", CPU32)
    after = loaded.compressor.compress(TEXTS, dtype=torch.float32)
    for a, b in zip(before, after):
        assert torch.equal(a.data, b.data)
    assert loaded.compressor.fingerprint == comp.fingerprint
    # `--dtype auto` picks float32 or bfloat16 by machine: the same weights must name the same compressor
    assert load_checkpoint(tmp_path / "ckpt", Placement(torch.device("cpu"), torch.bfloat16),
                           load_decoder=False).compressor.fingerprint == comp.fingerprint
    logits_after = next_logits(loaded.decoder_model, loaded.decoder_tokenizer, after[0].data)
    assert torch.equal(logits_before, logits_after)
    with loaded.torch_backend() as backend:
        assert backend.builder.memory.placeholder == "<|memory|>"


def test_fingerprint_changes_with_the_weights(tmp_path):
    comp, _ = tiny_lclm()
    fp = comp.fingerprint
    other, _ = tiny_lclm()
    assert other.fingerprint == fp  # same seed, same weights
    with torch.no_grad():
        other.adapter.fc1.bias += 1
    other._fingerprint = None
    assert other.fingerprint != fp


def test_a_directory_missing_parts_says_which(tmp_path):
    comp, dec = tiny_lclm()
    save_checkpoint(tmp_path / "c", comp)  # no decoder
    with pytest.raises(CheckpointError, match="missing decoder"):
        load_checkpoint(tmp_path / "c", CPU32)
    assert load_checkpoint(tmp_path / "c", CPU32, load_decoder=False).decoder_model is None


def test_adapter_with_wrong_keys_is_refused(tmp_path):
    comp, dec = tiny_lclm()
    root = save_checkpoint(tmp_path / "c", comp, dec, tiny.tokenizer("qwen"))
    state = load_file(str(root / ADAPTER_FILE))
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(root / ADAPTER_FILE))
    with pytest.raises(CheckpointError, match="adapter keys"):
        load_checkpoint(root, CPU32)


def test_offline_hub_id_without_a_local_copy_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(CheckpointError) as e:
        resolve_checkpoint_dir("latent-context/0.6b-4b-LCLM-8x")
    msg = str(e.value)
    assert "not on this machine" in msg and "hf download latent-context/0.6b-4b-LCLM-8x" in msg and "--local-dir" in msg


def test_a_path_that_is_neither_dir_nor_hub_id(tmp_path):
    with pytest.raises(CheckpointError, match="no such directory"):
        resolve_checkpoint_dir(tmp_path / "nope" / "deeper")
