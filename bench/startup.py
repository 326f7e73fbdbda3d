"""Start-up time of README command 1 (``python3 launch.py``): from the command to the UI answering HTTP.

Cases, each run ``--repeats`` times (median reported):
- warm: the venv is installed and the model caches exist (every start after the first);
- cold model cache: an empty user cache directory (``XDG_CACHE_HOME``), so the
  default GGUF is assembled from its package and converted for transformers
  first, as on a new user's first start after the install.

The install itself (fresh clone, new venv) is timed by hand; it depends on
the network and pip's cache far more than on this code.

    python bench/startup.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"ready at (http://\S+)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_start(env_extra: dict[str, str], folder: Path, timeout: float = 900) -> dict[str, float]:
    """Seconds to the 'ready' line and to the first 200 from the page; the app is then stopped."""
    with tempfile.TemporaryDirectory() as data:
        cmd = [sys.executable, str(ROOT / "launch.py"), "--data-dir", data, "--port", str(free_port()),
               "--folder", str(folder)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **env_extra})
        url, ready_s, lines = None, None, []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = READY.search(line)
            if m:
                url, ready_s = m.group(1), time.perf_counter() - t0
                break
            if time.perf_counter() - t0 > timeout:
                break
        if url is None:
            proc.kill()
            raise RuntimeError("no ready line:\n" + "".join(lines[-40:]))
        with urllib.request.urlopen(url, timeout=60) as r:
            assert r.status == 200
        page_s = time.perf_counter() - t0
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
        return {"ready_s": ready_s, "page_s": page_s, "exit": proc.returncode}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-cold", action="store_true", help="skip the cold-model-cache case")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "docs"
        folder.mkdir()
        (folder / "notes.txt").write_text("The Zorblax cluster runs on port 7431.\n")
        cases = [("warm", lambda: {})]
        if not args.no_cold:
            cases.append(("cold model cache", lambda: {"XDG_CACHE_HOME": tempfile.mkdtemp(dir=tmp)}))
        rows = []
        for name, env in cases:
            runs = [one_start(env(), folder) for _ in range(args.repeats)]
            rows.append((name, runs))
    print(f"\nlaunch.py to a working UI, {args.repeats} run(s) each, median (min-max) in seconds; "
          f"{os.cpu_count()} CPU(s)\n")
    print("| case | 'ready' printed | page served | exit status |")
    print("|---|---|---|---|")
    for name, runs in rows:
        def cell(key: str) -> str:
            v = [r[key] for r in runs]
            return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        print(f"| {name} | {cell('ready_s')} | {cell('page_s')} | {sorted({r['exit'] for r in runs})} |")


if __name__ == "__main__":
    main()
