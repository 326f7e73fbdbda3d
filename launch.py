#!/usr/bin/env python3
"""Set up Latent Context Docs in a virtual environment and start it.

Run this with the Python you have (3.10 or newer); it needs nothing beyond the
standard library, a C/C++ compiler and the package registries:

    python3 launch.py                      # install if needed, then start the app
    python3 launch.py --setup-only --extras test
    python3 launch.py --folder ~/papers --open -- --verbose

Why a launcher: the right torch build depends on the machine (PyPI's default
Linux x86-64 / Windows wheel pulls a multi-GB CUDA stack even where there is no
NVIDIA GPU), so torch is installed first, chosen by what this machine has, and
only then the package itself (whose dependency ``torch>=...`` is then already
satisfied). Every decision is a pure function of the platform facts so that it
can be unit-tested (tests/test_launch.py); the side effects live in small
functions around them.

Every failure a user can foresee ends in one line saying what to do and a
non-zero exit status, never a traceback.
"""

# Keep this module parseable by old Pythons so that they get the version message
# below instead of a SyntaxError: no match statements, annotations postponed.
from __future__ import annotations

import argparse
import errno
import hashlib
import importlib.util
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Iterable, Sequence

MIN_PYTHON = (3, 10)
ROOT = Path(__file__).resolve().parent
DIST_NAME = "latent-context-docs"
CONSOLE_SCRIPT = "lclm-docs"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7860  # Gradio's usual port; the app's UI is a Gradio app
# A CPU build of torch that pip may find locally (a find-links directory of
# wheels); pinned with its local label so that nothing but a CPU wheel matches.
LOCAL_CPU_TORCH = "2.13.0+cpu"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
GIB = 1024**3
DISK_NEED_BASE = 3 * GIB  # CPU torch + the app's dependencies + the llama.cpp build
DISK_NEED_CUDA_EXTRA = 5 * GIB  # the CUDA libraries that come with a GPU torch
STAMP_NAME = ".lclm-docs-install.json"  # in the venv: what launch.py installed last
# The serve/check output and the help check import the app (and torch): give them time.
HELP_TIMEOUT_S = 300


class LaunchError(Exception):
    """A failure the user can act on: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    """Progress for the user; stderr so that stdout stays the app's."""
    print(f"launch: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------


@dataclass
class Options:
    """Everything the command line asked for."""

    venv: Path
    extras: list[str] = field(default_factory=list)
    setup_only: bool = False
    data_dir: Path | None = None
    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    folders: list[Path] = field(default_factory=list)
    open_browser: bool = False
    reinstall: bool = False
    ocr: bool = False
    passthrough: list[str] = field(default_factory=list)


def split_passthrough(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split at the first ``--``: before it are ours, after it go to the app unchanged.

    Done by hand rather than by argparse so that app options that look like
    ours (``--port``) are passed through, not parsed.
    """
    argv = list(argv)
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1 :]
    return argv, []


_EXTRA_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_extras(text: str) -> list[str]:
    """``"test, bench"`` -> ``["test", "bench"]`` (order kept, duplicates and blanks dropped).

    Raises ValueError on a name pip would reject, so the user hears it before
    any install starts.
    """
    out: list[str] = []
    for part in text.split(","):
        name = part.strip()
        if not name:
            continue
        if not _EXTRA_RE.match(name):
            raise ValueError(f"not a valid extra name: {name!r}")
        if name not in out:
            out.append(name)
    return out


def _port(text: str) -> int:
    """argparse type: a TCP port number."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 1-65535, got {value}")
    return value


def _extras(text: str) -> list[str]:
    """argparse type for --extras."""
    try:
        return parse_extras(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser(root: Path = ROOT) -> argparse.ArgumentParser:
    """The launcher's own options; the app's go after ``--``."""
    p = argparse.ArgumentParser(
        prog="launch.py",
        description="Install Latent Context Docs into a virtual environment (torch first, "
        "the right build for this machine) and start it.",
        epilog="Everything after -- is passed to the app command unchanged.",
    )
    p.add_argument("--venv", type=Path, default=root / ".venv",
                   help="virtual environment to use or create (default: .venv beside launch.py)")
    p.add_argument("--extras", type=_extras, default=[], metavar="LIST",
                   help="comma-separated optional extras of the package to install, e.g. test,bench")
    p.add_argument("--setup-only", action="store_true", help="install, then exit without starting the app")
    p.add_argument("--data-dir", type=Path, help="where the app keeps its state (passed to the app)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port of the chat UI (default {DEFAULT_PORT})")
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address the UI listens on (default {DEFAULT_HOST})")
    p.add_argument("--folder", dest="folders", action="append", type=Path, default=[], metavar="PATH",
                   help="a folder of documents to watch (repeatable)")
    p.add_argument("--open", dest="open_browser", action="store_true", help="open the UI in a browser")
    p.add_argument("--reinstall", action="store_true",
                   help="choose and install torch again and re-install the package, even if present")
    p.add_argument("--ocr", action="store_true",
                   help="install Tesseract OCR (scanned PDFs, images) with the system's package manager: apt "
                        "(as root or with sudo), Homebrew or winget")
    return p


def parse_args(argv: Sequence[str], root: Path = ROOT) -> Options:
    """Command line -> Options. argparse exits with status 2 and a usage line on bad input."""
    own, passthrough = split_passthrough(argv)
    ns = build_parser(root).parse_args(own)
    return Options(
        venv=ns.venv, extras=ns.extras, setup_only=ns.setup_only, data_dir=ns.data_dir,
        port=ns.port, host=ns.host, folders=ns.folders, open_browser=ns.open_browser,
        reinstall=ns.reinstall, ocr=ns.ocr, passthrough=passthrough,
    )


# --------------------------------------------------------------------------
# Pure decisions (platform facts in, plans out)
# --------------------------------------------------------------------------


def tesseract_install(system: str, tools: Iterable[str], is_root: bool) -> list[str] | None:
    """The command that installs Tesseract (with English) here, or None where we know none. ``tools``:
    the package managers on PATH (apt-get, sudo, brew, winget)."""
    tools = set(tools)
    if system == "Linux" and "apt-get" in tools:
        apt = ["apt-get", "install", "-y", "--no-install-recommends", "tesseract-ocr", "tesseract-ocr-eng"]
        return apt if is_root else (["sudo", "-n", *apt] if "sudo" in tools else None)
    if system == "Darwin" and "brew" in tools:
        return ["brew", "install", "tesseract"]
    if system == "Windows" and "winget" in tools:
        return ["winget", "install", "-e", "--id", "UB-Mannheim.TesseractOCR", "--accept-package-agreements",
                "--accept-source-agreements"]
    return None


def tesseract_hint(system: str) -> str:
    """How a user installs Tesseract by hand on this platform."""
    if system == "Darwin":
        return "brew install tesseract"
    if system == "Windows":
        return "winget install UB-Mannheim.TesseractOCR (or the installer from github.com/UB-Mannheim/tesseract)"
    return "sudo apt install tesseract-ocr (Fedora: sudo dnf install tesseract; Arch: sudo pacman -S tesseract)"


@dataclass(frozen=True)
class TorchPlan:
    """One way to install torch: pip arguments (after ``python -m pip``) and why."""

    why: str
    pip_args: tuple[str, ...]
    cuda: bool = False  # whether this pulls the CUDA libraries (disk estimate)


def is_x86_64(machine: str) -> bool:
    """platform.machine() spells x86-64 differently per OS (x86_64, AMD64, x64)."""
    return machine.lower() in ("x86_64", "amd64", "x64")


def torch_install_plans(has_nvidia_gpu: bool, system: str, machine: str) -> list[TorchPlan]:
    """Which pip commands to try, in order, to install torch on this machine.

    - NVIDIA GPU: PyPI's default torch (its Linux build carries CUDA).
    - macOS, or Linux on a non-x86-64 CPU: PyPI's default torch is CPU-only there.
    - x86-64 Linux/Windows without a GPU: PyPI's default would be a multi-GB CUDA
      build, which is a bug here. First a CPU wheel pip can find locally (its
      find-links config may point at a wheel directory; the ``+cpu`` local label
      matches no PyPI file, so this never downloads a CUDA build and fails fast
      where there is no such wheel), then PyTorch's own CPU index.
    """
    if has_nvidia_gpu:
        return [TorchPlan("an NVIDIA GPU is present: torch with CUDA from PyPI", ("install", "torch"), cuda=True)]
    if system == "Darwin" or (system == "Linux" and not is_x86_64(machine)):
        return [TorchPlan(f"{system} {machine}: PyPI's torch is CPU-only here", ("install", "torch"))]
    return [
        TorchPlan(f"no NVIDIA GPU: a local CPU wheel torch=={LOCAL_CPU_TORCH}, if pip can find one",
                  ("install", f"torch=={LOCAL_CPU_TORCH}")),
        TorchPlan(f"no NVIDIA GPU: the CPU build from {TORCH_CPU_INDEX}",
                  ("install", "torch", "--index-url", TORCH_CPU_INDEX)),
    ]


def nvidia_smi_lists_gpu(output: str) -> bool:
    """``nvidia-smi -L`` prints one ``GPU 0: <name> (UUID: ...)`` line per GPU."""
    return any(re.match(r"^GPU \d+:", line.strip()) for line in output.splitlines())


def venv_executable(venv: PurePath, name: str, windows: bool) -> PurePath:
    """Where a venv keeps its programs: bin/NAME on POSIX, Scripts\\NAME.exe on Windows."""
    if windows:
        return venv / "Scripts" / f"{name}.exe"
    return venv / "bin" / name


def compiler_problem(system: str, found: Iterable[str], macos_cli_tools: bool = True) -> str | None:
    """Why llama-cpp-python (built from source) cannot compile here, or None.

    ``found`` names the compiler programs present on PATH; on macOS ``cc`` is a
    stub until the Command Line Tools are installed, hence ``macos_cli_tools``.
    On Windows a missing Visual C++ shows up in pip's own output instead.
    """
    have = set(found)
    if system == "Linux":
        c_ok = bool(have & {"cc", "gcc", "clang"})
        cxx_ok = bool(have & {"c++", "g++", "clang++"})
        if c_ok and cxx_ok:
            return None
        missing = " and ".join(n for n, ok in (("C", c_ok), ("C++", cxx_ok)) if not ok)
        return (f"no {missing} compiler found (llama-cpp-python is compiled from source). Install one, then "
                "re-run: Debian/Ubuntu: sudo apt install build-essential; Fedora: sudo dnf install gcc gcc-c++; "
                "Arch: sudo pacman -S base-devel; Alpine: apk add build-base")
    if system == "Darwin" and not macos_cli_tools:
        return ("the Xcode Command Line Tools are missing (llama-cpp-python is compiled from source). "
                "Run: xcode-select --install, then re-run")
    return None


def disk_problem(free_bytes: int, need_bytes: int, where: Path) -> str | None:
    """A clear message when the disk holding the venv is too full to install into."""
    if free_bytes >= need_bytes:
        return None
    return (f"not enough disk space at {where}: {free_bytes / GIB:.1f} GB free, about "
            f"{need_bytes / GIB:.0f} GB needed; free some space or pass --venv on another disk")


def disk_need(install_torch: bool, cuda: bool) -> int:
    """Rough bytes an install takes (downloads, build and the installed files)."""
    return DISK_NEED_BASE + (DISK_NEED_CUDA_EXTRA if install_torch and cuda else 0)


def project_fingerprint(pyproject: bytes, root: Path) -> str:
    """What the package install depends on: its declared dependencies and where it lives."""
    return hashlib.sha256(pyproject + b"\0" + str(root).encode()).hexdigest()


def package_install_needed(stamp: dict | None, fingerprint: str, extras: Sequence[str],
                           script_exists: bool, reinstall: bool) -> bool:
    """Skip ``pip install -e`` when nothing it depends on changed since it last succeeded.

    Why: even a no-op editable install re-resolves every dependency and builds
    an editable wheel (tens of seconds); a launcher run daily should not.
    """
    if reinstall or not script_exists or not stamp:
        return True
    if stamp.get("fingerprint") != fingerprint:
        return True
    return not set(extras) <= set(stamp.get("extras", []))


def editable_requirement(root: Path, extras: Sequence[str]) -> str:
    """``/path/to/repo[test,bench]``, the argument of ``pip install -e``."""
    return f"{root}[{','.join(extras)}]" if extras else str(root)


def help_lists_subcommand(help_text: str, name: str) -> bool:
    """Whether argparse help lists subcommand ``name``.

    argparse shows subcommands as ``{a,b}`` in usage and/or as indented
    ``  name   help`` rows; matching only those keeps a word in a description
    ("serve" in prose) from counting.
    """
    n = re.escape(name)
    if re.search(r"\{[^}]*\b" + n + r"\b[^}]*\}", help_text):
        return True
    return re.search(r"^\s{2,}" + n + r"(\s|$)", help_text, re.MULTILINE) is not None


def app_command(script: PurePath, opts: Options, has_serve: bool) -> list[str]:
    """The app's command line: ``serve`` with our options, or ``check`` until serve exists.

    ``--data-dir`` is a top-level option of ``lclm-docs`` (argparse wants it
    before the subcommand); the rest belong to ``serve``.
    """
    cmd = [str(script)]
    if opts.data_dir is not None:
        cmd += ["--data-dir", str(opts.data_dir)]
    if not has_serve:
        return cmd + ["check", *opts.passthrough]
    cmd += ["serve", "--host", opts.host, "--port", str(opts.port)]
    for folder in opts.folders:
        cmd += ["--folder", str(folder)]
    if opts.open_browser:
        cmd.append("--open")
    return cmd + list(opts.passthrough)


def port_problem(host: str, port: int) -> str | None:
    """None if ``host:port`` can be listened on now, else a message saying what to do.

    Binding is the honest test (a connect test misses a socket bound but not
    yet listening). SO_REUSEADDR on POSIX, as servers set it, so that
    connections still in TIME_WAIT from a previous run do not count; it never
    lets two sockets listen on one port there. Not on Windows, where it would.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        return f"cannot resolve --host {host}: {e.strerror}"
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        if os.name != "nt":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES, 10048, 10013):  # 100xx: Windows' WSA codes
                return f"port {port} is in use, pass --port (e.g. --port {port + 1})"
            return f"cannot listen on {host}:{port}: {e.strerror or e}"
    return None


# --------------------------------------------------------------------------
# Side effects: processes, files
# --------------------------------------------------------------------------


def run(cmd: Sequence[str], what: str, env: dict | None = None) -> int:
    """Run with output streaming to the terminal; a missing program is a LaunchError."""
    try:
        return subprocess.call(list(cmd), env=env)
    except FileNotFoundError:
        raise LaunchError(f"cannot run {cmd[0]} ({what}): not found") from None
    except OSError as e:
        raise LaunchError(f"cannot run {cmd[0]} ({what}): {e}") from None


def capture(cmd: Sequence[str], timeout: float) -> subprocess.CompletedProcess | None:
    """Run quietly and return the result, or None if it could not run at all."""
    try:
        return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None


def has_nvidia_gpu() -> bool:
    """Whether ``nvidia-smi -L`` lists a GPU (no nvidia-smi: no usable NVIDIA driver)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    r = capture([exe, "-L"], timeout=30)
    return bool(r and r.returncode == 0 and nvidia_smi_lists_gpu(r.stdout))


def macos_cli_tools_present() -> bool:
    """``xcode-select -p`` fails until the Command Line Tools are installed."""
    r = capture(["xcode-select", "-p"], timeout=30)
    return bool(r and r.returncode == 0)


def check_python() -> None:
    """The package needs 3.10+; say so before anything is created."""
    if sys.version_info < MIN_PYTHON:
        want = ".".join(map(str, MIN_PYTHON))
        raise LaunchError(f"Python {want} or newer is needed, this is {platform.python_version()} "
                          f"({sys.executable}); run launch.py with a newer python")


def create_venv(venv: Path, windows: bool) -> Path:
    """Create the venv if missing and return its python.

    The venv module (and its ensurepip, which Debian/Ubuntu split out into
    python3-venv) is checked first, because its own failure is a long message
    that buries the fix.
    """
    py = Path(venv_executable(venv, "python", windows))
    if py.exists():
        check_venv_python(py, venv)
        return py
    if (venv / "pyvenv.cfg").exists():
        raise LaunchError(f"the virtual environment {venv} is broken (no {py}; was the Python it was made "
                          "from removed?): delete it and re-run")
    if venv.exists() and (not venv.is_dir() or any(venv.iterdir())):
        raise LaunchError(f"{venv} exists and is not a virtual environment: pass another --venv")
    if importlib.util.find_spec("venv") is None or importlib.util.find_spec("ensurepip") is None:
        ver = f"{sys.version_info[0]}.{sys.version_info[1]}"
        raise LaunchError(f"this Python has no working 'venv' module (with ensurepip). On Debian/Ubuntu: "
                          f"sudo apt install python3-venv (or python{ver}-venv), then re-run")
    say(f"creating the virtual environment {venv}")
    r = capture([sys.executable, "-m", "venv", str(venv)], timeout=600)
    if r is None or r.returncode != 0 or not py.exists():
        detail = (r.stderr or r.stdout).strip().splitlines()[-1:] if r else ["timed out or could not start"]
        raise LaunchError(f"creating the virtual environment {venv} failed: {' '.join(detail)}")
    return py


def check_venv_python(py: Path, venv: Path) -> None:
    """An existing venv must run and be new enough, or pip fails later with a long story."""
    want = ".".join(map(str, MIN_PYTHON))
    r = capture([str(py), "-c", f"import sys; sys.exit(0 if sys.version_info >= {MIN_PYTHON!r} else 3)"], timeout=60)
    if r is None or r.returncode not in (0, 3):
        raise LaunchError(f"the virtual environment {venv} does not run ({py}); delete it and re-run")
    if r.returncode == 3:
        raise LaunchError(f"the virtual environment {venv} has a Python older than {want}; "
                          "delete it (or pass another --venv) and re-run with a newer python")


def torch_info(py: Path) -> tuple[str, str] | None:
    """(version, CUDA version or "") of the venv's torch, or None if it does not import.

    One marked line, because importing torch may print other things.
    """
    code = "import torch; print('TORCH-INFO', torch.__version__, torch.version.cuda or '-')"
    r = capture([str(py), "-c", code], timeout=600)
    if not r or r.returncode != 0:
        return None
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "TORCH-INFO":
            return parts[1], "" if parts[2] == "-" else parts[2]
    return None


def can_import(py: Path, module: str) -> bool:
    """Whether the venv's python imports ``module``."""
    r = capture([str(py), "-c", f"import {module}"], timeout=300)
    return bool(r and r.returncode == 0)


def pip_env() -> dict:
    """pip's environment: let the llama.cpp build use every core (CMake reads this)."""
    env = dict(os.environ)
    env.setdefault("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 1))
    return env


def pip(py: Path, args: Sequence[str]) -> int:
    """``python -m pip ARGS`` in the venv, output streaming; returns pip's exit status."""
    cmd = [str(py), "-m", "pip", *args]
    say("$ " + " ".join(cmd))
    return run(cmd, "pip", env=pip_env())


def install_torch(py: Path, plans: list[TorchPlan], reinstall: bool) -> None:
    """Try each plan in order until torch imports."""
    if reinstall:
        pip(py, ["uninstall", "-y", "torch"])
    for i, plan in enumerate(plans):
        say(f"installing torch: {plan.why}")
        if pip(py, plan.pip_args) == 0 and torch_info(py):
            return
        if i + 1 < len(plans):
            say("that did not work (expected where there is no such wheel); trying the next way")
    raise LaunchError("installing torch failed (see pip's output above); check the network and re-run "
                      "(with --reinstall if a broken torch is in the venv), or install torch into the venv yourself")


def free_bytes(path: Path) -> tuple[int, Path]:
    """Free space on the disk that will hold ``path`` (its nearest existing ancestor)."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    return shutil.disk_usage(p).free, p


def read_stamp(venv: Path) -> dict | None:
    """What the last successful package install recorded, if anything readable."""
    try:
        data = json.loads((venv / STAMP_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_stamp(venv: Path, fingerprint: str, extras: Sequence[str]) -> None:
    """Record the successful install so the next start can skip it."""
    data = {"fingerprint": fingerprint, "extras": sorted(extras)}
    try:
        (venv / STAMP_NAME).write_text(json.dumps(data), encoding="utf-8")
    except OSError as e:
        say(f"warning: could not write {venv / STAMP_NAME} ({e}); the next start re-checks the install")


def declared_extras(pyproject: Path) -> set[str] | None:
    """The package's optional extras, or None where tomllib (3.11+) is missing."""
    try:
        import tomllib
    except ImportError:
        return None
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return set(data.get("project", {}).get("optional-dependencies", {}))


def compilers_on_path() -> list[str]:
    """The C/C++ compiler programs PATH has."""
    return [n for n in ("cc", "gcc", "clang", "c++", "g++", "clang++") if shutil.which(n)]


# --------------------------------------------------------------------------
# The steps
# --------------------------------------------------------------------------


def validate(opts: Options, root: Path) -> None:
    """Catch mistakes in the command line before anything is installed."""
    if not (root / "pyproject.toml").is_file():
        raise LaunchError(f"no pyproject.toml beside launch.py in {root}: run launch.py from the project checkout")
    known = declared_extras(root / "pyproject.toml")
    unknown = [e for e in opts.extras if known is not None and e not in known]
    if unknown:
        raise LaunchError(f"unknown extra(s) {', '.join(unknown)}; the package has: {', '.join(sorted(known or ())) or 'none'}",
                          code=2)
    for folder in opts.folders:
        if not folder.is_dir():
            raise LaunchError(f"--folder {folder}: no such directory", code=2)


def setup(opts: Options, root: Path, windows: bool) -> Path:
    """Create the venv, install torch then the package, as needed; return the app's script."""
    py = create_venv(opts.venv, windows)
    script = Path(venv_executable(opts.venv, CONSOLE_SCRIPT, windows))

    info = None if opts.reinstall else torch_info(py)
    need_torch = info is None
    pyproject = (root / "pyproject.toml").read_bytes()
    fingerprint = project_fingerprint(pyproject, root)
    need_package = package_install_needed(read_stamp(opts.venv), fingerprint, opts.extras,
                                          script.exists(), opts.reinstall)

    plans: list[TorchPlan] = []
    if need_torch:
        gpu = has_nvidia_gpu()
        plans = torch_install_plans(gpu, platform.system(), platform.machine())
        if gpu and windows:
            say("note: PyPI's torch for Windows is CPU-only; for CUDA, install a build from "
                "https://pytorch.org/get-started/locally/ into the venv, then run launch.py again")
    else:
        say(f"torch {info[0]} is already installed ({'CUDA ' + info[1] if info[1] else 'no CUDA'})")
        if info[1] and not has_nvidia_gpu():
            say("warning: this torch is a CUDA build but no NVIDIA GPU was found; --reinstall installs the CPU build")

    if (need_torch or need_package) and not can_import(py, "pip"):
        raise LaunchError(f"the virtual environment {opts.venv} has no pip (made with --without-pip?): "
                          "delete it and re-run, or pass another --venv")
    need_llama_build = need_package and not can_import(py, "llama_cpp")
    preflight(opts.venv, need_torch, plans, need_package, need_llama_build)

    if need_torch:
        install_torch(py, plans, opts.reinstall)
        info = torch_info(py)
        if info:
            say(f"torch {info[0]} installed ({'CUDA ' + info[1] if info[1] else 'no CUDA'})")
    if need_package:
        install_package(py, root, opts, fingerprint, need_llama_build)
    else:
        say(f"{DIST_NAME} is already installed and up to date (--reinstall to redo)")
    if not script.exists():
        raise LaunchError(f"the install finished but {script} is missing; re-run with --reinstall")
    fetch_viewer(py)
    check_ocr(opts.ocr)
    return script


def check_ocr(install: bool) -> None:
    """Tesseract, which reads scanned PDF pages and images. Optional: without it everything else is read,
    and those files' rows say how to get it. Installed only when asked (--ocr): it is a system package."""
    if shutil.which("tesseract"):
        say("OCR: Tesseract found; scanned PDFs and images are read")
        return
    system = platform.system()
    cmd = tesseract_install(system, [t for t in ("apt-get", "sudo", "brew", "winget") if shutil.which(t)],
                            hasattr(os, "geteuid") and os.geteuid() == 0) if install else None
    if cmd is not None:
        say(f"installing Tesseract OCR: {' '.join(cmd)}")
        r = capture(cmd, timeout=1200)
        if r is not None and r.returncode != 0 and cmd[0] == "apt-get":  # a fresh system has no package lists
            capture(["apt-get", "update"], timeout=600)
            r = capture(cmd, timeout=1200)
        if r is not None and r.returncode == 0 and shutil.which("tesseract"):
            say("OCR: Tesseract installed; scanned PDFs and images are read")
            return
        why = ((r.stderr or r.stdout).strip().splitlines() or ["no message"])[-1] if r is not None else "it did not run"
        say(f"note: installing Tesseract failed ({why})")
    say("note: Tesseract OCR is not installed, so scanned PDFs and images are not read (all else is). "
        f"Install it with: {tesseract_hint(system)}" + ("" if install else "; or re-run with --ocr"))


def fetch_viewer(py: Path) -> None:
    """PDF.js for the document viewer (ui/pdfjs.py: ``npm pack``, sha512-checked, kept in the user cache).

    Optional: without it the app runs, and PDFs open in the browser's own viewer, unmarked.
    A second run finds the files and returns at once.
    """
    r = capture([str(py), "-m", "ui.pdfjs"], timeout=600)
    if r is None or r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["no message"])[-1] if r is not None else "it did not run"
        say(f"note: {why}")


def preflight(venv: Path, need_torch: bool, plans: list[TorchPlan], need_package: bool,
              need_llama_build: bool) -> None:
    """Disk and compiler checks, before a long install that would fail half-way."""
    if not (need_torch or need_package):
        return
    free, where = free_bytes(venv)
    problem = disk_problem(free, disk_need(need_torch, any(p.cuda for p in plans)), where)
    if problem:
        raise LaunchError(problem)
    if need_llama_build:
        system = platform.system()
        problem = compiler_problem(system, compilers_on_path(),
                                   macos_cli_tools_present() if system == "Darwin" else True)
        if problem:
            raise LaunchError(problem)


def install_package(py: Path, root: Path, opts: Options, fingerprint: str, llama_build: bool) -> None:
    """``pip install -e repo[extras]``; torch is already there, so pip keeps it."""
    if llama_build:
        say("installing the package; llama-cpp-python is compiled from source, which may take several "
            "minutes (4-5 on 2 cores) with little output")
        if os.name == "nt":
            say("on Windows that needs Visual Studio Build Tools with the 'Desktop development with C++' workload")
    else:
        say(f"installing {DIST_NAME} and its dependencies")
    if pip(py, ["install", "-e", editable_requirement(root, opts.extras)]) != 0:
        hint = " (if llama-cpp-python failed to build: a C/C++ compiler and network access to fetch CMake " \
               "are needed)" if llama_build else ""
        raise LaunchError(f"installing {DIST_NAME} failed (see pip's output above){hint}")
    write_stamp(opts.venv, fingerprint, opts.extras)


def app_has_serve(script: Path) -> bool:
    """Whether ``lclm-docs --help`` lists ``serve``; a CLI that cannot even print help is an error."""
    r = capture([str(script), "--help"], timeout=HELP_TIMEOUT_S)
    if r is None:
        raise LaunchError(f"{script} --help did not run (timed out or could not start); try --reinstall")
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LaunchError(f"{CONSOLE_SCRIPT} --help failed ({last}); try --reinstall")
    return help_lists_subcommand(r.stdout, "serve")


def start(cmd: list[str], windows: bool) -> int:
    """Hand over to the app: replace this process on POSIX, wait for it on Windows.

    Windows has no real exec (os.execv spawns a child and exits, which breaks
    Ctrl+C and the console), so there it waits and returns the app's status.
    """
    say("$ " + " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    if not windows:
        try:
            os.execv(cmd[0], cmd)
        except OSError as e:
            raise LaunchError(f"cannot start {cmd[0]}: {e}") from None
    return run(cmd, CONSOLE_SCRIPT)


def launch(argv: Sequence[str], root: Path = ROOT) -> int:
    """The whole flow; returns the exit status (or does not return: exec)."""
    check_python()
    opts = parse_args(argv, root)
    validate(opts, root)
    windows = os.name == "nt"
    script = setup(opts, root, windows)
    if opts.setup_only:
        say(f"setup done. Start the app with: {sys.executable} {Path(__file__).name} (or {script})")
        return 0
    has_serve = app_has_serve(script)
    if has_serve:
        problem = port_problem(opts.host, opts.port)
        if problem:
            raise LaunchError(problem)
    else:
        say(f"the chat UI is not built yet ({CONSOLE_SCRIPT} has no 'serve'); running '{CONSOLE_SCRIPT} check' instead")
    return start(app_command(script, opts, has_serve), windows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: turns every foreseeable failure into one line and an exit status."""
    try:
        return launch(sys.argv[1:] if argv is None else argv)
    except LaunchError as e:
        print(f"launch: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("launch: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # a file-system surprise (permissions, a full disk): still one line
        print(f"launch: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
