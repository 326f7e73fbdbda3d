"""The launched app on the real embedded default: index through the UI's API, ask, get the fact and its page.

Also a browser screenshot of that chat (``test-artifacts/ui-chat-default.png``),
the picture of what a new user sees.
"""

from contextlib import contextmanager
from urllib.parse import urlparse

import pytest
from gradio_client import Client

import data
from served import serve
from test_assistant_e2e import NOTES, TEA
from test_ui_api import pdf_pages
from test_ui_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@contextmanager
def chat_page(served, height: int):
    """Debian's Chromium on the app's page (a skip, or in CI a failure, where Chromium cannot be had)."""
    data.require(data.ensure_chromium())
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(data.CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        offsite: list[str] = []
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": height})
            ctx.on("request", lambda r: None if urlparse(r.url).hostname in ("127.0.0.1", "localhost", None)
                   or r.url.startswith(("data:", "blob:")) else offsite.append(r.url))
            page = ctx.new_page()  # and the viewer tabs it opens, in the same context
            page.goto(served.url)
            yield page
        finally:
            browser.close()
        assert not offsite, f"the page asked for things off this computer: {offsite[:5]}"



@pytest.fixture(scope="module")
def app(tmp_path_factory, r_intro_pdf):
    root = tmp_path_factory.mktemp("ui-e2e")
    docs = (root / "docs").resolve()
    docs.mkdir()
    (docs / "ops-notes.txt").write_text(NOTES)
    (docs / "tea.txt").write_text(TEA)
    pdf_pages(r_intro_pdf, docs / "r-models.pdf", [62, 63, 64, 65])
    served = serve(root / "data", "--device", "cpu", folders=(docs,))
    client = Client(served.url, verbose=False)
    data.wait_for(lambda: client.predict(api_name="/library")["by_status"]["indexed"] == 3, timeout=600,
                  interval=1.0, what="the documents indexed by the default compressor")
    yield served, client, docs
    assert served.stop() == 0, served.output()[-3000:]


def test_the_default_model_answers_with_the_fact_and_cites_its_file(app):
    _, client, docs = app
    final = list(client.submit("What port does the Zorblax cluster run on?", 0, api_name="/ask"))[-1]
    assert "7431" in final["text"]
    assert final["citations"][0]["document"] == str(docs / "ops-notes.txt")


def test_a_pdf_answer_cites_the_page_it_came_from(app):
    _, client, docs = app
    final = list(client.submit("What is the basic function for fitting ordinary multiple models?", 0,
                               api_name="/ask"))[-1]
    assert "lm" in final["text"]
    # R-intro.pdf page 64 ("11.2 Linear models") is page 3 of the four copied
    assert any(c["document"].endswith("r-models.pdf") and c["page"] == 3 and "lm(" in c["text"]
               for c in final["citations"])


def test_screenshot_of_a_chat_with_the_default_model(app):
    from playwright.sync_api import expect

    served, _, _ = app
    with chat_page(served, 1000) as page:
        page.locator("#question textarea").fill("Who administers the Zorblax cluster?")
        page.locator("#ask").click()
        expect(page.locator("#passages")).to_contain_text("ops-notes.txt", timeout=120_000)
        expect(page.locator("#chatbot")).to_contain_text("Mira Quell", timeout=10_000)
        page.locator("#chatbot").get_by_text("[1] ops-notes.txt").click()
        expect(page.locator("#chatbot")).to_contain_text("runs on port 7431")  # the passage, opened
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-chat-default.png"), full_page=True)


def test_stop_keeps_a_stopped_partial_answer_and_the_next_question_works(app):
    from playwright.sync_api import expect

    served, _, _ = app
    with chat_page(served, 1000) as page:
        bot = page.locator("#chatbot")
        page.locator("#question textarea").fill("What is the basic function for fitting ordinary multiple models?")
        page.locator("#ask").click()
        expect(bot).to_contain_text("…", timeout=30_000)  # the answer has started: documents prefill, then tokens
        page.wait_for_timeout(300)
        page.locator("#stop").click()
        expect(bot).to_contain_text("Stopped before the end", timeout=120_000)
        # the decoder is free again: the next question is answered in full
        page.locator("#question textarea").fill("What port does the Zorblax cluster run on?")
        page.locator("#ask").click()
        expect(page.locator("#passages")).to_contain_text("ops-notes.txt", timeout=120_000)
        expect(bot).to_contain_text("7431", timeout=10_000)
        assert bot.inner_text().count("Stopped before the end") == 1
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "ui-stopped.png"), full_page=True)


def test_screenshot_of_an_answer_and_its_passage_marked_in_the_pdf(app):
    """The README's pictures (docs/answer.png, docs/viewer.png are copies of these): a real answer of the
    default model, and its cited passage marked in the viewer."""
    data.require(data.ensure_pdfjs())
    from playwright.sync_api import expect

    served, _, _ = app
    with chat_page(served, 900) as page:
        page.locator("#question textarea").fill("What is the basic function for fitting ordinary multiple models?")
        page.locator("#ask").click()
        passages = page.locator("#passages")
        expect(passages).to_contain_text("r-models.pdf", timeout=120_000)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "answer-default.png"))
        link = passages.locator("details", has_text="r-models.pdf").first.locator("a")
        with page.expect_popup() as popup:
            link.click()
        viewer = popup.value
        viewer.set_viewport_size({"width": 1280, "height": 900})
        expect(viewer.locator("body")).to_have_attribute("data-highlight", "whole", timeout=60_000)
        assert viewer.locator(".passage-mark").count() > 0
        viewer.screenshot(path=str(ARTIFACTS / "viewer-default.png"))
