"""The lent-GPU script's plan: stages chained by --init-from, minutes shared out, the right checkpoints brought back."""

import argparse
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpu_run():
    spec = importlib.util.spec_from_file_location("gpu_run", ROOT / "scripts" / "gpu_run.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def start_args(gpu_run, *argv):
    """The `start` subcommand's arguments as its own parser reads them."""
    seen = {}
    orig = gpu_run.cmd_start
    gpu_run.cmd_start = lambda a: seen.setdefault("args", a) and 0
    try:
        gpu_run.main(["start", *argv])
    finally:
        gpu_run.cmd_start = orig
    return seen["args"]


def flag(cmd, name):
    return cmd[cmd.index(name) + 1]


def test_each_ratio_runs_adapter_encoder_qa_then_decoder_each_from_the_last(gpu_run, tmp_path):
    args = start_args(gpu_run, "--minutes", "18", "--ratios", "4", "8")
    steps = gpu_run.plan_steps(args, tmp_path / "in", tmp_path / "runs")
    trains = [s for s in steps if "train" in s]
    assert [(flag(s, "--ratio"), flag(s, "--stage")) for s in trains] == [
        ("4", "adapter"), ("4", "encoder"), ("4", "qa"), ("4", "decoder"),
        ("8", "adapter"), ("8", "encoder"), ("8", "qa"), ("8", "decoder")]
    for prev, nxt in zip(trains, trains[1:]):
        if flag(prev, "--ratio") == flag(nxt, "--ratio"):
            assert flag(nxt, "--init-from") == str(Path(flag(prev, "--out")) / flag(prev, "--stage") / "latest.pt")
    assert sum(float(flag(s, "--max-minutes")) for s in trains) == pytest.approx(18, abs=0.05)
    assert all(flag(s, "--w-interleaved") == "0.5" for s in trains if flag(s, "--stage") == "qa")
    decoder = [s for s in trains if flag(s, "--stage") == "decoder"]
    assert all(flag(s, "--reconstruct-fraction") == "1.0" and flag(s, "--w-raw-keep") == "2.0"
               and flag(s, "--decoder-qa-fraction") == "0.25" for s in decoder)
    evals = [Path(flag(s, "--ckpt")).parent.name for s in steps if "eval" in s]
    assert evals == ["encoder", "decoder", "encoder", "decoder"]  # the later stages' cost beside their start


def test_without_qa_and_decoder_shares_the_plan_ends_at_the_encoder_stage(gpu_run, tmp_path):
    args = start_args(gpu_run, "--ratios", "4", "--qa-share", "0", "--decoder-share", "0")
    steps = gpu_run.plan_steps(args, tmp_path / "in", tmp_path / "runs")
    assert [flag(s, "--stage") for s in steps if "train" in s] == ["adapter", "encoder"]
    assert len([s for s in steps if "eval" in s]) == 1


def test_each_ratios_two_latest_stages_come_back(gpu_run, tmp_path):
    for run, stage in [("n4", "adapter"), ("n4", "encoder"), ("n4", "qa"), ("n4", "decoder"), ("n8", "adapter"),
                       ("n8", "encoder"), ("n16", "adapter")]:
        (tmp_path / run / stage).mkdir(parents=True)
        (tmp_path / run / stage / "latest.pt").write_bytes(b"")
    got = sorted(f"{p.parent.parent.name}/{p.parent.name}" for p in gpu_run.last_stages(tmp_path))
    assert got == ["n16/adapter", "n4/decoder", "n4/qa", "n8/adapter", "n8/encoder"]


def test_the_app_only_plan_trains_the_app_stage_from_the_shipped_parts_and_measures_both(gpu_run, tmp_path):
    args = start_args(gpu_run, "--app-only", "--ratios", "8", "--minutes", "9")
    steps = gpu_run.plan_steps(args, tmp_path / "in", tmp_path / "runs")
    (train,) = [s for s in steps if "train" in s]
    assert flag(train, "--stage") == "app" and float(flag(train, "--max-minutes")) == pytest.approx(9)
    parts = ROOT / "lclm_core" / "default_parts" / "ratio-8"
    assert flag(train, "--init-from") == str(parts) and (parts / "base.json").exists()
    evals = [s for s in steps if "eval" in s]
    assert [flag(s, "--ckpt") for s in evals] == [str(parts), str(tmp_path / "runs" / "n8" / "app" / "latest.pt")]
    assert all(int(flag(s, "--app-examples")) > 0 for s in evals)
