"""The UI in a real headless Chromium (Debian's), driven by Playwright, against a launched app.

A user's path: open the page, add a folder, wait until it is indexed, ask,
watch the answer stream, open a citation, read one more passage and get a
new answer. The screenshot of the finished chat is kept in
``test-artifacts/ui-chat.png``.
"""

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest

import data
from served import serve

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# As root in a container, and with no network: no sandbox, no Google services (their lookups fail here).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
EVIL = ('The Quokka release notes. <script>window.__pwned = 1</script>'
        '<img src="x" onerror="window.__pwned = 2"> Quokka ships on Friday.\n')


@pytest.fixture(scope="module")
def browser():
    data.require(data.ensure_chromium())
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        data.require("playwright is not installed (pip install -e .[test])")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(data.CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("ui-browser")
    served = serve(root / "data", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32")
    yield served, root
    served.stop()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 1100})
    pg = ctx.new_page()
    errors: list[str] = []
    offsite: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.on("request", lambda r: None if urlparse(r.url).hostname in ("127.0.0.1", "localhost", None)
          or r.url.startswith(("data:", "blob:")) else offsite.append(r.url))
    yield pg
    ctx.close()
    assert not errors, errors
    assert not offsite, f"the page asked for things off this computer: {offsite[:5]}"


def test_add_a_folder_ask_and_expand_in_the_browser(app, page):
    from playwright.sync_api import expect

    served, root = app
    docs = (root / "docs").resolve()
    docs.mkdir()
    (docs / "ops.txt").write_text("The Zorblax cluster listens on port 7431.\n\nBackups run nightly to the Lisbon vault.\n")
    (docs / "tea.txt").write_text("Green tea is brewed at eighty degrees.\n\nBlack tea wants boiling water.\n")
    (docs / "vault.txt").write_text("The Lisbon vault keeps the Zorblax backups. Its door code is 5512.\n")
    for i in range(4):  # more passages than an answer reads, so some are offered to read next
        (docs / f"notes-{i}.txt").write_text(f"The Zorblax cluster note {i}. " + data.prose(i, paragraphs=1))

    page.goto(served.url)
    page.get_by_role("tab", name="Library").click()
    page.locator("#folder textarea").fill(str(docs))
    page.locator("#add-folder").click()
    expect(page.locator("#library-msg")).to_contain_text("added", timeout=20_000)
    expect(page.locator("#status")).to_contain_text("7 indexed", timeout=60_000)  # the live progress line
    expect(page.locator("#documents")).to_contain_text("vault.txt")

    page.get_by_role("tab", name="Chat").click()
    page.locator("#question textarea").fill("Which port does the Zorblax cluster listen on?")
    page.locator("#ask").click()
    bot = page.locator("#chatbot")
    expect(bot).to_contain_text("[1] ops.txt", timeout=60_000)  # the answer, then its citations
    expect(page.locator("#chats")).to_contain_text("Which port does the Zorblax cluster")

    # a citation opens to its passage
    page.locator("#chatbot").get_by_text("[1] ops.txt").click()
    expect(bot).to_contain_text("listens on port 7431")
    # the passages panel links the document
    link = page.locator("#passages a").first
    assert link.get_attribute("href").startswith("/view/")  # the app's viewer, the passage marked

    # read one more passage and answer again
    page.locator("#more input").click()
    option = page.get_by_role("option").first
    name = option.inner_text().split(":")[0]  # "notes-1.txt: The Zorblax cluster note 1…"
    option.click()
    page.locator("#expand").click()
    expect(bot).to_contain_text(f"Read {name} too", timeout=10_000)
    # the new answer cites it after the three passages read before
    expect(page.locator("#passages")).to_contain_text(f"[4] {name}", timeout=60_000)
    expect(bot).to_contain_text(f"[4] {name}")
    assert "[5]" not in page.locator("#passages").inner_text()  # one more passage, not the whole ranking

    # regenerate: the same question answered again, a second stored answer
    page.locator("#regenerate").click()
    expect(bot).to_contain_text("Answered again (regenerated)", timeout=60_000)

    # export: the chat as Markdown, downloaded as a file
    page.locator("#export").click()
    with page.expect_download() as dl:
        page.locator("#exported a").first.click()
    md = Path(dl.value.path()).read_text()
    assert md.startswith("# Which port does the Zorblax cluster listen on?")
    assert md.count("**Answer:**") == 3 and "Answered again (regenerated)." in md
    assert "[1] ops.txt" in md and "> The Zorblax cluster listens on port 7431." in md

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "ui-chat.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # the library, per document: open it, take it out (the file stays), include it again
    page.get_by_role("tab", name="Library").click()
    row = page.locator("#documents [role=row]", has_text="tea.txt")  # the grid's visible rows
    doc_id = row.locator("[role=gridcell]").first.inner_text().strip()
    assert row.locator("a", has_text="open").get_attribute("href") == f"/document/{doc_id}"
    page.locator("#doc-id input").fill(doc_id)
    page.locator("#exclude").click()
    expect(page.locator("#library-msg")).to_contain_text("tea.txt is out of the library", timeout=10_000)
    expect(page.locator("#documents")).not_to_contain_text("tea.txt")
    assert (docs / "tea.txt").exists()
    page.locator("#excluded input").click()
    page.get_by_role("option", name=str(docs / "tea.txt")).click()
    page.locator("#include").click()
    expect(page.locator("#library-msg")).to_contain_text("back in the library", timeout=10_000)
    expect(page.locator("#status")).to_contain_text("7 indexed", timeout=60_000)


def test_document_text_cannot_run_script_in_the_page(app, page):
    from playwright.sync_api import expect

    served, root = app
    hostile = (root / "hostile").resolve()
    hostile.mkdir()
    (hostile / "notes.txt").write_text(EVIL)
    page.goto(served.url)
    page.get_by_role("tab", name="Library").click()
    page.locator("#folder textarea").fill(str(hostile))
    page.locator("#add-folder").click()
    expect(page.locator("#documents")).to_contain_text("notes.txt", timeout=20_000)
    expect(page.locator("#status")).to_contain_text("Idle", timeout=60_000)
    page.get_by_role("tab", name="Chat").click()
    page.locator("#question textarea").fill("When does Quokka ship?")
    page.locator("#ask").click()
    expect(page.locator("#passages")).to_contain_text("<script>window.__pwned = 1</script>", timeout=60_000)
    page.locator("#passages summary").first.click()
    page.locator("#chatbot").get_by_text("notes.txt").first.click()
    page.wait_for_timeout(500)
    assert page.evaluate("window.__pwned") is None
    assert page.locator("#passages script, #passages img, #chatbot img[src='x']").count() == 0


def letters(text: str) -> str:
    """Letters and digits only, NFKC, lower case: how the viewer compares pypdf's text with PDF.js's."""
    import unicodedata

    return "".join(ch for ch in unicodedata.normalize("NFKC", text).lower() if ch.isalnum())


def test_a_citation_opens_the_viewer_with_its_passage_marked(app, page, r_intro_pdf):
    from gradio_client import Client
    from playwright.sync_api import expect
    from pypdf import PdfReader, PdfWriter

    data.require(data.ensure_pdfjs())
    served, root = app
    pdfs, texts = (root / "viewer-pdf").resolve(), (root / "viewer-txt").resolve()
    pdfs.mkdir()
    texts.mkdir()
    w = PdfWriter()
    for n in (62, 63, 64):  # R-intro 11.1 "Defining statistical models; formulae", lm()
        w.add_page(PdfReader(r_intro_pdf).pages[n - 1])
    w.write(pdfs / "r-models.pdf")
    (texts / "ops.txt").write_text("Intro line.\n\nThe Quasar relay restarts every Tuesday at noon.\n\nLast line.\n")
    client = Client(served.url, verbose=False)
    for f in (pdfs, texts):
        client.predict(str(f), api_name="/add_folder")
    data.wait_for(lambda: client.predict(api_name="/library")["by_status"].get("pending", 0) == 0
                  and not client.predict(api_name="/library")["indexing"], timeout=120, interval=0.5,
                  what="the viewer's documents indexed")

    def cited(question, folder):
        final = list(client.submit(question, 0, [str(folder)], api_name="/ask"))[-1]
        return final["citations"][0]

    # a PDF passage: PDF.js renders its page, and the mark covers the passage's own words
    c = cited("How is a statistical model formula written for lm with a response and terms?", pdfs)
    assert c["view_url"] == f"/view/{c['document_id']}?segment={c['segment_id']}"
    page.goto(served.url.rstrip("/") + c["view_url"])
    expect(page.locator("body")).to_have_attribute("data-highlight", "whole", timeout=60_000)
    expect(page.locator("header")).to_contain_text(f"r-models.pdf, page {c['page']}")
    marked = "".join(page.locator(".passage-mark").all_inner_texts())
    assert letters(marked) == letters(c["text"]) and len(letters(marked)) > 200
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "viewer-pdf.png"), full_page=False)

    # a text passage: the document's text with the passage in <mark>
    t = cited("When does the Quasar relay restart?", texts)
    page.goto(served.url.rstrip("/") + t["view_url"])
    expect(page.locator("body")).to_have_attribute("data-highlight", "whole", timeout=20_000)
    assert " ".join(page.locator("mark#passage").inner_text().split()) == " ".join(t["text"].split())
    assert "Intro line." in page.locator("pre.doc").inner_text()
    page.screenshot(path=str(ARTIFACTS / "viewer-text.png"))

    # only passages of indexed documents: anything else is a 404
    assert page.goto(served.url.rstrip("/") + f"/view/{t['document_id']}?segment={c['segment_id']}").status == 404


# file in a folder of the library -> (question, how its citations name their place: the viewer's header too).
# Which passage comes first moves with the tiny random model's attention; the kind of place does not.
FORMAT_QUESTIONS = {
    "example.pptx": ("Which row of the table says Hello?", r"example\.pptx, slide \d+"),
    "deaths.xlsx": ("What was David Bowie's profession?", r"deaths\.xlsx, \w+ rows? \d+(-\d+)?"),
    "countrystatistics.ods": ("What is the HDI of Iceland?", r"countrystatistics\.ods, \w+ rows? \d+(-\d+)?"),
    "cols.odp": ("What does Col 3 say?", r"cols\.odp, slide 1"),
    "live-manual.en.docx": ("What performs the keyboard configuration?", r"live-manual\.en\.docx, section .+"),
    "live-manual.en.epub": ("What performs the keyboard configuration?", r"live-manual\.en\.epub, chapter \d+: .+"),
    "api-for-odfpy.odt": ("Which elements occur in presentation.AnimationGroup?",
                          r"api-for-odfpy\.odt, page \d+(, section .+)?"),
    "test.mbox": ("Is the Google data archive ready?", r"test\.mbox, message \d+: .+"),
    "sample-nonspam.eml": ("Who sent the TBTF ping?", r"sample-nonspam\.eml"),
    "other.msg": ("What error did the other server return?", r"other\.msg"),
    "scan.pdf": ("What is there a large collection of?", r"scan\.pdf, page 1"),
}


def test_every_format_is_indexed_and_each_kind_of_citation_opens_at_its_place(app, page, r_intro_pdf):
    """A folder of real Office files, an e-book, mail, a scanned PDF and a zip bomb, added in the Library tab:
    each is indexed or shows its reason; a citation of each kind opens in the viewer, its place in the header."""
    import zipfile

    import pypdfium2
    from gradio_client import Client
    from playwright.sync_api import expect

    from samples import require_samples

    data.require(data.ensure_tesseract())
    data.require(data.ensure_pdfjs())
    files = require_samples(*[n for n in FORMAT_QUESTIONS if n != "scan.pdf"])
    served, root = app
    docs = (root / "formats").resolve()
    for name in FORMAT_QUESTIONS:  # one folder a file, so that a question can be asked over one file
        (docs / name).mkdir(parents=True)
        if name in files:
            (docs / name / name).write_bytes(files[name].read_bytes())
    pdf = pypdfium2.PdfDocument(str(r_intro_pdf))
    pdf[20].render(scale=200 / 72, grayscale=True).to_pil().copy().save(docs / "scan.pdf" / "scan.pdf", "PDF")
    pdf.close()
    with zipfile.ZipFile(docs / "bomb.docx", "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("word/document.xml", b"\0" * (64 << 20))

    page.goto(served.url)
    page.get_by_role("tab", name="Library").click()
    expect(page.locator("#formats")).to_contain_text("Scanned PDF pages and images are read by OCR (Tesseract")
    page.locator("#folder textarea").fill(str(docs))
    page.locator("#add-folder").click()
    expect(page.locator("#library-msg")).to_contain_text("added", timeout=20_000)
    client = Client(served.url, verbose=False)
    data.wait_for(lambda: not client.predict(api_name="/library")["indexing"] and all(
        d["status"] in ("indexed", "error", "skipped") for d in client.predict(api_name="/library")["documents"]
        if d["document"].startswith(str(docs))), timeout=300, interval=1, what="the formats folder indexed")
    rows = {Path(d["document"]).name: d for d in client.predict(api_name="/library")["documents"]}
    assert {n: rows[n]["status"] for n in FORMAT_QUESTIONS} == dict.fromkeys(FORMAT_QUESTIONS, "indexed")
    assert rows["bomb.docx"]["status"] == "skipped" and "zip bomb" in rows["bomb.docx"]["reason"]
    # the table's search box finds each file with its status (the grid shows only the rows in view)
    table, search = page.locator("#documents"), page.locator("#documents input").first
    for name, status in [*((n, "indexed") for n in FORMAT_QUESTIONS), ("bomb.docx", "zip bomb")]:
        search.fill(name)
        row = table.locator("[role=row]", has_text=name).first
        expect(row).to_contain_text(status, timeout=20_000)
    search.fill("")

    for name, (question, where) in FORMAT_QUESTIONS.items():
        final = list(client.submit(question, 0, [str(docs / name)], api_name="/ask"))[-1]
        assert final["citations"], (name, final)
        c = final["citations"][0]
        assert re.fullmatch(where, c["where"]), (name, c["where"])
        page.goto(served.url.rstrip("/") + c["view_url"])
        expect(page.locator("header")).to_contain_text(c["where"], timeout=20_000)
        if name != "scan.pdf":  # a scan's page has no text layer for PDF.js to mark
            expect(page.locator("body")).to_have_attribute("data-highlight", "whole", timeout=20_000)

    # in the chat: the citation names the slide
    page.goto(served.url)
    page.locator("#question textarea").fill("Which rows say Salut and Hello, blah blah?")
    page.locator("#ask").click()
    expect(page.locator("#chatbot")).to_contain_text("example.pptx, slide 1", timeout=60_000)
