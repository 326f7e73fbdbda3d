#!/usr/bin/env python3
"""Run bench/gpu_scale.py on a lent GPU machine in one call.

The GPU image has torch and transformers but not the store's and the watcher's
packages, and it has no network: their wheels travel in the call (a few hundred
KB), pinned to the versions this checkout's environment runs.

Here (once):     python scripts/gpu_bench.py stage          # .gpu/scale/wheels (ignored by git)
On the device:   carry .gpu/scale;  python3 scripts/gpu_bench.py run [--budget-s 420] [-- extra bench args]
Back here: $OUT/gpu-scale.md, .json, .log and nvidia-smi.txt land in the device tool's files folder;
copy them to bench/results/<date>-gpu-scale/ with the command that made them.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE = ROOT / ".gpu" / "scale"
# What app/, latent_store/ and the bench import that the GPU image lacks (see the device's KINDS.md package list).
PACKAGES = ("sqlite-utils", "sqlite-fts4", "click-default-group", "watchdog", "pypdf", "platformdirs")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64", "any")


def pins() -> list[str]:
    """Each package at the version installed here, so the device runs what the tests ran."""
    return [f"{p}=={md.version(p)}" for p in PACKAGES]


def cmd_stage(args: argparse.Namespace) -> int:
    wheels = STAGE / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    plat = [x for p in PLATFORMS for x in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                    args.python, "--implementation", "cp", *plat, "-d", str(wheels), *pins()], check=True)
    size = sum(f.stat().st_size for f in wheels.iterdir())
    print(f"{wheels.relative_to(ROOT)}: {len(list(wheels.iterdir()))} wheels, {size / 2**20:.1f} MiB")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    out = Path(os.environ.get("OUT") or args.out)
    out.mkdir(parents=True, exist_ok=True)
    site = Path(args.site)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                    "--target", str(site), *map(str, sorted((STAGE / "wheels").glob("*.whl")))], check=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)]), "PYTHONUNBUFFERED": "1",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "true"}
    if shutil.which("nvidia-smi"):
        with open(out / "nvidia-smi.txt", "w") as f:
            subprocess.run(["nvidia-smi"], stdout=f, stderr=subprocess.STDOUT, check=False)
    cmd = [sys.executable, str(ROOT / "bench" / "gpu_scale.py"), "--out", str(out / "gpu-scale"), "--budget-s",
           str(args.budget_s), "--work", args.work, "-v", *args.rest]
    print("+", " ".join(cmd), flush=True)
    with open(out / "gpu-scale.log", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:  # to the call's output tail and to a file that comes back
            sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    shutil.rmtree(args.work, ignore_errors=True)  # ~10 GB of checkpoints: not left on a machine someone else gets
    return rc


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--python", default="3.12", help="the device's Python (KINDS.md: 3.12)")
    r = sub.add_parser("run")
    r.add_argument("--budget-s", type=float, default=420.0)
    r.add_argument("--out", default="gpu-out", help="where the report goes when $OUT is unset")
    r.add_argument("--site", default="/tmp/lcd-site")
    r.add_argument("--work", default="/tmp/lcd-scale")
    r.add_argument("rest", nargs=argparse.REMAINDER, help="after --: more bench/gpu_scale.py arguments")
    args = p.parse_args(argv)
    if getattr(args, "rest", None) and args.rest[0] == "--":
        args.rest = args.rest[1:]
    return {"stage": cmd_stage, "run": cmd_run}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
