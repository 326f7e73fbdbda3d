"""Listing pages and non-answers: the rules, then the assistant acting on them (tiny random decoder)."""

import pytest

import tiny
from app.assistant import Assistant, AssistantConfig
from app.quality import fallback_text, is_listing, junk_reason, listing_share
from lclm_core.torch_backend import TorchDecoder
from test_assistant import FP, fill

# As pypdf extracts them from Debian's R manuals and octave.pdf (dot leaders, index entries).
CONTENTS = """Table of Contents
1 Introduction and preliminaries . . . . . . . . . . . . . . . . . . . . . . 2
1.1 The R environment . . . . . . . . . . . . . . . . . . . . . . . . . . . 2
1.2 Related software and documentation . . . . . . . . . . . . . . . . . . 2
1.3 R and statistics . . . . . . . . . . . . . . . . . . . . . . . . . . . . 2
11.1 Defining statistical models; formulae ......................... 51
"""
INDEX = """eye . . . . . . . . . . . . . . . . 669
eig . . . . . . . . . . . . . . . . 671
identity matrix, 669
inverse, 672, 680
isdiag 668
"""
PROSE = """The lm() function fits linear models. It takes a formula, such as y ~ x,
and a data frame, and returns an object of class "lm" whose summary
gives the coefficients, their standard errors and the R-squared.
See section 11.1 on page 51 for the formula syntax.
"""


def test_contents_and_index_pages_are_listings_and_prose_is_not():
    assert is_listing(CONTENTS) and is_listing(INDEX)
    assert not is_listing(PROSE) and listing_share(PROSE) < 0.3
    assert not is_listing("eye . . . . . 669")  # one line is no page of listings
    assert listing_share("") == 0.0


@pytest.mark.parametrize("reply, reason", [
    ("", "empty"),
    ("  ...  ", "empty"),
    ("Answer:", "only the prompt's own words"),
    ("Answer: Answer: Answer: Answer:", "only the prompt's own words"),
    ("Question: Which function fits a linear model?", "a copied prompt header"),
    ("Document: R-exts.pdf", "a copied prompt header"),
    ('[2] octave.pdf, page 677: "Chapter 22: Sparse Matrices 661', "a copied prompt header"),  # seen on octave.pdf
    ("R-exts.py", "only a document's name"),
    ("the model\nthe model\nthe model", "the same line over and over"),
    ("lm lm lm lm lm lm lm lm", "one phrase over and over"),
    ("use lm use lm use lm use lm", "one phrase over and over"),
])
def test_replies_that_are_not_answers_say_why(reply, reason):
    assert junk_reason(reply, ["/home/u/docs/R-exts.pdf", "/home/u/docs/R-intro.pdf"]) == reason


@pytest.mark.parametrize("reply", [
    "lm()", "The lm() function, with a formula such as y ~ x.", "Yes.", "1854", "R-intro.pdf, page 51 says lm().",
    "eye(n) creates an n by n identity matrix.", "1, 2, 3", "[1, 2; 3, 4] is a matrix: a literal",
])
def test_answers_pass(reply):
    assert junk_reason(reply, ["/docs/R-exts.pdf", "/docs/R-intro.pdf"]) == ""


def test_the_fallback_quotes_the_best_passage_with_its_place():
    text = fallback_text("R-intro.pdf, page 51", "The lm() function fits\nlinear models. " * 40)
    assert text.startswith("No answer could be formed from the passages. The passage that matches your question "
                           "best, from R-intro.pdf, page 51:\n\n> The lm() function fits linear models.")
    assert text.endswith(" …") and len(text) < 800
    assert fallback_text(None, None) == "No answer could be formed from the passages."


# --- the assistant ------------------------------------------------------------------------------
@pytest.fixture
def assistant(store):
    model, tok = tiny.decoder("gemma"), tiny.tokenizer("gemma")
    fill(store, model.config.hidden_size, docs={
        "/docs/manual.pdf": [CONTENTS + "regression lm function formula", PROSE + " regression"],
        "/docs/tea.txt": ["Green tea is brewed at eighty degrees."],
    })
    a = Assistant(store, TorchDecoder(model, tok, n_ctx=4096), FP, AssistantConfig(max_new_tokens=8, expand_k=1))
    yield a
    a.close()


def _replying(assistant, monkeypatch, pieces):
    def generate(cfg, logits=None, result=None):
        yield from pieces

    monkeypatch.setattr(assistant.backend, "generate", generate)


def test_a_non_answer_is_never_streamed_and_the_best_passage_is_shown_instead(assistant, monkeypatch):
    _replying(assistant, monkeypatch, [" Answer", ":", " Answer", ":", " Answer:"])
    *pieces, ans = assistant.stream("Which function fits a regression formula?")
    assert ans.junk == "only the prompt's own words" and "Answer:" not in "".join(pieces)
    assert pieces == [ans.text] and ans.text.startswith("No answer could be formed from the passages.")
    assert "manual.pdf, page 2" in ans.text and "fits linear models" in ans.text
    assert ans.notes()["no_answer"] == ans.junk  # the reopened chat knows why


def test_a_real_answer_streams_as_before(assistant, monkeypatch):
    _replying(assistant, monkeypatch, [" The", " lm", "()", " function", " fits", " it", "."])
    *pieces, ans = assistant.stream("Which function fits a regression formula?")
    assert "".join(pieces).strip() == ans.text == "The lm() function fits it." and not ans.junk
    assert len(pieces) > 1  # streamed once it was clearly an answer, not all at the end


def test_a_contents_page_that_matches_every_word_is_read_after_content(assistant):
    ans = assistant.ask("Which function fits a regression formula?")
    assert ans.citations[0].page == 2  # the prose page, though the contents page matches the question's words too
    rag = assistant.ask("Which function fits a regression formula?", mode="rag", rag_k=1)
    assert rag.citations[0].page == 2
