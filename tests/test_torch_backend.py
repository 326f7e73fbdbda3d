"""The torch decoder backend: latent blocks as input embeddings, prefill, streaming generation."""

import pytest
import torch

import tiny
from lclm_core.backend import ContextLengthError, GenerationConfig, GenerationResult, _StopMatcher
from lclm_core.inputs import DecoderInputs, EmbedSpan, Latents, Text, TokenSpan
from lclm_core.torch_backend import TorchDecoder

PROMPT = "The quick brown fox jumps over the lazy dog. Paris is the capital of"


def backend(family="qwen", **kw) -> TorchDecoder:
    return TorchDecoder(tiny.decoder(family), tiny.tokenizer(family), **kw)


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_own_token_embeddings_as_a_latent_block_give_the_token_logits(family):
    dec = backend(family)
    ids = dec.build([Text(PROMPT)]).token_ids()
    by_ids = dec.prefill(DecoderInputs([TokenSpan(tuple(ids))]))
    dec.reset()
    rows = dec.token_embeddings(ids[1:])  # scaled as the model scales them (Gemma: * sqrt(hidden))
    by_embeds = dec.prefill(DecoderInputs([TokenSpan((ids[0],)), EmbedSpan(rows, dec.builder.placeholder_id)]))
    torch.testing.assert_close(by_embeds, by_ids, rtol=0, atol=1e-5)


def test_gemma_embeddings_are_scaled_and_qwen_are_not():
    g, q = backend("gemma"), backend("qwen")
    raw = g.model.model.embed_tokens.weight[5]
    torch.testing.assert_close(g.token_embeddings([5])[0], raw * g.model.config.hidden_size**0.5)
    torch.testing.assert_close(q.token_embeddings([5])[0], q.model.model.embed_tokens.weight[5])


def test_prefill_in_pieces_equals_one_prefill():
    dec = backend()
    lat = torch.randn(5, dec.hidden_size)
    whole = dec.prefill([Text("Context:"), Latents(lat), Text(" question?")])
    dec.reset()
    dec.prefill([Text("Context:"), Latents(lat)])
    pieces = dec.prefill(dec.build([Text(" question?")]))
    torch.testing.assert_close(pieces, whole, rtol=1e-4, atol=1e-5)
    assert dec.n_past == len(dec.build([Text("Context:"), Latents(lat), Text(" question?")], add_bos=True))


def test_greedy_generation_matches_transformers_generate():
    dec = backend()
    ids = dec.build([Text(PROMPT)]).token_ids()
    expect = dec.model.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, eos_token_id=None)[0, len(ids):]
    dec.reset()
    res = GenerationResult()
    logits = dec.prefill(dec.build([Text(PROMPT)]))
    dec.eos_ids = set()  # random tiny model: let it run to max_new_tokens
    pieces = list(dec.generate(GenerationConfig(max_new_tokens=12), logits=logits, result=res))
    assert res.token_ids == expect.tolist()
    assert res.finish_reason == "length"
    assert "".join(pieces) == dec.tokenizer.decode(res.token_ids, skip_special_tokens=True)
    assert len(pieces) > 1  # streamed, not one block at the end


def test_sampling_is_reproducible_with_a_seed():
    dec = backend()
    dec.eos_ids = set()

    def run(seed):
        return dec.complete([Text(PROMPT)], GenerationConfig(max_new_tokens=20, temperature=1.5, top_k=50, top_p=0.95, seed=seed))

    assert run(1) == run(1)
    assert len({run(s) for s in range(4)}) > 1


def test_stop_string_ends_generation_and_is_not_emitted():
    dec = backend()
    dec.eos_ids = set()
    full = dec.complete([Text(PROMPT)], GenerationConfig(max_new_tokens=30))
    stop = full[5:8]
    res = GenerationResult()
    dec.reset()
    logits = dec.prefill([Text(PROMPT)])
    out = "".join(dec.generate(GenerationConfig(max_new_tokens=30, stop=[stop]), logits=logits, result=res))
    assert out == full[: full.index(stop)]
    assert res.finish_reason == "stop"


def test_eos_ends_generation():
    dec = backend()
    res = GenerationResult()
    logits = dec.prefill([Text(PROMPT)])
    logits[:] = -1e9
    logits[dec.tokenizer.eos_token_id] = 0
    assert list(dec.generate(GenerationConfig(max_new_tokens=5), logits=logits, result=res)) == []
    assert res.finish_reason == "eos"


def test_prompt_past_the_context_is_a_clear_error():
    dec = backend(n_ctx=32)
    with pytest.raises(ContextLengthError, match="holds 32"):
        dec.prefill([Text("x"), Latents(torch.zeros(40, dec.hidden_size))])
    assert dec.n_past == 0  # nothing was run


def test_generation_stops_at_the_context_end():
    dec = backend(n_ctx=24)
    dec.eos_ids = set()
    res = GenerationResult()
    logits = dec.prefill([Latents(torch.zeros(20, dec.hidden_size))])
    list(dec.generate(GenerationConfig(max_new_tokens=50), logits=logits, result=res))
    assert res.finish_reason == "context" and dec.n_past == 24


@pytest.mark.parametrize(
    "chunks, stops, out",
    [
        (["Hel", "Hello wo", "Hello world"], ["\n"], "Hello world"),
        (["ans", "answer\nQ", "answer\nQuestion"], ["\nQuestion"], "answer"),
        (["a<", "a<e", "a<x"], ["<end>"], "a<x"),  # held back, then released
        (["STOP"], ["STOP"], ""),
    ],
)
def test_stop_matcher_never_emits_a_stop_prefix(chunks, stops, out):
    m = _StopMatcher(stops)
    got = "".join(m.feed(c) for c in chunks)
    got += m.flush()
    assert got == out


def test_incremental_detokenizer_streams_exact_text_and_never_revises():
    from lclm_core.backend import _Detokenizer

    tok = tiny.tokenizer("qwen")
    text = "naïve café → 日本語 and the lazy dog  twice"
    all_ids = tok(text, add_special_tokens=False)["input_ids"]
    ids: list[int] = []
    d = _Detokenizer(tok, ids)
    seen = []
    for i in all_ids:
        ids.append(i)
        if d.step():
            assert "\ufffd" not in d.text  # a split character is held back, not shown broken
            assert not seen or d.text.startswith(seen[-1])  # streamed text only grows
            seen.append(d.text)
    assert d.finish() == tok.decode(all_ids) == text


def test_chunked_prefill_of_many_spans_equals_one_pass():
    dec = backend()
    parts = []
    for k in range(6):
        parts += [Text(f"Doc {k}:"), Latents(torch.randn(7, dec.hidden_size))]
    parts.append(Text(" Question?"))
    whole = dec.prefill(parts)
    n = dec.n_past
    dec.reset()
    dec.max_chunk = 5  # many small chunks, cutting through spans
    chunked = dec.prefill(parts)
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5)
    assert dec.n_past == n


def _docs_and_question(dec: TorchDecoder):
    docs = dec.build([Text("alpha beta gamma"), Latents(torch.randn(6, dec.hidden_size))], add_bos=True)
    return docs, dec.build([Text(" a question?")], add_bos=False)


def test_a_model_without_sliding_layers_reuses_its_prefix_in_place_without_a_copy():
    dec = backend("qwen")
    docs, q = _docs_and_question(dec)
    dec.prefill_cached(docs)
    live = dec.cache
    dec.prefill(q)
    dec.eos_ids = set()
    list(dec.generate(GenerationConfig(max_new_tokens=4), logits=dec.prefill(dec.build([Text(" more")], add_bos=False))))
    other = dec.build([Text(" another question?")], add_bos=False)
    again = dec.prefill_cached(docs, other)
    assert dec.last_prefix_hit == len(docs)
    assert dec.cache is live and not dec._prefixes  # cut back in place: no copy was ever kept
    assert dec.n_past == len(docs) + len(other)
    torch.testing.assert_close(again, dec.logits_for(docs + other)[-1], rtol=1e-4, atol=1e-4)
    # the cache holds exactly the prompt's positions, in every layer
    cfg = dec.model.config
    per_position = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * dec.dtype.itemsize
    assert dec.kv_bytes() == per_position * dec.n_past


def test_a_model_with_sliding_layers_keeps_copies_of_its_prefixes():
    dec = backend("gemma")
    docs, q = _docs_and_question(dec)
    first = dec.prefill_cached(docs)
    dec.prefill(q)
    assert len(dec._prefixes) == 1 and not dec._live
    again = dec.prefill_cached(docs)
    assert dec.last_prefix_hit == len(docs) and dec.n_past == len(docs)
    torch.testing.assert_close(again, first)


def test_a_different_first_block_starts_over():
    dec = backend("qwen")
    docs, q = _docs_and_question(dec)
    dec.prefill_cached(docs, q)
    other = dec.build([Text("other documents entirely")], add_bos=True)
    got = dec.prefill_cached(other, q)
    assert dec.last_prefix_hit == 0 and dec.n_past == len(other) + len(q)
    torch.testing.assert_close(got, dec.logits_for(other + q)[-1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_attention_mass_leaves_the_sequence_as_it_was(family):
    dec = backend(family)
    docs, q = _docs_and_question(dec)
    dec.prefill_cached(docs)
    before = dec.kv_bytes()
    mass = dec.attention_mass(q)
    assert mass.shape == (len(docs),) and mass.sum() > 0
    assert dec.n_past == len(docs) and dec.kv_bytes() == before
    torch.testing.assert_close(dec.prefill(q), dec.logits_for(docs + q)[-1], rtol=1e-4, atol=1e-4)
    assert dec.prefill_cached(docs) is not None and dec.last_prefix_hit == len(docs)


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_the_output_head_reads_the_last_row_stored_compactly(family):
    """A row sliced out of a prefill keeps the prompt's stride; on a CPU in bfloat16 torch's linear then copies
    the whole (transposed) head first, ~0.8 s for Gemma's 262k words. The head must see a compact row."""
    dec = backend(family)
    docs, q = _docs_and_question(dec)
    seen = []
    hook = dec.model.get_output_embeddings().register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    try:
        logits = dec.prefill(docs)
        dec.attention_mass(q)
    finally:
        hook.remove()
    assert len(docs) > 1 and len(seen) == 2
    for x in seen:
        assert x.shape[:2] == (1, 1)
        assert x.stride() == (x.shape[-1], x.shape[-1], 1)  # not (len(docs) * hidden, hidden, 1)
    torch.testing.assert_close(logits, dec.logits_for(docs)[-1], rtol=1e-4, atol=1e-4)
