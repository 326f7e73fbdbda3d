"""Load on a launched app: questions while 1,000 files are indexed, a burst of 1,000 file events,
two browser sessions at once, a kill -9 in the middle of an answer; peak memory measured throughout.

The tiny published-layout checkpoint keeps the encoder cheap so that what is
exercised is the app's own machinery (watcher, queue, store, server);
``bench/load.py`` runs the same scenario on the embedded default.
"""

import json
import os
import signal
import threading

import pytest
from gradio_client import Client

import data
from latent_store import LatentStore
from served import peak_rss_mb, serve, serve_tiny, write_notes
from test_ui_browser import ARTIFACTS, CHROMIUM_ARGS

pytestmark = pytest.mark.slow

QUESTION = "Which port does the Zorblax cluster listen on?"


def indexed(client) -> int:
    return client.predict(api_name="/library")["by_status"]["indexed"]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("load")
    served = serve_tiny(root, tiny_checkpoint)
    client = Client(served.url, verbose=False)
    data.wait_for(lambda: indexed(client) == 1, timeout=60, what="ops.txt indexed")
    figures: dict[str, float] = {}
    yield served, client, root, figures
    figures["peak_rss_mb"] = peak_rss_mb(served.proc.pid)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "load.json").write_text(json.dumps(figures, indent=2))
    served.stop()


def test_questions_are_answered_while_a_thousand_files_are_indexed(loaded):
    served, client, root, figures = loaded
    big = (root / "big").resolve()
    write_notes(big, 1000)
    client.predict(str(big), api_name="/add_folder")
    answered_while_indexing = 0
    for _ in range(3):
        final = list(client.submit(QUESTION, 0, api_name="/ask"))[-1]
        assert final["citations"] and final["citations"][0]["document"].endswith("ops.txt"), final
        lib = client.predict(api_name="/library")
        answered_while_indexing += lib["indexing"]
    assert answered_while_indexing >= 1, "the folder was indexed before any answer: make it bigger"
    data.wait_for(lambda: indexed(client) == 1001, timeout=900, interval=2, what="1,000 files indexed")
    figures["rss_after_1000_files_mb"] = peak_rss_mb(served.proc.pid)


def test_a_burst_of_a_thousand_file_events_is_indexed_once_each(loaded):
    served, client, root, figures = loaded
    write_notes(root / "big" / "burst", 1000, start=1000)  # one burst into a watched folder
    data.wait_for(lambda: indexed(client) == 2001, timeout=900, interval=2, what="the burst indexed")
    lib = client.predict(api_name="/library")
    assert lib["by_status"]["error"] == 0 and len(lib["documents"]) == 2001  # no duplicates, nothing lost
    figures["rss_after_burst_mb"] = peak_rss_mb(served.proc.pid)


def test_two_browser_sessions_chat_at_once(loaded):
    data.require(data.ensure_chromium())
    from playwright.sync_api import expect, sync_playwright

    served, *_ = loaded
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(data.CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        pages = [browser.new_context().new_page() for _ in range(2)]
        for page in pages:
            page.goto(served.url)
        for page, q in zip(pages, [QUESTION, "Where does the Zorblax cluster listen?"]):
            page.locator("#question textarea").fill(q)
        for page in pages:  # both questions in flight together
            page.locator("#ask").click()
        for page in pages:
            expect(page.locator("#passages")).to_contain_text("ops.txt", timeout=60_000)
            expect(page.locator("#chatbot")).to_contain_text("[1] ops.txt")
        browser.close()


def test_kill_9_during_an_answer_then_restart(tmp_path, tiny_checkpoint):
    write_notes(tmp_path / "docs", 40)
    served = serve_tiny(tmp_path, tiny_checkpoint)
    client = Client(served.url, verbose=False)
    data.wait_for(lambda: indexed(client) == 41, timeout=120, what="the folder indexed")
    job = client.submit(QUESTION, 0, api_name="/ask")
    killed = threading.Event()

    def kill_at_first_piece():
        data.wait_for(lambda: job.outputs() or job.done(), timeout=60, interval=0.005, what="the first piece")
        os.kill(served.proc.pid, signal.SIGKILL)
        killed.set()

    threading.Thread(target=kill_at_first_piece, daemon=True).start()
    assert killed.wait(90)
    served.proc.wait(30)
    with LatentStore(tmp_path / "data" / "store.sqlite") as store:
        assert store.integrity_check() == "ok"
        assert {d.status for d in store.list_documents()} == {"indexed"}

    again = serve(tmp_path / "data", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32")
    try:
        client = Client(again.url, verbose=False)
        assert indexed(client) == 41
        final = list(client.submit(QUESTION, 0, api_name="/ask"))[-1]
        assert final["citations"][0]["document"].endswith("ops.txt")
    finally:
        assert again.stop() == 0
