"""The closed door: this computer only by default; anywhere else only with a password, checked on every route."""

import base64
import urllib.error
import urllib.request

import pytest
from gradio_client import Client

from served import serve_tiny
from ui.cli import main
from ui.server import is_loopback, password_ok

SECRET = "correct horse battery staple"


def basic(password: str, user: str = "me") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def get(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("::1", True), ("localhost", True),
                                         ("0.0.0.0", False), ("192.168.1.20", False), ("::", False)])
def test_which_hosts_are_this_computer_only(host, local):
    assert is_loopback(host) is local


def test_password_check():
    assert password_ok(basic(SECRET), SECRET)
    assert password_ok(basic(SECRET, user=""), SECRET)
    assert not password_ok(basic("wrong"), SECRET)
    assert not password_ok(None, SECRET)
    assert password_ok("Bearer " + SECRET, SECRET)  # an API client sends it as its key
    assert not password_ok("Bearer guess", SECRET)
    assert not password_ok(SECRET, SECRET)
    assert not password_ok("Basic %%%not-base64", SECRET)


def test_listening_beyond_this_computer_needs_a_password(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LCLM_DOCS_PASSWORD", raising=False)
    assert main(["--data-dir", str(tmp_path), "serve", "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "LCLM_DOCS_PASSWORD" in err and "Traceback" not in err
    assert not (tmp_path / "store.sqlite").exists()  # refused before anything was opened or loaded


@pytest.fixture(scope="module")
def locked(tmp_path_factory, tiny_checkpoint):
    served = serve_tiny(tmp_path_factory.mktemp("locked"), tiny_checkpoint, env={"LCLM_DOCS_PASSWORD": SECRET})
    yield served
    served.stop()


@pytest.mark.parametrize("path", ["", "document/1", "gradio_api/info", "config", "gradio_api/queue/join", "v1/models",
                                  "mcp", "view/1?segment=1", "pdfjs/pdf.min.mjs", "static/viewer.mjs"])
def test_every_route_wants_the_password(locked, path):
    status, headers = get(locked.url + path)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    assert get(locked.url + path, {"Authorization": basic("guess")})[0] == 401


def test_with_the_password_the_ui_and_its_api_work(locked):
    assert get(locked.url, {"Authorization": basic(SECRET)})[0] == 200
    assert get(locked.url + "document/1", {"Authorization": basic(SECRET)})[0] == 200
    client = Client(locked.url, headers={"Authorization": basic(SECRET)}, verbose=False)
    final = list(client.submit("Which port does the Zorblax cluster listen on?", 0, api_name="/ask"))[-1]
    assert final["citations"][0]["document"].endswith("ops.txt")


def test_api_clients_send_the_password_as_their_key(locked):
    import anyio
    import httpx2
    import openai
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=locked.url + "v1", api_key="guess", max_retries=0).models.list()
    client = openai.OpenAI(base_url=locked.url + "v1", api_key=SECRET, max_retries=0, timeout=120)
    resp = client.chat.completions.create(model="latent-context-docs",
                                          messages=[{"role": "user", "content": "Which port does the Zorblax cluster listen on?"}])
    assert resp.model_extra["citations"][0]["document"] == "ops.txt"

    async def tools():
        async with httpx2.AsyncClient(headers={"Authorization": "Bearer " + SECRET}, timeout=60) as http:
            async with streamable_http_client(locked.url + "mcp", http_client=http) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    return {t.name for t in (await session.list_tools()).tools}

    assert "ask" in anyio.run(tools)
