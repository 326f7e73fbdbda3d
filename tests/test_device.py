"""Placement: --dtype auto on a CPU picks bf16 only where it is measured to be faster."""

import pytest
import torch

from lclm_core import device


@pytest.fixture(autouse=True)
def fresh_probe():
    device.cpu_has_fast_bf16.cache_clear()
    yield
    device.cpu_has_fast_bf16.cache_clear()


def probe_times(monkeypatch, fp32: float, bf16: float) -> list:
    calls = []

    def fake(dtype, size=1024, reps=3):
        calls.append(dtype)
        return {torch.float32: fp32, torch.bfloat16: bf16}[dtype]
    monkeypatch.setattr(device, "_onednn_has_bf16", lambda: True)
    monkeypatch.setattr(device, "_matmul_seconds", fake)
    return calls


def test_bf16_is_chosen_where_it_is_clearly_faster(monkeypatch):
    probe_times(monkeypatch, fp32=0.010, bf16=0.003)
    assert device.resolve("cpu", "auto").dtype == torch.bfloat16


def test_native_bf16_that_runs_slower_than_fp32_is_not_chosen(monkeypatch):
    # The EPYC of an earlier session: oneDNN reported bf16, which ran at 149 GFLOP/s against fp32's 226.
    probe_times(monkeypatch, fp32=0.0095, bf16=0.0144)
    assert device.resolve("cpu", "auto").dtype == torch.float32


def test_a_marginal_win_is_not_enough(monkeypatch):
    probe_times(monkeypatch, fp32=0.010, bf16=0.009)
    assert device.resolve("cpu", "auto").dtype == torch.float32


def test_no_native_bf16_means_no_probe(monkeypatch):
    calls = probe_times(monkeypatch, fp32=0.010, bf16=0.001)
    monkeypatch.setattr(device, "_onednn_has_bf16", lambda: False)
    assert device.resolve("cpu", "auto").dtype == torch.float32
    assert calls == []


def test_the_probe_runs_once_per_process(monkeypatch):
    calls = probe_times(monkeypatch, fp32=0.010, bf16=0.003)
    for _ in range(3):
        device.resolve("cpu", "auto")
    assert calls == [torch.float32, torch.bfloat16]


def test_an_explicit_dtype_skips_the_probe(monkeypatch):
    calls = probe_times(monkeypatch, fp32=0.010, bf16=0.003)
    assert device.resolve("cpu", "float32").dtype == torch.float32
    assert calls == []


def test_the_real_probe_times_both_precisions():
    assert device._matmul_seconds(torch.float32, size=64, reps=1) > 0
    assert device._matmul_seconds(torch.bfloat16, size=64, reps=1) > 0
    assert isinstance(device.cpu_has_fast_bf16(), bool)
