"""`lclm-docs index --ray` on a real local Ray cluster (2 CPUs), against the local indexer.

The folder holds documents nobody here wrote (Debian's license texts, R-intro.pdf) and one broken
PDF. The store Ray produces must equal the local indexer's: documents, error rows, segments,
fingerprints, and latents within float tolerance. A worker killed mid-run (SIGKILL by pid) must leave
no half-indexed document, and a re-run must complete.
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psutil
import pytest
import ray

from app.cli import main
from app.ray_index import RayOptions, index_store
from app.services import IndexingService, load_compressor_only
from app.settings import Settings
from latent_store import LatentStore

LICENSES = Path("/usr/share/common-licenses")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local cluster for the module (each start costs seconds on 2 cores); runs join it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def folder(root: Path, r_intro: Path) -> Path:
    docs = root / "docs"
    docs.mkdir(parents=True)
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "Artistic", "LGPL-2.1", "GFDL-1.3"):
        shutil.copy(LICENSES / name, docs / f"{name}.txt")
    shutil.copy(r_intro, docs / "R-intro.pdf")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.7\nthis is not a PDF body\n")
    return docs


def settings(data: Path, ckpt: Path) -> Settings:
    return Settings(data_dir=data, device="cpu", dtype="float32", checkpoint=str(ckpt))


def cli(ckpt: Path, data: Path, *args: str) -> int:
    return main(["--data-dir", str(data), "--checkpoint", str(ckpt), "--device", "cpu", "--dtype", "float32", *args])


def content(path: Path) -> dict:
    """By file name: the document row's fields, its error, and (segment fields, latents as float32)."""
    with LatentStore(path) as s:
        fps = list(s.stats().latents_by_fingerprint)
        assert len(fps) <= 1
        out = {}
        for d in s.list_documents():
            segs = s.get_segments(d.id)
            lats = s.get_latents([g.id for g in segs], fps[0]) if fps else [None] * len(segs)
            out[Path(d.path).name] = (
                (d.status, d.error, d.sha256, d.size, d.type, d.page_count, d.n_segments),
                [(g.ordinal, g.page, g.char_start, g.char_end, g.n_tokens, g.sha256) for g in segs],
                [None if lat is None else (lat.shape, lat.dtype, np.frombuffer(lat.payload, np.float16).astype(np.float32))
                 for lat in lats])
        return {"fingerprints": fps, "documents": out}


def assert_same_store(a: Path, b: Path) -> None:
    ca, cb = content(a), content(b)
    assert ca["fingerprints"] == cb["fingerprints"] and len(ca["fingerprints"]) == 1
    assert ca["documents"].keys() == cb["documents"].keys()
    for name, (row, segs, lats) in ca["documents"].items():
        row_b, segs_b, lats_b = cb["documents"][name]
        assert row == row_b, name
        assert segs == segs_b, name
        for x, y in zip(lats, lats_b):
            assert x[:2] == y[:2]
            # batches of other sizes pad differently: the same latents up to float16 rounding
            np.testing.assert_allclose(x[2], y[2], rtol=2e-2, atol=2e-2)


@pytest.fixture(scope="module")
def local(tmp_path_factory, tiny_checkpoint, r_intro_pdf):
    """The folder, indexed by the local indexer: the reference."""
    root = tmp_path_factory.mktemp("ray")
    docs = folder(root, r_intro_pdf)
    assert cli(tiny_checkpoint, root / "local", "index", str(docs)) == 0
    return root, docs


def test_index_on_ray_equals_the_local_indexer(local, tiny_checkpoint, tmp_path, capsys):
    root, docs = local
    capsys.readouterr()
    assert cli(tiny_checkpoint, tmp_path / "ray", "index", "--ray", "--actors", "2", str(docs)) == 0
    out = capsys.readouterr().out
    assert "8 document(s) to index on Ray" in out
    assert "indexed  " + str(docs / "R-intro.pdf") in out and "error    " + str(docs / "broken.pdf") in out
    assert "done: 8 documents (1 not indexed)" in out and "tok/s" in out
    assert_same_store(root / "local" / "store.sqlite", tmp_path / "ray" / "store.sqlite")
    with LatentStore(tmp_path / "ray" / "store.sqlite") as s:
        assert s.get_document(str(docs / "broken.pdf")).error  # the same reason as the local indexer's (compared)

    # a second run finds nothing to do; an edited file is indexed again, its unchanged segments reused
    capsys.readouterr()
    (docs / "Artistic.txt").write_text((docs / "Artistic.txt").read_text() + "\n\nOne more paragraph, added later.\n")
    try:
        assert cli(tiny_checkpoint, tmp_path / "ray", "index", "--ray", str(docs)) == 0
        out = capsys.readouterr().out
        assert "1 changed" in out and "2 document(s) to index on Ray" in out  # the edit, and the broken PDF again
        assert "reused" in out and "indexed  " + str(docs / "Artistic.txt") in out
    finally:
        shutil.copy(LICENSES / "Artistic", docs / "Artistic.txt")


def encoder_pids() -> list[int]:
    return [p.pid for p in psutil.process_iter(["cmdline"])
            if "MapBatches(_Encoder)" in " ".join(p.info["cmdline"] or [])]


@pytest.mark.parametrize("restarts", [None, 0], ids=["ray-restarts-it", "run-breaks-off"])
def test_a_worker_killed_mid_run_leaves_no_half_document_and_a_rerun_completes(local, tiny_checkpoint, tmp_path,
                                                                               restarts):
    root, docs = local
    many = tmp_path / "many"
    many.mkdir()
    for i in range(12):  # distinct long files, each work of its own: the kill comes while most are still to do
        for name in ("GPL-3", "LGPL-2.1"):
            (many / f"{i:02d}-{name}.txt").write_text(f"Copy {i} of {name}.\n\n" + (LICENSES / name).read_text())
    s = settings(tmp_path / "data", tiny_checkpoint)
    comp = load_compressor_only(s)
    killed: list[int] = []

    def kill_after_first_document(p):
        if p.outcome is not None and p.outcome.status == "indexed" and not killed:
            for pid in encoder_pids():
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

    with LatentStore(s.store_path) as store:
        ids = IndexingService.create(store, comp, [many]).scan()
        assert len(ids) == 24
        report = index_store(store, s, comp.fingerprint, ids,
                             options=RayOptions(actors=1, docs_per_batch=1, max_restarts=restarts),
                             callbacks=[kill_after_first_document])
        assert killed, "an encoder worker was running and was killed"
        if restarts == 0:  # nothing brings the worker back: the run stops, says why, and leaves work
            assert report.error and report.left > 0
        else:  # Ray Data restarts the actor and retries its batch
            assert report.error is None and report.indexed == 24
        # Ray may restart the actor and finish, or the run breaks off: either way no document is half there
        for d in store.list_documents():
            segs = store.get_segments(d.id)
            lats = store.get_latents([g.id for g in segs], comp.fingerprint)
            if d.status == "indexed":
                assert segs and all(lat is not None for lat in lats), d.path
            else:
                assert d.status == "pending" and not segs, (d.path, d.status)
        assert report.indexed + report.left == 24 and report.indexed >= 1

        again = index_store(store, s, comp.fingerprint, [d.id for d in store.documents_needing_work(comp.fingerprint)],
                            options=RayOptions(actors=1))
        assert again.error is None and again.indexed == report.left
        assert {d.status for d in store.list_documents()} == {"indexed"}
    assert cli(tiny_checkpoint, tmp_path / "local", "index", str(many)) == 0
    assert_same_store(tmp_path / "local" / "store.sqlite", s.store_path)


def test_ray_writes_shards_directly_and_they_import_as_the_local_index(local, tiny_checkpoint, tmp_path, capsys):
    root, docs = local
    out = tmp_path / "shards"
    assert cli(tiny_checkpoint, tmp_path / "unused", "index", "--ray", "--shards", str(out), str(docs)) == 0
    assert "found 8 file(s)" in capsys.readouterr().out
    first = sorted(out.glob("*.parquet"))
    assert first
    assert not (tmp_path / "unused" / "store.sqlite").exists(), "no store between Ray and the shards"
    # a re-run finds every file already in the shards (the broken PDF is tried again, and fails again)
    assert cli(tiny_checkpoint, tmp_path / "unused", "index", "--ray", "--shards", str(out), str(docs)) == 0
    assert "found 8 file(s)" in capsys.readouterr().out and sorted(out.glob("*.parquet")) == first

    assert cli(tiny_checkpoint, tmp_path / "b", "import", str(out), "--folder", str(docs)) == 0
    assert "imported 7 documents" in capsys.readouterr().out
    a, b = content(root / "local" / "store.sqlite"), content(tmp_path / "b" / "store.sqlite")
    assert b["documents"].pop("broken.pdf")[0][0] == "pending"  # never in a shard: the indexer says why
    a["documents"].pop("broken.pdf")
    for name, (row, segs, lats) in a["documents"].items():
        assert b["documents"][name][:2] == (row, segs)


def test_without_ray_nothing_imports_it(tiny_checkpoint, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(LICENSES / "BSD", docs / "BSD.txt")
    code = ("import sys; from ui.cli import main; "
            f"rc = main(['--data-dir', {str(tmp_path / 'd')!r}, '--checkpoint', {str(tiny_checkpoint)!r}, "
            f"'--device', 'cpu', 'index', {str(docs)!r}]); "
            "assert rc == 0, rc; assert 'ray' not in sys.modules, 'ray imported'; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


def test_a_missing_ray_is_one_line_that_says_how_to_install_it(tiny_checkpoint, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert cli(tiny_checkpoint, tmp_path, "index", "--ray", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "pip install 'latent-context-docs[ray]'" in err and "Traceback" not in err
