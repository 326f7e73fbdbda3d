"""The console entry point and settings."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app.cli import main
from app.settings import ENV_HOME, Settings
from lclm_core.device import resolve

BIN = Path(sys.executable).parent


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "check" in out and "generate" in out and "--data-dir" in out


def test_installed_console_script_runs():
    exe = BIN / "lclm-docs"
    if not exe.exists():
        pytest.skip("package not installed in this interpreter's environment")
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "usage: lclm-docs" in r.stdout


def test_data_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_HOME, str(tmp_path / "env"))
    assert Settings.from_env().data_dir == tmp_path / "env"
    assert Settings.from_env(tmp_path / "flag").data_dir == tmp_path / "flag"
    monkeypatch.delenv(ENV_HOME)
    assert Settings.from_env().data_dir.name == "latent-context-docs"


def test_device_and_dtype_resolution():
    p = resolve("cpu", "float32")
    assert p.device.type == "cpu" and p.dtype == torch.float32
    assert resolve("auto", "auto").device.type in ("cpu", "cuda", "mps")
    with pytest.raises(ValueError, match="unknown dtype"):
        resolve("cpu", "int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve("cuda", "auto")


def test_bad_device_is_one_line_not_a_traceback(capsys):
    code = main(["--device", "cpu", "--dtype", "int3", "check"])
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown dtype" in err and "Traceback" not in err


@pytest.mark.integration
def test_check_command_on_the_default(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "app.cli", "--data-dir", str(tmp_path), "check"],
        capture_output=True, text=True, timeout=600, cwd=Path(__file__).parents[1],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    assert r.returncode == 0, r.stderr
    assert "sha256 verified" in r.stdout and "compressor: N=8, " in r.stdout and "generation:" in r.stdout
