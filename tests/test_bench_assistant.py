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
    assert "n/a" not in table
