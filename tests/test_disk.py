"""A full disk and a read-only data directory: a clear message, no corruption, and recovery once fixed.

The data directory is a small tmpfs mounted for the test (root only; where
mounting is not allowed the tests skip, saying so).
"""

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import data
from app.cli import main
from latent_store import LatentStore
from test_crash import check_no_half_indexed

ROOT = Path(__file__).resolve().parents[1]


def mount_tmpfs(where: Path, size: str) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "mounting a small tmpfs needs root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True,
                       text=True)
    return None if r.returncode == 0 else f"cannot mount a tmpfs here: {r.stderr.strip()}"


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    why = mount_tmpfs(where, "4m")
    if why:
        pytest.skip(why)
    yield where
    subprocess.run(["umount", "-l", str(where)], check=False)


def index(data_dir: Path, folder: Path) -> subprocess.CompletedProcess:
    """``lclm-docs index`` with the fake compressor (latents 256 wide: the disk fills quickly)."""
    code = ("import sys, data, app.services as s; "
            "s.load_compressor = lambda settings, ratio=None: data.FakeCompressor(dim=256); "
            "from app.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    return subprocess.run([sys.executable, "-c", code, "--data-dir", str(data_dir), "index", str(folder)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)


def test_a_full_disk_stops_indexing_with_a_message_and_the_store_stays_sound(small_disk, folder):
    for i in range(60):
        (folder / f"d{i:02d}.txt").write_text(data.prose(i, paragraphs=8, sentences=5))
    r = index(small_disk, folder)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "disk" in out and "full" in out, out[-2000:]
    assert "Traceback" not in out
    by_status = check_no_half_indexed(small_disk / "store.sqlite")  # integrity ok, no document half there
    assert by_status.get("indexed", 0) > 0 and set(by_status) <= {"indexed", "pending", "indexing"}  # none failed
    # once there is room, the next run finishes the job
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    r = index(small_disk, folder)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    with LatentStore(small_disk / "store.sqlite") as store:
        assert {d.status for d in store.list_documents()} == {"indexed"} and store.integrity_check() == "ok"


def test_a_read_only_data_directory_is_a_message(small_disk, folder, capsys):
    (folder / "a.txt").write_text("Some text.\n")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert main(["--data-dir", str(small_disk / "state"), "status"]) == 0  # reading nothing is fine
    capsys.readouterr()
    assert main(["--data-dir", str(small_disk / "state"), "index", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "read-only" in err and str(small_disk) in err and "Traceback" not in err
