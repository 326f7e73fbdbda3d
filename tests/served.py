"""A launched app for the UI tests: ``lclm-docs serve`` in a subprocess, as a user runs it.

The tests talk to it over HTTP only (gradio_client, Playwright), so what
they pin down is what a user's browser gets, not what a Python call returns.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

READY = re.compile(r"ready at (http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Served:
    proc: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: uvicorn and the runtime shut down
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode

    def output(self) -> str:
        return "".join(self.log)


def serve(data_dir: Path, *args: str, folders: tuple[Path, ...] = (), timeout: float = 300.0,
          env: dict | None = None) -> Served:
    """Start ``lclm-docs serve`` and return once it prints its URL (raises with its output if it dies)."""
    cmd = [sys.executable, "-c", "import sys; from ui.cli import main; sys.exit(main())",
           "--data-dir", str(data_dir), *args, "serve", "--port", str(free_port())]
    for f in folders:
        cmd += ["--folder", str(f)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    served = Served(proc, "")
    found = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.log.append(line)
            m = READY.search(line)
            if m and not found.is_set():
                served.url = m.group(1)
                found.set()

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not found.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            served.stop()
            raise AssertionError(f"lclm-docs serve did not start:\n{served.output()[-4000:]}")
    return served


OPS = "The Zorblax cluster listens on port 7431.\n"


def serve_tiny(root: Path, checkpoint: Path, files: dict[str, str] | None = None, env: dict | None = None) -> Served:
    """``serve`` on the tiny checkpoint (CPU, fp32) over ``root/docs`` holding ``files`` (default: ops.txt)."""
    docs = (root / "docs").resolve()
    docs.mkdir(exist_ok=True)
    for name, text in (files or {"ops.txt": OPS}).items():
        (docs / name).write_text(text)
    return serve(root / "data", "--checkpoint", str(checkpoint), "--device", "cpu", "--dtype", "float32",
                 folders=(docs,), env=env)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: a process' peak resident set so far (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def write_notes(folder: Path, n: int, start: int = 0) -> None:
    """``n`` small generated text files (distinct text), note-00000.txt ..."""
    from data import prose

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        (folder / f"note-{i:05d}.txt").write_text(prose(i, paragraphs=2, sentences=3))
