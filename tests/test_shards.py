"""Latent shards: export a store, import it on "another machine", refuse another compressor's latents.

Real documents nobody here wrote: Debian's license texts and R-intro.pdf (pages), indexed with a
tiny published-layout checkpoint. The second store must answer with citations without one encoder call.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from latent_store import LatentIn, LatentStore, SegmentIn
from latent_store.shards import ShardDocument, ShardError, ShardHeader, ShardWriter, read_documents, read_header
from lclm_core.model import LCLMCompressor

LICENSES = Path("/usr/share/common-licenses")


def real_folder(root: Path, r_intro: Path) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "Artistic"):
        shutil.copy(LICENSES / name, docs / f"{name}.txt")
    shutil.copy(r_intro, docs / "R-intro.pdf")
    return docs


def cli(ckpt: Path, data: Path, *args: str) -> int:
    return main(["--data-dir", str(data), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float32", *args])


def store_content(path: Path) -> dict:
    """path name -> (document fields, [(segment fields, latent bytes)]): what two stores must share."""
    with LatentStore(path) as s:
        fps = list(s.stats().latents_by_fingerprint)
        out = {}
        for d in s.list_documents():
            segs = s.get_segments(d.id)
            lats = s.get_latents([g.id for g in segs], fps[0]) if fps else [None] * len(segs)
            out[Path(d.path).name] = ((d.status, d.sha256, d.size, d.type, d.page_count, d.n_segments),
                                      [((g.ordinal, g.page, g.char_start, g.char_end, g.n_tokens, g.text, g.sha256),
                                        lat.payload if lat else None) for g, lat in zip(segs, lats)])
        return {"fingerprints": fps, "documents": out}


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint, r_intro_pdf):
    root = tmp_path_factory.mktemp("shards")
    docs = real_folder(root / "a", r_intro_pdf)
    assert cli(tiny_checkpoint, root / "a" / "data", "index", str(docs)) == 0
    assert cli(tiny_checkpoint, root / "a" / "data", "export", str(root / "out"), "--shard-mb", "0.5") == 0
    return root, docs


def test_export_writes_self_describing_shards_of_whole_documents(exported, tiny_checkpoint):
    root, docs = exported
    shards = sorted((root / "out").glob("*.parquet"))
    assert len(shards) >= 2, "0.5 MB shards: R-intro's latents alone fill more than one"
    a = store_content(root / "a" / "data" / "store.sqlite")
    seen = {}
    for p in shards:
        h = read_header(p)
        assert h.fingerprint == a["fingerprints"][0] and h.ratio == 4 and len(h.base_model_sha256) == 64
        assert h.documents >= 1 and h.producer.startswith("latent-context-docs")
        for d in read_documents(p):
            assert Path(d.path).name not in seen, "a document is never split across shards"
            seen[Path(d.path).name] = d
    assert seen.keys() == a["documents"].keys()
    pdf = seen["R-intro.pdf"]
    assert pdf.page_count == a["documents"]["R-intro.pdf"][0][4] > 90
    assert [s.page for s in pdf.segments] == [f[0][1] for f in a["documents"]["R-intro.pdf"][1]]
    assert [pdf.latents[s.sha256].payload for s in pdf.segments] == [f[1] for f in a["documents"]["R-intro.pdf"][1]]
    assert not list((root / "out").glob("*.tmp"))


def test_import_indexes_the_same_files_elsewhere_and_answers_without_encoding(exported, tiny_checkpoint, tmp_path,
                                                                              monkeypatch, capsys):
    root, docs = exported
    here = tmp_path / "laptop" / "My Documents"
    shutil.copytree(docs, here)
    (here / "notes.txt").write_text("A file only this laptop has.\n\nIt is not in any shard.\n")
    calls = []
    real = LCLMCompressor.forward_ids
    monkeypatch.setattr(LCLMCompressor, "forward_ids", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))

    data = tmp_path / "data"
    capsys.readouterr()
    assert cli(tiny_checkpoint, data, "import", str(root / "out"), "--folder", str(here)) == 0
    out = capsys.readouterr().out
    assert "imported 5 documents" in out and "0 shard document(s) have no file" in out
    assert calls == []
    b = store_content(data / "store.sqlite")
    a = store_content(root / "a" / "data" / "store.sqlite")
    assert {k: v for k, v in b["documents"].items() if k != "notes.txt"} == a["documents"]
    assert b["documents"]["notes.txt"][0][0] == "pending"  # not in a shard: the indexer's work

    assert cli(tiny_checkpoint, data, "ask", "What does the Apache License say about patents?", "--scope",
               str(here / "Apache-2.0.txt"), "--max-new-tokens", "4", "--json") == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["citations"] and all(c["path"].startswith(str(here)) for c in answer["citations"])
    assert calls == [], "every latent came from the shards"

    # indexing the folder now encodes only the file no shard had
    assert cli(tiny_checkpoint, data, "index", str(here)) == 0
    assert len(calls) >= 1
    with LatentStore(data / "store.sqlite") as s:
        assert {d.status for d in s.list_documents()} == {"indexed"}


def test_a_shard_from_another_compressor_is_refused_before_anything_is_written(exported, tiny_checkpoint, tmp_path,
                                                                               capsys):
    root, docs = exported
    foreign = tmp_path / "foreign"
    seg = SegmentIn(0, "GNU GENERAL PUBLIC LICENSE", n_tokens=5)
    header = ShardHeader("0123456789abcdef0123456789abcdef", "f" * 64, 8)
    with ShardWriter(foreign, header) as w:
        w.add(ShardDocument("e" * 64, "/elsewhere/GPL-3.txt", 35149, 0.0, "text", None, [seg],
                            {seg.sha256: LatentIn(np.zeros((2, 48), np.float16).tobytes(), "float16", (2, 48),
                                                  header.fingerprint, 8)}))
    data = tmp_path / "data"
    capsys.readouterr()
    assert cli(tiny_checkpoint, data, "import", str(root / "out"), str(foreign), "--folder", str(docs)) == 2
    err = capsys.readouterr().err
    assert "holds latents of compressor 0123456789abcdef0123456789abcdef" in err
    assert "Latents only fit the compressor that made them" in err and "Traceback" not in err
    with LatentStore(data / "store.sqlite") as s:
        assert s.stats().latents == 0, "refused before the good shards were written either"


def test_bad_shard_files_are_named_with_their_reason(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1, 2]}), plain)
    with pytest.raises(ShardError, match="plain.parquet: a Parquet file without a latent shard header"):
        read_header(plain)
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 not really")
    with pytest.raises(ShardError, match="junk.parquet: not a readable Parquet file"):
        read_header(junk)
    newer = tmp_path / "newer"
    with ShardWriter(newer, ShardHeader("a" * 32, "b" * 64, 4, version=99)) as w:
        seg = SegmentIn(0, "x", n_tokens=1)
        w.add(ShardDocument("c" * 64, "/x.txt", 1, None, "text", None, [seg],
                            {seg.sha256: LatentIn(b"\0\0" * 4, "float16", (1, 4), "a" * 32, 4)}))
    with pytest.raises(ShardError, match="newer than this release reads"):
        read_header(next(newer.glob("*.parquet")))


def test_a_shard_holds_indexed_documents_of_its_own_compressor_only(tmp_path):
    w = ShardWriter(tmp_path, ShardHeader("a" * 32, "b" * 64, 4))
    seg = SegmentIn(0, "text", n_tokens=1)
    with pytest.raises(ValueError, match="have no latents"):
        w.add(ShardDocument("c" * 64, "/x.txt", 4, None, "text", None, [seg], {}))
    with pytest.raises(ValueError, match="latents from compressor"):
        w.add(ShardDocument("c" * 64, "/x.txt", 4, None, "text", None, [seg],
                            {seg.sha256: LatentIn(b"\0\0" * 4, "float16", (1, 4), "z" * 32, 4)}))
    assert w.close() == [] and not list(tmp_path.iterdir())
