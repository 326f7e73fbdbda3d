"""A checkpoint's decoder/ through llama.cpp's converter, paired with the torch compressor."""

import pytest
import torch

from lclm_core.checkpoint import load_checkpoint, save_checkpoint
from lclm_core.config import LCLMConfig
from lclm_core.convert import ConverterError, convert_decoder, find_converter, load_with_gguf
from lclm_core.default_model import load_default_decoder
from lclm_core.device import Placement
from lclm_core.inputs import Latents, Text
from lclm_core.model import LCLMCompressor

pytestmark = pytest.mark.integration
CPU32 = Placement(torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def converter():
    try:
        return find_converter()
    except ConverterError as e:
        pytest.skip(f"llama.cpp's converter cannot be had here: {e}")


def tiny_gemma_checkpoint(root, tok):
    """A tiny Gemma-3 encoder and decoder on the real Gemma vocabulary (the converter knows it)."""
    from transformers import AutoModel, AutoModelForCausalLM, Gemma3TextConfig

    def cfg(h):
        # As the real Gemma 3: 5 sliding layers then 1 full, and query_pre_attn_scalar
        # = head_dim. llama.cpp derives both from the architecture and head size,
        # not from these config keys, so a tiny model must follow them too.
        return Gemma3TextConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=2 * h, num_hidden_layers=6,
                                num_attention_heads=2, num_key_value_heads=1, head_dim=h // 2,
                                max_position_embeddings=2048, sliding_window=64, query_pre_attn_scalar=h // 2,
                                layer_types=["sliding_attention"] * 5 + ["full_attention"])

    torch.manual_seed(0)
    decoder = AutoModelForCausalLM.from_config(cfg(64)).eval()
    comp = LCLMCompressor.build(LCLMConfig(compression_ratio=4, encoder_window_size=64),
                                AutoModel.from_config(cfg(32)).eval(), tok, 64)
    return save_checkpoint(root, comp, decoder, tok)


def test_converted_decoder_reads_latents_like_the_torch_decoder(tmp_path, converter):
    _, tok = load_default_decoder(CPU32)
    root = tiny_gemma_checkpoint(tmp_path / "ckpt", tok)
    gguf = convert_decoder(root, outtype="f32", llama_cpp_dir=converter)
    assert gguf.exists() and gguf.stat().st_size > 1_000_000

    torch_side = load_checkpoint(root, CPU32)
    pair = load_with_gguf(root, gguf, CPU32, n_ctx=512)
    try:
        (lat,) = pair.checkpoint.compressor.compress(["R is a language and environment for statistical computing."],
                                                     dtype=torch.float32)
        parts = [Text("Context:"), Latents(lat.data), Text(" The language is")]
        with torch_side.torch_backend() as t:
            want = t.prefill(parts)
        got = pair.decoder.prefill(parts)
        # A random tiny model's logits are nearly flat (ties everywhere), so the
        # comparison is on the values, not on the ranking. fp32 on both sides;
        # different kernels sum in different orders (measured max |diff| 1.2e-3).
        torch.testing.assert_close(got, want, rtol=0, atol=5e-3)
        assert float((want.max() - want.min())) > 0.1  # not a degenerate (constant) output
    finally:
        pair.close()
