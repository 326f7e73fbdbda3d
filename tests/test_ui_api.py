"""The launched app over HTTP, as gradio_client sees it: ask, stream, citations, expand, library, documents."""

import urllib.error
import urllib.request

import pytest
from gradio_client import Client

import data
from served import serve
from ui.web import document_response_headers, history_messages, md_text, passages_html

OPS = "The Zorblax cluster listens on port 7431.\n\nBackups run nightly to the Lisbon vault.\n"
TEA = "Green tea is brewed at eighty degrees.\n\nBlack tea wants boiling water.\n"
QUESTION = "Which port does the Zorblax cluster listen on?"


def pdf_pages(src, dest, pages):
    from pypdf import PdfReader, PdfWriter

    w = PdfWriter()
    for p in pages:
        w.add_page(PdfReader(src).pages[p - 1])
    w.write(dest)
    return dest


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_checkpoint, r_intro_pdf):
    root = tmp_path_factory.mktemp("ui-api")
    docs = (root / "docs").resolve()
    docs.mkdir()
    (docs / "ops.txt").write_text(OPS)
    (docs / "tea.txt").write_text(TEA)
    pdf_pages(r_intro_pdf, docs / "r-models.pdf", [62, 63, 64])  # 11.1 "Defining statistical models", lm()
    served = serve(root / "data", "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32",
                   folders=(docs,))
    client = Client(served.url, verbose=False)
    data.wait_for(lambda: client.predict(api_name="/library")["by_status"]["indexed"] == 3, timeout=120,
                  interval=0.5, what="the three documents indexed")
    yield served, client, docs, root
    assert served.stop() == 0, served.output()[-3000:]


def get(url):
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def ask(client, question, chat_id=0):
    job = client.submit(question, chat_id, api_name="/ask")
    return list(job)


def test_an_answer_streams_then_arrives_with_its_citations(app):
    _, client, docs, _ = app
    outs = ask(client, QUESTION)
    partial, final = outs[:-1], outs[-1]
    assert partial and all(not o["done"] for o in partial)
    texts = [o["text"] for o in partial]
    assert all(a == b[: len(a)] for a, b in zip(texts, texts[1:]))  # each piece extends the last
    assert final["done"] and final["found"]
    if final["no_answer"]:  # the tiny random decoder's reply was a loop: the best passage is shown in its place
        assert final["text"].startswith("No answer could be formed from the passages.") and "7431" in final["text"]
    else:
        assert final["text"] == texts[-1].strip()
    assert final["raw_segments"] == 0  # every passage was indexed before the question: all read as latents
    first = final["citations"][0]
    assert first["document"] == str(docs / "ops.txt") and "7431" in first["text"]
    assert first["url"] == f"/document/{first['document_id']}"


def test_a_cited_document_opens_from_its_link(app):
    served, client, docs, _ = app
    cite = ask(client, QUESTION)[-1]["citations"][0]
    status, headers, body = get(served.url.rstrip("/") + cite["url"])
    assert status == 200 and body == (docs / "ops.txt").read_bytes()
    assert headers["Content-Type"].startswith("text/plain") and "sandbox" in headers["Content-Security-Policy"]


def test_a_pdf_citation_links_to_its_page(app):
    served, client, docs, _ = app
    final = ask(client, "How does the lm function fit a linear regression model?")[-1]
    pdf = [c for c in final["citations"] + final["more"] if c["document"].endswith("r-models.pdf")]
    assert pdf, final
    assert pdf[0]["page"] in (1, 2, 3) and pdf[0]["url"].endswith(f"#page={pdf[0]['page']}")
    status, headers, body = get(served.url.rstrip("/") + pdf[0]["url"].split("#")[0])
    assert status == 200 and headers["Content-Type"] == "application/pdf" and body[:5] == b"%PDF-"


def test_only_indexed_documents_are_served(app):
    served, *_ = app
    base = served.url.rstrip("/")
    assert get(base + "/document/99999")[0] == 404
    assert get(base + "/document/..%2F..%2Fetc%2Fpasswd")[0] in (404, 422)


def test_expand_answers_again_with_one_more_passage(app):
    _, client, docs, _ = app
    final = ask(client, QUESTION)[-1]
    extra = next(c for c in final["more"] if c["segment_id"] not in {x["segment_id"] for x in final["citations"]})
    again = list(client.submit(final["chat_id"], final["message_id"], extra["segment_id"], api_name="/expand"))[-1]
    assert again["done"] and again["chat_id"] == final["chat_id"] and again["message_id"] > final["message_id"]
    assert extra["segment_id"] in {c["segment_id"] for c in again["citations"]}


def test_a_follow_up_question_stays_in_its_chat(app):
    _, client, *_ = app
    first = ask(client, QUESTION)[-1]
    second = ask(client, "How hot should the water be for green tea?", first["chat_id"])[-1]
    assert second["chat_id"] == first["chat_id"]


def test_errors_reach_the_client_as_messages(app):
    _, client, *_ = app
    with pytest.raises(Exception, match="type a question first"):
        client.predict("  ", 0, api_name="/ask")
    with pytest.raises(Exception, match="no such folder"):
        client.predict("/nowhere/at/all", api_name="/add_folder")


def test_a_folder_added_over_the_api_is_indexed(app, tmp_path):
    _, client, _, root = app
    more = (root / "more").resolve()
    more.mkdir()
    (more / "vault.txt").write_text("The Lisbon vault door code is 5512.\n")
    assert "added" in client.predict(str(more), api_name="/add_folder")
    data.wait_for(lambda: any(d["document"].endswith("vault.txt") and d["status"] == "indexed"
                              for d in client.predict(api_name="/library")["documents"]),
                  timeout=60, interval=0.5, what="vault.txt indexed")
    lib = client.predict(api_name="/library")
    assert str(more) in lib["folders"] and not lib["indexing"]


# ------------------------------------------------------------ rendering
def test_passages_are_escaped_html():
    from app.assistant import Citation

    evil = Citation(1, 7, 3, "/d/<b>x</b>.txt", None, 0, 10, "<script>alert(1)</script> & <img src=x onerror=y>", 1.0)
    out = passages_html([evil], [])
    assert "<script>" not in out and "<img" not in out and "<b>x" not in out
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=y&gt;" in out


def test_a_reopened_chat_shows_what_its_answers_could_not_read(tmp_path):
    from types import SimpleNamespace

    from latent_store import LatentStore

    with LatentStore(tmp_path / "lib.sqlite") as store:
        chat = store.create_chat("ports")
        store.add_message(chat.id, "user", QUESTION)
        cite = {"number": 1, "document_id": 1, "segment_id": 3, "path": "/d/ops.txt", "page": None, "char_start": 0,
                "char_end": 9, "text": "port 7431", "score": 1.0, "kind": "cited", "mode": "latent"}
        store.add_message(chat.id, "assistant", "Port 7431 [1].", citations=[cite],
                          notes={"left_out": ["/d/big manual.pdf"], "raw_segments": 1})
        msgs, cites, _, _ = history_messages(SimpleNamespace(messages=store.get_messages), chat.id)
    texts = [m["content"] for m in msgs]
    assert texts[:2] == [QUESTION, md_text("Port 7431 [1].")]
    assert texts[2] == md_text("Not read (did not fit the context): big manual.pdf")
    assert texts[3] == md_text("1 passage had no latents from this compressor yet and was read as raw text"
                               " (they are compressed in the background; later answers read less)")
    assert len(texts) == 4 + len(cites) == 5  # then its citation, as when it was answered


def test_chat_text_is_shown_literally():
    assert md_text("<b>*bold*</b> [x](y)") == r"&lt;b&gt;\*bold\*&lt;/b&gt; \[x\]\(y\)"


def test_html_documents_are_served_as_sandboxed_text(tmp_path):
    media, headers = document_response_headers(tmp_path / "page.html")
    assert media.startswith("text/plain") and headers["Content-Security-Policy"].startswith("sandbox")
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert document_response_headers(tmp_path / "a.pdf")[0] == "application/pdf"


def test_a_question_can_be_asked_over_chosen_folders(app):
    _, client, docs, root = app
    other = (root / "other").resolve()
    other.mkdir(exist_ok=True)
    (other / "ports.txt").write_text("The Zorblax backup server listens on port 9999.\n")
    client.predict(str(other), api_name="/add_folder")
    data.wait_for(lambda: any(d["document"].endswith("ports.txt") and d["status"] == "indexed"
                              for d in client.predict(api_name="/library")["documents"]),
                  timeout=60, interval=0.5, what="ports.txt indexed")
    only_other = list(client.submit(QUESTION, 0, [str(other)], api_name="/ask"))[-1]
    assert {c["document"] for c in only_other["citations"] + only_other["more"]} == {str(other / "ports.txt")}
    everything = list(client.submit(QUESTION, 0, api_name="/ask"))[-1]
    assert str(docs / "ops.txt") in {c["document"] for c in everything["citations"]}


# ------------------------------------------------------------------ the OpenAI-compatible API
def openai_client(served):
    from openai import OpenAI

    return OpenAI(base_url=served.url + "v1", api_key="unused-on-loopback", max_retries=0, timeout=120)


def test_an_openai_client_gets_the_answer_and_its_citations(app):
    served, _, docs, _ = app
    resp = openai_client(served).chat.completions.create(
        model="latent-context-docs", messages=[{"role": "system", "content": "Be brief."},
                                               {"role": "user", "content": QUESTION}])
    text = resp.choices[0].message.content
    cites = resp.model_extra["citations"]
    assert cites and cites[0]["path"] == str(docs / "ops.txt") and cites[0]["number"] == 1
    assert "7431" in cites[0]["text"] and cites[0]["url"] == f"/document/{cites[0]['document_id']}"
    # numbered sources close the text, for clients that show text only
    assert "\n\nSources:\n[1] ops.txt: \"The Zorblax cluster listens on port 7431." in text
    assert resp.usage.prompt_tokens > 0 and resp.choices[0].finish_reason == "stop"


def test_an_openai_client_streams_the_answer_then_the_citations(app):
    served, _, docs, _ = app
    chunks = list(openai_client(served).chat.completions.create(
        model="latent-context-docs:rag", stream=True, messages=[{"role": "user", "content": QUESTION}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert len(chunks) >= 4 and text.strip()  # role, content..., sources, stop
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last.model_extra["citations"][0]["path"] == str(docs / "ops.txt")
    assert "Sources:\n[1] ops.txt" in text


def test_openai_models_and_the_errors_a_client_can_act_on(app):
    import openai

    served = app[0]
    client = openai_client(served)
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "latent-context-docs" and "latent-context-docs:full" in ids
    with pytest.raises(openai.NotFoundError, match="no model 'gpt-4o'"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
    with pytest.raises(openai.BadRequestError, match="no user message"):
        client.chat.completions.create(model="latent-context-docs", messages=[{"role": "system", "content": "hi"}])


# ------------------------------------------------------------------ MCP over HTTP, beside the UI
def test_an_mcp_client_over_http_lists_the_tools_and_gets_an_answer_with_citations(app):
    import anyio
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    served, _, docs, _ = app

    async def session_run():
        async with streamable_http_client(served.url + "mcp") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                asked = await session.call_tool("ask", {"question": QUESTION})
                found = await session.call_tool("search", {"query": "Lisbon vault backups"})
                return tools, asked, found

    tools, asked, found = anyio.run(session_run)
    assert {"ask", "search", "list_documents"} <= tools
    assert not asked.is_error, asked.content
    answer = asked.structured_content
    assert answer["answer"] and answer["citations"][0]["path"] == str(docs / "ops.txt")
    hits = found.structured_content["result"]
    assert hits[0]["document"] == "ops.txt" and "Lisbon vault" in hits[0]["text"]


def test_regenerate_export_and_stop_through_the_api(app):
    _, client, _, _ = app
    first = ask(client, QUESTION)[-1]
    again = list(client.submit(first["chat_id"], api_name="/regenerate"))[-1]
    assert again["done"] and again["regenerated"] and again["chat_id"] == first["chat_id"]
    assert again["message_id"] != first["message_id"]
    md = client.predict(first["chat_id"], api_name="/export")
    assert md.count("**Answer:**") == 2 and "Answered again (regenerated)." in md and "[1] ops.txt" in md
    assert client.predict(api_name="/stop") == "stopping"
    after = ask(client, QUESTION, first["chat_id"])[-1]
    assert after["done"] and not after["stopped"]  # a stop pressed with nothing running never stops the next answer
