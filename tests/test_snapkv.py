"""SnapKV, the KV-compression baseline of the benchmarks, on a tiny Gemma-like decoder."""

import sys
from pathlib import Path

import pytest
import torch

import tiny
from lclm_core.backend import GenerationConfig
from lclm_core.inputs import Text
from lclm_core.torch_backend import TorchDecoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from snapkv import kv_bytes, prefill_snapkv, select  # noqa: E402

PROMPT = [Text("The quick brown fox jumps over the lazy dog. " * 12 + "Paris is the capital of France. " * 6)]


@pytest.fixture
def dec():
    return TorchDecoder(tiny.decoder("gemma", layers=3), tiny.tokenizer("gemma"), n_ctx=4096)


def next_logits(dec, first_logits):
    """Logits after feeding the greedy next token: what decoding from the (compressed) cache sees."""
    tok = int(first_logits.argmax())
    return dec._run(dec.token_embeddings([tok]), want_logits=True)


def test_keeping_every_position_changes_nothing(dec):
    inputs = dec.build(PROMPT, add_bos=True)
    dec.reset()
    ref_first = dec.prefill(inputs)
    ref_next = next_logits(dec, ref_first)
    res = prefill_snapkv(dec, inputs, budget=len(inputs), window=8)
    assert res.kept == res.total == len(inputs)
    torch.testing.assert_close(res.logits, ref_first, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(next_logits(dec, res.logits), ref_next, rtol=1e-4, atol=1e-4)


def test_full_attention_layers_keep_the_budget_and_sliding_ones_their_window(dec):
    inputs = dec.build(PROMPT, add_bos=True)
    res = prefill_snapkv(dec, inputs, budget=40, window=8)
    types = dec.model.config.layer_types
    for kind, layer in zip(types, dec.cache.layers):
        if kind == "full_attention":
            assert layer.keys.shape[2] == 40 and layer.values.shape[2] == 40
    assert res.kv_bytes_after < res.kv_bytes_before and kv_bytes(dec.cache) == res.kv_bytes_after
    assert dec.n_past == len(inputs)  # new tokens go on at their true positions
    out = "".join(dec.generate(GenerationConfig(max_new_tokens=5), logits=res.logits))
    assert isinstance(out, str)


def test_selection_keeps_the_most_attended_positions_in_order():
    scores = torch.zeros(2, 100)
    scores[0, [10, 50, 90]] = 5.0
    scores[1, [3, 60]] = 5.0
    idx = select(scores, keep=3, kernel=1)
    assert idx[0].tolist() == [10, 50, 90]
    assert set(idx[1].tolist()) >= {3, 60} and idx[1].tolist() == sorted(idx[1].tolist())
    # pooling spreads a peak to its neighbours: with kernel 5 a lone peak keeps the two on each side
    lone = torch.zeros(1, 100)
    lone[0, 50] = 5.0
    assert select(lone, keep=5, kernel=5)[0].tolist() == [48, 49, 50, 51, 52]


def test_a_budget_inside_the_window_is_refused(dec):
    with pytest.raises(ValueError, match="observation window"):
        prefill_snapkv(dec, dec.build(PROMPT, add_bos=True), budget=8, window=8)


def test_a_cut_leaves_the_observed_cache_whole_for_the_next_budget(dec):
    from snapkv import compressed_cache, observe

    inputs = dec.build(PROMPT, add_bos=True)
    obs = observe(dec, inputs, window=8)
    full = dec.cache
    before = [(layer.keys.clone(), layer.values.clone()) for layer in full.layers]
    cut = compressed_cache(full, obs, budget=40)
    for kind, layer, new, (k, v) in zip(dec.model.config.layer_types, full.layers, cut.layers, before):
        assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)  # the input is untouched
        assert new.keys is not layer.keys  # and the copy owns its tensors: decoding from it cannot touch the input
        if kind == "full_attention":
            assert new.keys.shape[2] == 40 and layer.keys.shape[2] == len(inputs)
