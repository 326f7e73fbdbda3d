"""Source code, CSV and JSON are read as text; other people's code inside a project folder is not.

The files are real and nobody here wrote them: CPython's json/decoder.py (the interpreter's standard
library), the Titanic passenger list that gradio ships (gradio/media_assets/data/titanic.csv), and the
JSON Schema draft-07 meta-schema that jsonschema-specifications ships. Each is indexed with the tiny
published-layout checkpoint, a known sentence of each is found by search in that file, and `ask`
answers from it with a citation of it.
"""

import json
import shutil
import sysconfig
from pathlib import Path

import gradio
import jsonschema_specifications
import pytest

from app.cli import main
from app.watcher import FolderSync
from latent_store import LatentStore

SOURCES = {
    "decoder.py": Path(sysconfig.get_paths()["stdlib"]) / "json" / "decoder.py",
    "titanic.csv": Path(gradio.__file__).parent / "media_assets" / "data" / "titanic.csv",
    "metaschema.json": Path(jsonschema_specifications.__file__).parent / "schemas" / "draft7" / "metaschema.json",
}
KNOWN = {  # file -> (a sentence in it, the search that finds it)
    "decoder.py": ("Implementation of JSONDecoder", "Implementation JSONDecoder"),
    "titanic.csv": ('"Braund, Mr. Owen Harris"', "Braund Owen Harris"),
    "metaschema.json": ('"title": "Core schema meta-schema"', "Core schema meta-schema"),
}


def cli(ckpt: Path, data: Path, *args: str) -> int:
    return main(["--data-dir", str(data), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float32", *args])


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("textformats")
    docs = root / "project"
    docs.mkdir()
    for name, src in SOURCES.items():
        shutil.copy(src, docs / name)
    # a project's dependencies and virtual environment: other people's code, not the user's
    (docs / "node_modules" / "left-pad").mkdir(parents=True)
    (docs / "node_modules" / "left-pad" / "index.js").write_text("module.exports = leftPad;\n")
    (docs / "venv" / "lib").mkdir(parents=True)
    (docs / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (docs / "venv" / "lib" / "site.py").write_text("import os\n")
    assert cli(tiny_checkpoint, root / "data", "index", str(docs)) == 0
    return root, docs


def test_code_csv_and_json_are_indexed_and_dependencies_are_not(indexed):
    root, docs = indexed
    with LatentStore(root / "data" / "store.sqlite") as s:
        rows = {Path(d.path).name: d for d in s.list_documents()}
        assert set(rows) == set(SOURCES)
        assert {n: (d.status, d.type) for n, d in rows.items()} == {
            "decoder.py": ("indexed", "code"), "titanic.csv": ("indexed", "csv"), "metaschema.json": ("indexed", "json")}
        for name, (sentence, query) in KNOWN.items():
            assert sentence in (docs / name).read_text()
            hits = s.search(query, mode="all", limit=3)
            assert hits and Path(hits[0].path).name == name, (name, hits)
            seg = s.get_segments_by_id([hits[0].segment_id])[0]
            assert sentence in seg.text and seg.page is None  # cited by file: these formats have no pages


def test_ask_answers_from_a_csv_and_cites_it(indexed, tiny_checkpoint, capsys):
    root, docs = indexed
    capsys.readouterr()
    assert cli(tiny_checkpoint, root / "data", "ask", "Who was Mr. Owen Harris Braund?", "--scope",
               str(docs / "titanic.csv"), "--mode", "rag", "--max-new-tokens", "4", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["citations"] and {Path(c["path"]).name for c in answer["citations"]} == {"titanic.csv"}
    # rag picks passages by bm25: the passenger's row is among those read and cited
    assert any("Braund, Mr. Owen Harris" in c["text"] for c in answer["citations"])
    assert all(c["page"] is None for c in answer["citations"])


def test_the_watcher_leaves_dependency_folders_alone(tmp_path):
    sync = FolderSync(None, [tmp_path])
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    assert sync.wanted(tmp_path / "src" / "main.py")
    assert not sync.wanted(tmp_path / "web" / "node_modules" / "react" / "index.js")
    assert not sync.wanted(tmp_path / "venv" / "lib" / "python3.11" / "os.py")
    assert not sync.wanted(tmp_path / "pkg" / "__pycache__" / "mod.py")
