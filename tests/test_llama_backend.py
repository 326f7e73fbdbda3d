"""The llama.cpp decoder backend: embedding input, scaling, state restore, prefix cache, errors.

Unit tests (scaling table, cache, GGUF row reader) need no model. Integration
tests load the real embedded default once per module: the Q4_K_M GGUF in
llama.cpp and, for the cross-backend check, its dequantized copy in
transformers (fp32).

Numerics (measured with llama-cpp-python 0.3.36 on x86-64):
- Feeding a span as embedding rows instead of token ids gives bit-identical
  logits when the spans are cut into the same batches.
- llama.cpp's logits depend on how positions are split into batches when a
  batch is tiny (a few rows take another matmul kernel): feeding
  ``[3][300][28]`` instead of ``[331]`` moved logits by up to ~1.3 (total
  variation ~0.05) with the same top token. Tests therefore compare like with
  like, and check the single-batch run only for its top token and a TV bound.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lclm_core.backend import ContextLengthError, GenerationConfig, GenerationResult
from lclm_core.inputs import DecoderInputs, EmbedSpan, Latents, Text, TokenSpan
from lclm_core.llama_backend import (
    EMBEDDING_SCALING,
    CachedPrefix,
    GGUFTensorRows,
    LlamaCppDecoder,
    PrefixStateCache,
    UnsupportedArchitecture,
    embedding_scaling,
)
from lclm_core.llama_ffi import ContextConfig, LlamaContext, LlamaDecodeError, LlamaError

PASSAGE = (
    "The lighthouse at Port Aran was built in 1871 by the engineer Mairead Quill. It stands 41 metres tall "
    "and its lamp, first fuelled by whale oil and later by paraffin, was electrified in 1936. The keeper's "
    "cottage now houses a small museum about the shipwrecks of the northern coast, including the schooner "
    "Greyhound, which sank in the storm of 1894 with a cargo of slate. Visitors climb 187 steps to the gallery."
)
QUESTION = " Question: Who built the lighthouse at Port Aran? Answer:"
TOP5_MARGIN = 0.4  # logits; llama.cpp vs torch fp32 differ by ~0.2-0.3 near the top (0.31 seen on a CPU without AMX), ~1 at most over the vocabulary


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    """Total variation distance between the softmaxes of two logit vectors."""
    return 0.5 * float((torch.softmax(a.double(), -1) - torch.softmax(b.double(), -1)).abs().sum())


# --- unit: no model ------------------------------------------------------------------


def test_scaling_table_gemma_scaled_qwen_not() -> None:
    g = embedding_scaling("gemma3")
    assert g.token_factor(640) == pytest.approx(math.sqrt(640))
    assert g.embd_factor(640) == 1.0  # llama.cpp leaves batch.embd of gemma3 alone: pass scaled rows as they are
    q = embedding_scaling("qwen3")
    assert q.token_factor(2560) == 1.0 and q.embd_factor(2560) == 1.0
    g2 = embedding_scaling("gemma2")  # scales every input in llama.cpp: latents must be unscaled first
    assert g2.token_factor(2304) * g2.embd_factor(2304) == pytest.approx(1.0)
    assert all(s.model_scales or not s.llama_scales_embd for s in EMBEDDING_SCALING.values())


def test_scaling_table_refuses_unknown_architecture() -> None:
    with pytest.raises(UnsupportedArchitecture, match="EMBEDDING_SCALING"):
        embedding_scaling("rwkv7")


def _entry(n_past: int, state_bytes: int, n_vocab: int = 16) -> CachedPrefix:
    return CachedPrefix(n_past, np.arange(n_vocab, dtype=np.float32) + n_past, bytes([n_past % 256]) * state_bytes)


def test_prefix_cache_is_lru_bounded_by_bytes() -> None:
    one = _entry(1, 1000).nbytes
    cache = PrefixStateCache(max_bytes=3 * one)
    for k in "abc":
        cache.put(k, _entry(ord(k), 1000))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", _entry(4, 1000))
    assert "b" not in cache and "a" in cache and "c" in cache and "d" in cache
    assert cache.bytes <= cache.max_bytes
    cache.put("huge", _entry(5, 10 * one))  # larger than the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 3


def test_prefix_cache_persists_to_disk_and_drops_bad_files(tmp_path: Path) -> None:
    cache = PrefixStateCache(max_bytes=1 << 20, directory=tmp_path)
    e = _entry(7, 5000)
    cache.put("k1", e)
    fresh = PrefixStateCache(max_bytes=1 << 20, directory=tmp_path)
    got = fresh.get("k1")
    assert got is not None and got.n_past == 7 and got.state == e.state and np.array_equal(got.logits, e.logits)
    (tmp_path / "k2.lcps").write_bytes(b"LCPS1\n{\"n_past\": 1, \"n_vocab\": 4, \"state\": 99}\nshort")
    assert fresh.get("k2") is None and not (tmp_path / "k2.lcps").exists()
    small = PrefixStateCache(max_bytes=1 << 20, directory=tmp_path, max_disk_bytes=2 * e.nbytes + 400)
    for k in ("k3", "k4", "k5"):
        small.put(k, _entry(3, 5000))
    assert sum(p.stat().st_size for p in tmp_path.glob("*.lcps")) <= small.max_disk_bytes


def test_gguf_rows_match_gguf_reader(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "tiny.gguf"
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((10, 64)).astype(np.float32)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_array("tokenizer.ggml.tokens", [f"tok{i}" for i in range(10)])  # a string array to skip
    w.add_tensor("other.weight", rng.standard_normal(7).astype(np.float32))
    w.add_tensor("token_embd.weight", gguf.quants.quantize(emb, gguf.GGMLQuantizationType.Q8_0),
                 raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    w.add_tensor("f32.weight", emb)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    ref = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    rows = GGUFTensorRows(path, "token_embd.weight")
    want = gguf.quants.dequantize(ref["token_embd.weight"].data, ref["token_embd.weight"].tensor_type)
    assert np.array_equal(rows.rows([3, 0, 9]), want[[3, 0, 9]])
    assert np.allclose(rows.rows([1]), emb[[1]], atol=0.05)
    assert np.array_equal(GGUFTensorRows(path, "f32.weight").rows([2, 5]), emb[[2, 5]])
    with pytest.raises(KeyError):
        GGUFTensorRows(path, "missing.weight")


# --- integration: the real default model -----------------------------------------------


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    from lclm_core.default_model import DefaultModelError, ensure_gguf

    try:
        return ensure_gguf()
    except DefaultModelError as e:
        pytest.skip(f"default model unavailable: {e}")


@pytest.fixture(scope="module")
def hf(gguf_path):
    from lclm_core.default_model import load_default_decoder
    from lclm_core.device import Placement

    return load_default_decoder(Placement(torch.device("cpu"), torch.float32))


@pytest.fixture(scope="module")
def llm(gguf_path, hf):
    with LlamaCppDecoder(gguf_path, hf[1], n_ctx=2048, prefix_cache=PrefixStateCache(256 << 20)) as dec:
        yield dec


@pytest.fixture(scope="module")
def passage_ids(hf) -> list[int]:
    return list(hf[1](PASSAGE, add_special_tokens=False)["input_ids"])


def _as_tokens(inputs: DecoderInputs, ids: list[int]) -> DecoderInputs:
    """The same spans with the (single) embedding span replaced by the tokens it stands for."""
    return DecoderInputs([TokenSpan(tuple(ids)) if isinstance(s, EmbedSpan) else s for s in inputs.spans])


@pytest.mark.integration
def test_hf_tokenizer_ids_are_llama_ids(llm) -> None:
    for s in [PASSAGE, "naïve café — 東京 🙂", "def f(x):\n    return x ** 2\n", "<start_of_image> <bos> text", " 3.14159, 2024-01-01"]:
        hf_ids = llm.tokenizer(s, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        assert hf_ids == llm.ctx.tokenize(s, add_special=False, parse_special=False), s
    assert llm.ctx.special_ids()["bos"] == llm.tokenizer.bos_token_id


@pytest.mark.integration
def test_token_embeddings_are_scaled_rows_equal_to_torch(llm, hf, passage_ids) -> None:
    from lclm_core.torch_backend import TorchDecoder

    assert llm.arch == "gemma3"
    ids = [2] + passage_ids[:20]
    ours = llm.token_embeddings(ids)
    theirs = TorchDecoder(hf[0], hf[1]).token_embeddings(ids)
    assert ours.dtype == torch.float32 and ours.shape == (len(ids), 640)
    assert torch.equal(ours, theirs.float())  # same Q8_0 rows, same sqrt(640) scale
    assert llm.check_embedding_path(ids[:4]) == 0.0


@pytest.mark.integration
@pytest.mark.parametrize("n", [12, 1100])
def test_embedding_path_equals_token_path(llm, passage_ids, n) -> None:
    ids = ([2] + passage_ids * (1 + n // len(passage_ids)))[:n]
    llm.reset()
    by_tokens = llm.prefill(DecoderInputs([TokenSpan(tuple(ids))]))
    llm.reset()
    by_rows = llm.prefill(DecoderInputs([EmbedSpan(llm.token_embeddings(ids), 0)]))
    assert llm.n_past == n
    assert torch.equal(by_tokens, by_rows)  # bit for bit (both cut into the same n_batch chunks)


@pytest.mark.integration
def test_latents_then_tokens_then_sampling_equals_token_run(llm, passage_ids) -> None:
    parts = [Text("Passage:"), Latents(llm.token_embeddings(passage_ids)), Text(QUESTION)]
    mixed = llm.build(parts, add_bos=True)
    assert [type(s) for s in mixed.spans] == [TokenSpan, EmbedSpan, TokenSpan]
    cfg = GenerationConfig(max_new_tokens=20, temperature=0.8, top_k=40, seed=1234)

    def run(inputs: DecoderInputs) -> tuple[torch.Tensor, list[int], str]:
        llm.reset()
        logits = llm.prefill(inputs)
        res = GenerationResult()
        text = "".join(llm.generate(cfg, logits=logits, result=res))
        return logits, res.token_ids, text

    lm, ids_m, text_m = run(mixed)
    lt, ids_t, text_t = run(_as_tokens(mixed, passage_ids))
    assert torch.equal(lm, lt)
    assert ids_m == ids_t and text_m == text_t and len(ids_m) > 0
    # One batch for the whole prompt: other kernels for the short spans, so close, not equal.
    lo, _, _ = run(DecoderInputs([TokenSpan(tuple(_as_tokens(mixed, passage_ids).token_ids()))]))
    assert int(lo.argmax()) == int(lm.argmax()) and tv(lo, lm) < 0.1


@pytest.mark.integration
def test_state_save_restore_continue_is_exact(llm, passage_ids) -> None:
    q = tuple(llm.tokenizer(QUESTION, add_special_tokens=False)["input_ids"])
    llm.reset()
    llm.prefill(DecoderInputs([TokenSpan((2,)), EmbedSpan(llm.token_embeddings(passage_ids), 0)]))
    state, n_past = llm.ctx.state_get(), llm.n_past

    def go_on() -> tuple[torch.Tensor, list[int]]:
        logits = llm.prefill(DecoderInputs([TokenSpan(q)]))
        res = GenerationResult()
        list(llm.generate(GenerationConfig(max_new_tokens=8), logits=logits, result=res))
        return logits, res.token_ids

    first = go_on()
    llm.ctx.state_set(state)
    llm.n_past = n_past
    with pytest.raises(LlamaError, match="no logits"):
        llm.ctx.logits()  # the state holds no logits
    second = go_on()
    assert torch.equal(first[0], second[0]) and first[1] == second[1]


@pytest.mark.integration
def test_prefix_cache_restores_instead_of_prefilling(llm, passage_ids, tmp_path) -> None:
    docs = [Text("Documents:"), Latents(llm.token_embeddings(passage_ids))]
    more = [Text(" And more:"), Latents(llm.token_embeddings(passage_ids[::-1]))]
    question = [Text(QUESTION)]
    old = llm.prefix_cache
    llm.prefix_cache = cache = PrefixStateCache(64 << 20, directory=tmp_path)
    try:
        def answer(*blocks) -> tuple[torch.Tensor, str]:
            llm.reset()
            llm.prefill_cached(*blocks)
            logits = llm.prefill(question)
            return logits, "".join(llm.generate(GenerationConfig(max_new_tokens=8), logits=logits))

        cold = answer(docs)
        assert (cache.hits, len(cache)) == (0, 1)
        warm = answer(docs)
        assert cache.hits == 1 and torch.equal(cold[0], warm[0]) and cold[1] == warm[1]
        # across processes: a fresh cache over the same directory
        llm.prefix_cache = PrefixStateCache(64 << 20, directory=tmp_path)
        fresh = answer(docs)
        assert llm.prefix_cache.hits == 1 and torch.equal(fresh[0], cold[0]) and fresh[1] == cold[1]
        # longest cached run: docs restored, `more` prefilled on top, same as no cache at all
        two = answer(docs, more)
        llm.prefix_cache = None
        plain = answer(docs, more)
        assert torch.equal(two[0], plain[0]) and two[1] == plain[1]
        # different content, different key
        other = [Text("Documents:"), Latents(llm.token_embeddings(passage_ids) * 1.001)]
        llm.prefix_cache = cache
        hits = cache.hits
        answer(other)
        assert cache.hits == hits
    finally:
        llm.prefix_cache = old


@pytest.mark.integration
@pytest.mark.parametrize("source", ["token_rows", "compressor"])
def test_torch_and_llama_agree_on_top5(llm, hf, passage_ids, source) -> None:
    from lclm_core.default_model import default_compressor
    from lclm_core.device import Placement
    from lclm_core.torch_backend import TorchDecoder

    if source == "token_rows":
        latents = llm.token_embeddings(passage_ids)
    else:
        comp = default_compressor(8, Placement(torch.device("cpu"), torch.float32), decoder=hf)
        latents = comp.forward_ids([passage_ids])[0]
    parts = [Text("Passage:"), Latents(latents), Text(QUESTION)]
    tdec = TorchDecoder(hf[0], hf[1])
    inputs = llm.build(parts, add_bos=True)
    tdec.reset()
    t = tdec.prefill(inputs)
    llm.reset()
    g = llm.prefill(inputs)
    assert int(t.argmax()) == int(g.argmax())
    # Same top 5, except that a near-tie may swap: each backend's top 5 must be
    # within TOP5_MARGIN of the other's 5th logit. (With the random default
    # adapter, torch's 5th and 6th were 0.08 apart and llama.cpp swapped them.)
    for a, b in ((t, g), (g, t)):
        fifth = torch.topk(b, 5).values[-1]
        top_a = torch.topk(a, 5).indices
        assert bool((b[top_a] >= fifth - TOP5_MARGIN).all()), (torch.topk(t, 6), torch.topk(g, 6))
    assert tv(t, g) < 0.1  # Q4_K weights dequantized on both sides; llama.cpp quantizes activations to 8 bits


@pytest.mark.integration
def test_prompt_past_the_context_is_a_clear_error(gguf_path, hf) -> None:
    with LlamaCppDecoder(gguf_path, hf[1], n_ctx=256, prefix_cache=PrefixStateCache(1 << 20)) as small:
        assert small.n_ctx == 256
        too_long = [Text("word " * 300)]
        with pytest.raises(ContextLengthError, match="context holds 256"):
            small.prefill(too_long)
        with pytest.raises(ContextLengthError):
            small.prefill_cached(too_long)
        assert small.n_past == 0
        # still usable, and generation stops at the end of the context instead of failing
        logits = small.prefill([Text("word " * 240)])
        res = GenerationResult()
        list(small.generate(GenerationConfig(max_new_tokens=50), logits=logits, result=res))
        assert res.finish_reason in ("context", "eos") and small.n_past <= 256
        with pytest.raises(LlamaError, match="do not fit"):
            small.ctx.decode_tokens([5], 256)


@pytest.mark.integration
def test_decode_failure_raises_and_close_is_idempotent(gguf_path) -> None:
    ctx = LlamaContext(gguf_path, ContextConfig(n_ctx=256))
    ctx.decode_tokens([2, 5], 0)
    with pytest.raises(LlamaDecodeError) as info:
        ctx.decode_tokens([2, 5], 0)  # positions already taken: llama.cpp rejects the batch
    assert info.value.rc == -1
    with pytest.raises(ValueError):
        ctx.decode_tokens([ctx.n_vocab], 2)  # caught before it reaches C
    with pytest.raises(ValueError):
        ctx.decode_embeddings(np.full((1, ctx.n_embd), np.nan, np.float32), 2)
    ctx.close()
    ctx.close()
    with pytest.raises(LlamaError, match="closed"):
        ctx.decode_tokens([2], 0)
    with LlamaContext(gguf_path, ContextConfig(n_ctx=256)) as c2:
        pass
    assert c2.closed
