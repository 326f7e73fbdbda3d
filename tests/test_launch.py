"""Unit tests of launch.py's decisions: pure functions fed platform facts.

No network, no installs, no subprocesses: launch.py is a top-level script (not
part of the package), so it is imported from the repository root by path.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_launch():
    """Import launch.py by path; registered in sys.modules first, as dataclasses need."""
    spec = importlib.util.spec_from_file_location("launch", ROOT / "launch.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["launch"] = module
    spec.loader.exec_module(module)
    return module


launch = _load_launch()


def _args(plans):
    return [list(p.pip_args) for p in plans]


# --- torch plan -------------------------------------------------------------


@pytest.mark.parametrize("system,machine", [("Linux", "x86_64"), ("Linux", "aarch64"), ("Windows", "AMD64")])
def test_gpu_gets_pypi_default_torch(system, machine):
    plans = launch.torch_install_plans(True, system, machine)
    assert _args(plans) == [["install", "torch"]]
    assert plans[0].cuda


@pytest.mark.parametrize("machine", ["arm64", "x86_64"])
def test_macos_gets_pypi_default_torch(machine):
    plans = launch.torch_install_plans(False, "Darwin", machine)
    assert _args(plans) == [["install", "torch"]]
    assert not plans[0].cuda


@pytest.mark.parametrize("machine", ["aarch64", "armv7l", "ppc64le"])
def test_non_x86_linux_gets_pypi_default_torch(machine):
    assert _args(launch.torch_install_plans(False, "Linux", machine)) == [["install", "torch"]]


@pytest.mark.parametrize("system,machine", [("Linux", "x86_64"), ("Windows", "AMD64"), ("Linux", "AMD64")])
def test_x86_64_cpu_never_asks_pypi_for_a_cuda_build(system, machine):
    plans = launch.torch_install_plans(False, system, machine)
    assert _args(plans) == [
        ["install", "torch==2.13.0+cpu"],
        ["install", "torch", "--index-url", "https://download.pytorch.org/whl/cpu"],
    ]
    assert not any(p.cuda for p in plans)
    # the local-wheel pin carries the +cpu label, so no CUDA wheel can ever match it
    assert plans[0].pip_args[-1].endswith("+cpu")


def test_nvidia_smi_output_parsing():
    out = "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-1234)\nGPU 1: NVIDIA H100 (UUID: GPU-5678)\n"
    assert launch.nvidia_smi_lists_gpu(out)
    assert not launch.nvidia_smi_lists_gpu("")
    assert not launch.nvidia_smi_lists_gpu("No devices were found\n")
    assert not launch.nvidia_smi_lists_gpu(
        "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.")


def test_disk_need_counts_cuda_only_when_installing_it():
    assert launch.disk_need(True, False) == 3 * launch.GIB
    assert launch.disk_need(True, True) > launch.disk_need(True, False)
    assert launch.disk_need(False, True) == launch.disk_need(False, False)
    assert launch.disk_problem(4 * launch.GIB, 3 * launch.GIB, Path("/x")) is None
    msg = launch.disk_problem(1 * launch.GIB, 3 * launch.GIB, Path("/x"))
    assert msg and "1.0 GB free" in msg and "3 GB" in msg


# --- venv paths -------------------------------------------------------------


def test_venv_executable_posix():
    venv = PurePosixPath("/home/u/proj/.venv")
    assert launch.venv_executable(venv, "python", windows=False) == PurePosixPath("/home/u/proj/.venv/bin/python")
    assert str(launch.venv_executable(venv, "lclm-docs", windows=False)) == "/home/u/proj/.venv/bin/lclm-docs"


def test_venv_executable_windows():
    venv = PureWindowsPath(r"C:\Users\u\proj\.venv")
    assert str(launch.venv_executable(venv, "python", windows=True)) == r"C:\Users\u\proj\.venv\Scripts\python.exe"
    assert str(launch.venv_executable(venv, "lclm-docs", windows=True)) == r"C:\Users\u\proj\.venv\Scripts\lclm-docs.exe"


# --- port -------------------------------------------------------------------


def test_port_in_use_is_reported():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        msg = launch.port_problem("127.0.0.1", port)
    assert msg == f"port {port} is in use, pass --port (e.g. --port {port + 1})"


def test_free_port_is_free():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert launch.port_problem("127.0.0.1", port) is None


# --- command line -----------------------------------------------------------


def test_passthrough_after_double_dash(tmp_path):
    opts = launch.parse_args(["--port", "9000", "--", "--port", "1", "-v"], root=tmp_path)
    assert opts.port == 9000
    assert opts.passthrough == ["--port", "1", "-v"]


def test_only_first_double_dash_splits():
    assert launch.split_passthrough(["--open", "--", "a", "--", "b"]) == (["--open"], ["a", "--", "b"])
    assert launch.split_passthrough(["--open"]) == (["--open"], [])
    assert launch.split_passthrough(["--"]) == ([], [])


def test_defaults(tmp_path):
    opts = launch.parse_args([], root=tmp_path)
    assert opts.venv == tmp_path / ".venv"
    assert (opts.host, opts.port, opts.extras, opts.folders, opts.passthrough) == ("127.0.0.1", 7860, [], [], [])
    assert not (opts.setup_only or opts.open_browser or opts.reinstall or opts.ocr)
    assert opts.data_dir is None


def test_all_options(tmp_path):
    opts = launch.parse_args(
        ["--venv", "/v", "--extras", "test, bench,test", "--setup-only", "--data-dir", "/d", "--port", "8080",
         "--host", "0.0.0.0", "--folder", "/a", "--folder", "/b", "--open", "--reinstall", "--ocr"], root=tmp_path)
    assert opts.venv == Path("/v") and opts.data_dir == Path("/d")
    assert opts.extras == ["test", "bench"]
    assert opts.folders == [Path("/a"), Path("/b")]
    assert (opts.host, opts.port) == ("0.0.0.0", 8080)
    assert opts.setup_only and opts.open_browser and opts.reinstall and opts.ocr


# --- Tesseract (OCR) --------------------------------------------------------


@pytest.mark.parametrize("system, tools, root, first", [
    ("Linux", ["apt-get", "sudo"], True, ["apt-get", "install", "-y"]),
    ("Linux", ["apt-get", "sudo"], False, ["sudo", "-n", "apt-get", "install"]),  # never a password prompt
    ("Darwin", ["brew"], False, ["brew", "install", "tesseract"]),
    ("Windows", ["winget"], False, ["winget", "install", "-e", "--id", "UB-Mannheim.TesseractOCR"]),
])
def test_tesseract_is_installed_by_the_platforms_package_manager(system, tools, root, first):
    cmd = launch.tesseract_install(system, tools, root)
    assert cmd[: len(first)] == first
    if system == "Linux":
        assert cmd[-2:] == ["tesseract-ocr", "tesseract-ocr-eng"]


@pytest.mark.parametrize("system, tools, root", [("Linux", ["apt-get"], False), ("Linux", ["dnf"], True),
                                                 ("Darwin", [], False), ("Windows", [], True)])
def test_without_a_package_manager_we_can_use_tesseract_is_only_reported(system, tools, root):
    assert launch.tesseract_install(system, tools, root) is None
    assert "tesseract" in launch.tesseract_hint(system).lower()


def test_a_missing_tesseract_is_reported_with_the_command_and_the_setup_goes_on(monkeypatch, capsys):
    monkeypatch.setattr(launch.shutil, "which", lambda name: None)
    launch.check_ocr(install=False)
    out = capsys.readouterr()
    said = out.out + out.err
    assert "Tesseract OCR is not installed" in said and "re-run with --ocr" in said


@pytest.mark.parametrize("argv", [["--port", "0"], ["--port", "70000"], ["--port", "x"], ["--extras", "a b"],
                                  ["--nope"]])
def test_bad_command_lines_exit_2(argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        launch.parse_args(argv, root=tmp_path)
    assert e.value.code == 2
    assert "error:" in capsys.readouterr().err


def test_parse_extras():
    assert launch.parse_extras("") == []
    assert launch.parse_extras("test") == ["test"]
    assert launch.parse_extras(" test ,, bench ") == ["test", "bench"]
    with pytest.raises(ValueError):
        launch.parse_extras("test;rm")


def test_editable_requirement():
    assert launch.editable_requirement(Path("/r"), []) == "/r"
    assert launch.editable_requirement(Path("/r"), ["test", "bench"]) == "/r[test,bench]"


# --- app command ------------------------------------------------------------


def test_serve_command(tmp_path):
    opts = launch.parse_args(["--data-dir", "/d", "--port", "8001", "--folder", "/a", "--folder", "/b", "--open",
                              "--", "--verbose"], root=tmp_path)
    cmd = launch.app_command(PurePosixPath("/v/bin/lclm-docs"), opts, has_serve=True)
    assert cmd == ["/v/bin/lclm-docs", "--data-dir", "/d", "serve", "--host", "127.0.0.1", "--port", "8001",
                   "--folder", "/a", "--folder", "/b", "--open", "--verbose"]


def test_check_command_until_serve_exists(tmp_path):
    opts = launch.parse_args(["--port", "8001", "--", "--ratio", "4"], root=tmp_path)
    cmd = launch.app_command(PurePosixPath("/v/bin/lclm-docs"), opts, has_serve=False)
    assert cmd == ["/v/bin/lclm-docs", "check", "--ratio", "4"]


def test_help_lists_subcommand():
    listed = ("usage: lclm-docs [-h] [--data-dir DATA_DIR] COMMAND ...\n\npositional arguments:\n  COMMAND\n"
              "    check     check the embedded default model\n    serve     start the chat UI\n")
    assert launch.help_lists_subcommand(listed, "serve")
    assert launch.help_lists_subcommand("usage: lclm-docs {check,serve,generate} ...", "serve")
    prose = "usage: lclm-docs {check,generate} ...\n  check   models that serve answers; observe\n"
    assert not launch.help_lists_subcommand(prose, "serve")
    assert not launch.help_lists_subcommand("    server   something\n", "serve")


# --- compiler, install stamp -----------------------------------------------


def test_compiler_problem():
    assert launch.compiler_problem("Linux", ["cc", "c++"]) is None
    assert launch.compiler_problem("Linux", ["clang", "clang++"]) is None
    msg = launch.compiler_problem("Linux", [])
    assert msg and "no C and C++ compiler" in msg and "build-essential" in msg
    assert "no C++ compiler" in (launch.compiler_problem("Linux", ["gcc"]) or "")
    assert "xcode-select --install" in (launch.compiler_problem("Darwin", ["cc"], macos_cli_tools=False) or "")
    assert launch.compiler_problem("Darwin", ["cc"], macos_cli_tools=True) is None
    assert launch.compiler_problem("Windows", []) is None


def test_package_install_needed():
    fp = launch.project_fingerprint(b"[project]", Path("/r"))
    stamp = {"fingerprint": fp, "extras": ["test"]}
    assert not launch.package_install_needed(stamp, fp, ["test"], script_exists=True, reinstall=False)
    assert not launch.package_install_needed(stamp, fp, [], script_exists=True, reinstall=False)
    assert launch.package_install_needed(stamp, fp, ["bench"], script_exists=True, reinstall=False)
    assert launch.package_install_needed(stamp, fp, ["test"], script_exists=False, reinstall=False)
    assert launch.package_install_needed(stamp, fp, ["test"], script_exists=True, reinstall=True)
    assert launch.package_install_needed(None, fp, [], script_exists=True, reinstall=False)
    other = launch.project_fingerprint(b"[project]\nchanged", Path("/r"))
    assert launch.package_install_needed(stamp, other, [], script_exists=True, reinstall=False)
    assert launch.project_fingerprint(b"[project]", Path("/elsewhere")) != fp
