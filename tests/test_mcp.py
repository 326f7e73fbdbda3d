"""``lclm-docs mcp``: the MCP server over stdio, driven by the official ``mcp`` client as a desktop client drives it.

(The same tools over HTTP, beside the UI, are in test_ui_api.py.)
"""

import os
import sys
import time

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

OPS = "The Zorblax cluster listens on port 7431.\n\nBackups run nightly to the Lisbon vault.\n"
QUESTION = "Which port does the Zorblax cluster listen on?"


@pytest.fixture
def server_params(tmp_path, tiny_checkpoint):
    docs = (tmp_path / "docs").resolve()
    docs.mkdir()
    (docs / "ops.txt").write_text(OPS)
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    cmd = ["-c", "import sys; from ui.cli import main; sys.exit(main())", "--data-dir", str(tmp_path / "data"),
           "--checkpoint", str(tiny_checkpoint), "--device", "cpu", "--dtype", "float32", "mcp", "--folder", str(docs)]
    return StdioServerParameters(command=sys.executable, args=cmd, env=dict(os.environ)), docs


def test_a_desktop_client_lists_the_tools_searches_and_asks_over_stdio(server_params):
    params, docs = server_params

    async def run():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                tools = {t.name: t for t in (await session.list_tools()).tools}
                deadline = time.monotonic() + 120
                while True:  # the library indexes in the background, as with `serve`
                    listed = (await session.call_tool("list_documents", {})).structured_content["result"]
                    if listed and all(d["status"] in ("indexed", "error") for d in listed) or time.monotonic() > deadline:
                        break
                    await anyio.sleep(0.5)
                asked = await session.call_tool("ask", {"question": QUESTION})
                found = await session.call_tool("search", {"query": "Lisbon vault", "limit": 3})
                empty = await session.call_tool("ask", {"question": "   "})
                return tools, listed, asked, found, empty

    tools, listed, asked, found, empty = anyio.run(run)
    assert {"ask", "search", "list_documents"} <= set(tools)
    assert "citations" in str(tools["ask"].output_schema)  # structured output, described to the client
    by_name = {os.path.basename(d["path"]): d for d in listed}
    assert by_name["ops.txt"]["status"] == "indexed"
    assert by_name["broken.pdf"]["status"] == "error" and by_name["broken.pdf"]["error"]  # a bad file says why
    assert not asked.is_error, asked.content
    answer = asked.structured_content
    assert answer["answer"] and answer["chat_id"] > 0
    cite = answer["citations"][0]
    assert cite["path"] == str(docs / "ops.txt") and "7431" in cite["text"] and cite["number"] == 1
    hits = found.structured_content["result"]
    assert len(hits) == 1 and hits[0]["document"] == "ops.txt" and "Lisbon vault" in hits[0]["text"]
    assert empty.is_error and "question" in str(empty.content)  # an error the client can show, not a crash
