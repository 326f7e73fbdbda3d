"""End to end on the real default model: `lclm-docs ask` answers from a slide deck, a spreadsheet, an
OpenDocument sheet and slide, a Word document, an e-mail and an Outlook message, none written here, and
cites each at its slide, sheet rows or section. The same manual as .odt and .epub, and a mailbox, are
cited at their section, chapter and message by tests/test_formats.py (tiny model): encoding them again
here would add minutes to the default test run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.cli import main
from samples import folder_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# file -> (question, what the answer says, where the cited passage is: a location prefix, or None)
QUESTIONS = {
    "example.pptx": ("In the table, which greeting is in the row of C?", "Hello", "slide 1"),
    "deaths.xlsx": ("What was David Bowie's profession?", "musician", "arts row"),
    "countrystatistics.ods": ("What is the population of Austria in millions?", "8.3", "Population row"),
    "sample-nonspam.eml": ("Who sent the TBTF ping e-mail?", "Keith Dawson", None),
    "other.msg": ("What error did the other server return?", "locked", None),
    "live-manual.en.docx": ("What performs the console and X keyboard configuration?", "live-config",
                            "section 10. Customizing run time behaviours"),
    "cols.odp": ("Which words follow 'Sed ut est elit, eu' on the slide?", "ullamcorper", "slide 1"),
}


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("formats-e2e")
    docs = folder_of(root / "docs", *QUESTIONS)
    assert main(["--data-dir", str(root / "data"), "--device", "cpu", "index", str(docs)]) == 0
    return root / "data", docs.resolve()


@pytest.mark.parametrize("name", list(QUESTIONS))
def test_ask_answers_from_the_file_and_cites_where(indexed, capsys, name):
    data, docs = indexed
    question, expected, where = QUESTIONS[name]
    capsys.readouterr()
    assert main(["--data-dir", str(data), "--device", "cpu", "ask", "--json", "--scope", str(docs / name), "--",
                 question]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["mode"] == "latent" and answer["found"] and not answer["junk"], answer["text"]
    assert expected.lower() in answer["text"].lower(), answer["text"]
    cited = [c for c in answer["citations"] if expected.lower() in c["text"].lower()]
    assert cited and all(Path(c["path"]).name == name for c in cited)
    if where is not None:  # the answer's own passage among them (a manual names live-config in several sections)
        assert any((c["location"] or "").startswith(where) for c in cited), [c["location"] for c in cited]
