"""End to end on the real default: index a folder with R-intro.pdf and notes, ask, check the answer and its page."""

import json
import shutil

import pytest

from app.assistant import AssistantConfig, Scope
from app.cli import main
from app.services import open_assistant, open_store
from app.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

NOTES = "The Zorblax cluster runs on port 7431 and is administered by Mira Quell.\n"
TEA = "Green tea should be brewed at 80 degrees Celsius for two minutes; black tea needs boiling water.\n"


@pytest.fixture(scope="module")
def indexed(r_intro_pdf, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    docs = root / "docs"
    docs.mkdir()
    shutil.copy(r_intro_pdf, docs / "R-intro.pdf")
    (docs / "ops-notes.txt").write_text(NOTES)
    (docs / "tea.txt").write_text(TEA)
    data = root / "data"
    assert main(["--data-dir", str(data), "--device", "cpu", "index", str(docs)]) == 0
    return Settings(data_dir=data, device="cpu"), docs.resolve()


def test_answers_from_the_pdf_and_cites_the_page(indexed):
    settings, docs = indexed
    with open_store(settings) as store, open_assistant(settings, store, backend="torch",
                                                       config=AssistantConfig(max_new_tokens=48)) as assistant:
        ans = assistant.ask("What is the basic function for fitting ordinary multiple models?")
        assert ans.found and not ans.left_out
        assert "lm" in ans.text
        # R-intro.pdf, section 11.2 "Linear models", is on page 64 of the file
        assert any(c.path.endswith("R-intro.pdf") and c.page == 64 and "lm(" in c.text for c in ans.citations)

        again = assistant.ask("What command quits the R program?")
        assert again.prefix_reused  # the documents were not prefilled a second time
        assert "q()" in again.text
        assert any(c.page == 9 for c in again.citations)
        assert again.timings["prefill_docs_s"] < ans.timings["prefill_docs_s"] / 5


def test_cli_ask_prints_the_answer_and_citations_as_json(indexed, capsys):
    settings, docs = indexed
    capsys.readouterr()
    argv = ["--data-dir", str(settings.data_dir), "--device", "cpu", "ask", "--json", "--backend", "llama.cpp",
            "--scope", str(docs / "ops-notes.txt"), str(docs / "tea.txt"), "--", "What port does the Zorblax cluster run on?"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert "7431" in out["text"]
    assert out["citations"][0]["path"] == str(docs / "ops-notes.txt")
    assert {c["path"] for c in out["citations"]} <= {str(docs / "ops-notes.txt"), str(docs / "tea.txt")}


def test_a_question_about_nothing_in_the_documents_is_not_found(indexed):
    settings, docs = indexed
    with open_store(settings) as store, open_assistant(settings, store, backend="llama.cpp") as assistant:
        ans = assistant.ask("xylophone quasar marmalade", Scope(folders=(str(docs),)), mode="rag")
    assert not ans.found and ans.citations == []
