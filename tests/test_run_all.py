"""bench/run_all.py and bench/suite.py: every method on one prompt (tiny random models), and the smoke run CI keeps alive."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

import data
import tiny
from lclm_core.inputs import Text, TokenIds
from lclm_core.torch_backend import TorchDecoder

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import run_all  # noqa: E402
from bench.eval_qa import DataError, Evaluator, ensure_essays, load_items, segments_of  # noqa: E402
from bench.suite import (  # noqa: E402
    Item,
    PeakRSS,
    Runner,
    answer_with,
    method_names,
    parse_method,
    score_continuation,
)

TEXT = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
        "R is a language and environment for statistical computing and graphics. ") * 4


@pytest.fixture(scope="module")
def runner():
    """A tiny Qwen-like decoder (n_ctx 4096) and a tiny compressor at N = 4, one thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dec = TorchDecoder(tiny.decoder("qwen"), tiny.tokenizer("qwen"))
    ev = Evaluator(dec, data.tiny_compressor(ratio=4, window=32), prefill_chunk=64)
    yield Runner({4: ev}, method_names([4]), window=8)
    torch.set_num_threads(threads)


def item_of(runner, text: str = TEXT, seg: int = 48, top_k: int = 1) -> Item:
    ids = runner.ev.tokenize(text)
    q = "\nQuestion: which city is the capital of France?\nAnswer:"
    return Item(segments_of(ids, seg), [Text("Text:\n")], [Text(q)], [Text(q.lstrip())], "capital of France", top_k)


def by_method(outcomes):
    return {o.method: o for o in outcomes}


def test_method_names_cover_every_family_at_every_ratio():
    names = method_names([4, 16])
    assert names[:2] == ["none", "raw"] and "rag" in names
    for fam in ("truncation", "snapkv", "latents", "latents+exp"):
        assert [parse_method(n) for n in names if parse_method(n)[0] == fam] == [(fam, 4), (fam, 16)]
    for bad in ("latents", "raw-4", "kvzip-8", "latents-x"):
        with pytest.raises(ValueError):
            parse_method(bad)


def test_a_method_without_its_compressor_is_refused(runner):
    with pytest.raises(ValueError, match="ratio"):
        Runner(runner.evaluators, ["latents-8"])


def test_every_method_reads_the_context_in_its_own_form(runner):
    item = item_of(runner)
    total = sum(len(s) for s in item.segments)
    out = by_method(runner.run(item, answer_with(4)))
    assert list(out) == runner.methods
    assert out["raw"].raw_tokens == out["snapkv-4"].raw_tokens == total
    assert out["truncation-4"].raw_tokens == total // 4
    top = sorted(runner.ev.expansion(item.query, item.segments, 1))
    assert out["rag"].raw_tokens == out["latents+exp-4"].raw_tokens == sum(len(item.segments[i]) for i in top)
    assert out["latents-4"].raw_tokens == out["none"].raw_tokens == 0
    # SnapKV keeps exactly as many positions as the latents prompt has: the matching ratio
    assert out["snapkv-4"].positions == out["latents-4"].positions < out["raw"].positions
    assert out["snapkv-4"].kv_bytes < out["raw"].kv_bytes
    assert out["none"].positions < out["latents-4"].positions < out["latents+exp-4"].positions < out["raw"].positions
    for o in out.values():
        assert o.error is None and isinstance(o.result["answer"], str) and o.ttft_s > 0 and o.kv_bytes > 0
    # compression is timed apart: only the LCLM methods pay it
    assert out["latents-4"].encode_s > 0 and out["latents-4"].ttft_cold_s == out["latents-4"].ttft_s + out["latents-4"].encode_s
    assert out["raw"].encode_s == out["rag"].encode_s == 0 and out["raw"].ttft_cold_s == out["raw"].ttft_s


def test_the_shared_prefill_answers_raw_as_a_plain_prefill_does(runner):
    item = item_of(runner)
    out = by_method(runner.run(item, answer_with(6)))
    ev = runner.ev
    plain = ev.answer([*item.before, *ev.context_parts(item.segments, None), *item.after], max_new_tokens=6)
    assert out["raw"].result["answer"] == plain
    lat = ev.compress(item.segments)
    assert out["latents-4"].result["answer"] == ev.answer([*item.before, *ev.context_parts(item.segments, lat),
                                                           *item.after], max_new_tokens=6)


def test_latent_methods_run_on_their_ratios_decoder_and_the_baselines_on_the_base(runner):
    """Parts with a decoder LoRA are read by an adapted copy in the app; the bench reads them the same way,
    while raw text, RAG and the other baselines stay on the base decoder (what a system without LCLM runs)."""
    base = runner.ev
    adapted = TorchDecoder(tiny.decoder("qwen"), tiny.tokenizer("qwen"))
    ev4 = Evaluator(adapted, base.compressor, prefill_chunk=64)
    r = Runner({4: ev4}, method_names([4]), window=8, base=base)

    def finish(dec, logits, snapkv):
        return {"answer": "", "decoder": "adapted" if dec is adapted else "base" if dec is base.decoder else "?"}

    out = by_method(r.run(item_of(r), finish))
    assert {m: o.result["decoder"] for m, o in out.items()} == {
        m: "adapted" if m in ("latents-4", "latents+exp-4") else "base" for m in r.methods}


def test_a_context_too_long_for_the_decoder_leaves_raw_and_snapkv_na(runner, monkeypatch):
    item = item_of(runner, TEXT * 2)
    total = sum(len(s) for s in item.segments)
    monkeypatch.setattr(runner.dec, "_n_ctx", total // 2)  # the raw text no longer fits; latents (total / 4) do
    out = by_method(runner.run(item, answer_with(2)))
    for m in ("raw", "snapkv-4"):
        assert out[m].error and out[m].ttft_s is None and out[m].result == {}
    assert out["latents-4"].error is None and out["truncation-4"].error is None


def test_continuation_scored_token_by_token_matches_one_pass(runner):
    dec, ev = runner.dec, runner.ev
    ids = ev.tokenize(TEXT)
    ctx, cont = ids[:60], ids[60:80]
    prompt = dec.build([TokenIds(tuple(ctx))], add_bos=True)
    results = []
    for single in (False, True):
        dec.reset()
        logits = dec.prefill(prompt)
        results.append(score_continuation(cont)(dec, logits, single))
    assert results[0]["tokens"] == results[1]["tokens"] == len(cont)
    assert results[0]["nll_sum"] == pytest.approx(results[1]["nll_sum"], rel=1e-4)


def test_perplexity_task_gives_a_finite_figure_per_method(runner):
    essays = [TEXT * 3]
    recs = run_all.task_perplexity(runner, essays, samples=2, context=64, continuation=12, seed=0, segment_tokens=32)
    methods = {r["method"] for r in recs}
    assert {"none", "raw", "latents-4", "snapkv-4", "truncation-4"} <= methods
    for m in methods:
        ppl = run_all.perplexity_table([r for r in recs if r["method"] == m], [m])
        assert f"| {m} | " in ppl and "n/a" not in ppl.splitlines()[-1].split("|")[2]
    assert all(math.isfinite(r["nll_sum"]) and r["tokens"] == 11 for r in recs)


def test_peak_rss_sees_an_allocation_inside_the_block():
    with PeakRSS() as pk:
        x = torch.ones(64 * 2**20 // 4 * 4)  # 256 MB, touched
        del x
    if pk.mb is None:
        pytest.skip("no /proc/self/clear_refs here (not Linux)")
    assert pk.mb > 200


def test_tables_summarise_the_records(runner):
    recs = run_all.task_needle(runner, [TEXT * 3], [160], [0.0, 1.0], trials=1, seed=0, segment_tokens=40, top_k=1)
    assert {r["length"] for r in recs} == {160} and len(recs) == 2 * len(runner.methods)
    md = run_all.needle_tables(recs, runner.methods)
    for m in runner.methods:
        s = run_all.method_summary(recs, m)
        want = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1f}"
        assert f"| {m} | {want} | {want} |" in md  # one length: the length column and "all" agree


# --- the smoke run (CI) -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_data():
    try:
        ensure_essays()
        load_items()
    except DataError as e:
        data.require(f"evaluation data cannot be fetched here: {e}")


def test_smoke_run_on_a_tiny_published_checkpoint_writes_the_report_and_plots(tiny_checkpoint, eval_data, tmp_path,
                                                                                capsys):
    """What CI runs: every task and method on a tiny Qwen3 LCLM in the published layout (the --checkpoint path)."""
    out = tmp_path / "results"
    assert run_all.main(["--smoke", "--threads", "1", "--checkpoint", str(tiny_checkpoint), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    assert capsys.readouterr().out.strip() == md.strip()
    assert f"--checkpoint {tiny_checkpoint}" in md and "N = 4" in md
    for section in ("## Needle in a haystack", "## FAQ questions, single answer", "## FAQ questions, multi-document",
                    "## Continuation perplexity", "## Encoder throughput and store size"):
        assert section in md
    for png in ("accuracy-vs-ttft.png", "accuracy-vs-memory.png", "accuracy-vs-length.png"):
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 10_000 and f"]({png})" in md
    report = json.loads((out / "results.json").read_text())
    assert report["methods"] == method_names([4])
    tasks = {r["task"] for r in report["records"]}
    assert tasks == {"needle", "faq_single", "faq_multi", "perplexity", "store"}
    for task in ("needle", "faq_single", "faq_multi"):
        assert {r["method"] for r in report["records"] if r["task"] == task} == set(report["methods"])
    multi = [r for r in report["records"] if r["task"] == "faq_multi" and r["method"] == "raw"]
    assert all(r["docs"] == 3 for r in multi)
    store = [r for r in report["records"] if r["task"] == "store"]
    assert [r["ratio"] for r in store] == [4] and store[0]["indexed"] == store[0]["documents"] == 2


def test_kvpress_agreement_counts_kept_positions_outside_the_window():
    from bench.kvpress_check import compare

    theirs = {"5": [[0, 3, 7, 8, 9], [1, 2, 8, 9]]}  # total 10, window 2: positions 8 and 9 are the window
    ours = {"5": [[0, 3, 6], [1, 4]]}
    assert compare(ours, theirs, total=10, window=2) == pytest.approx(3 / 5)  # head 0: 0, 3 of 0, 3, 7; head 1: 1 of 1, 2
    assert compare(theirs, theirs, total=10, window=2) == 1.0
