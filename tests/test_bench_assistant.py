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


def test_load_and_startup_benchmarks_run_in_smoke_mode():
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "load.py"), "--smoke"], capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| 20 files indexed |" in done.stdout and "server exit status 0" in done.stdout
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "startup.py"), "--repeats", "1", "--no-cold"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| warm |" in done.stdout
