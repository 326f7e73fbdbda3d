"""The assistant benchmark's smoke mode: a tiny folder, two modes, one table (so the suite cannot rot)."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]


def test_smoke_run_prints_one_row_per_mode(tmp_path):
    out = tmp_path / "report"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "assistant.py"), "--smoke", "--work", str(tmp_path / "w"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.with_suffix(".md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| 600 |")]
    assert [r.split("|")[2].strip() for r in rows] == ["latent", "rag"]
    assert [r.split("|")[4].strip() for r in rows] == ["2", "2"]  # the questions each mode answered
    assert "n/a" not in table
    # The same --work again, its store's latents now from "other parts": the run re-indexes them
    # instead of measuring the raw text the app falls back to for latents it cannot read.
    import sqlite3

    stores = list((tmp_path / "w").glob("data-*-n*/store.sqlite"))
    assert stores
    fingerprints: set[str] = set()
    for db in stores:
        with sqlite3.connect(db) as c:
            fingerprints |= {r[0] for r in c.execute("SELECT DISTINCT fingerprint FROM latents")}
            c.execute("UPDATE latents SET fingerprint = 'made-by-other-parts'")
    (fp,) = fingerprints  # one compressor made every store
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "assistant.py"), "--smoke", "--work", str(tmp_path / "w"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    again = out.with_suffix(".md").read_text()
    assert "n/a" not in again
    latent_rows = [line for line in again.splitlines() if line.startswith("| 600 | latent")]
    assert len(latent_rows) == 1 and latent_rows[0].split("|")[4].strip() == "2"
    for db in stores:
        with sqlite3.connect(db) as c:
            have = c.execute("SELECT COUNT(DISTINCT segment_id) FROM latents WHERE fingerprint = ?", (fp,)).fetchone()[0]
            assert have == c.execute("SELECT COUNT(*) FROM segments").fetchone()[0] > 0  # every segment recompressed


def test_load_and_startup_benchmarks_run_in_smoke_mode():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--smoke"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 20 files indexed |" in done.stdout and "server exit status 0" in done.stdout
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "--repeats", "1", "--no-cold"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| warm |" in done.stdout
