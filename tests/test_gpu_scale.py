"""bench/gpu_scale.py: the published shapes, and the whole benchmark run here at tiny size on the CPU.

The GPU run itself needs a lent machine (scripts/gpu_bench.py); what can fail before it gets
there (the checkpoint layout, the app's path through it, a length past the context) fails here.
"""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import gpu_scale  # noqa: E402


def test_the_published_shapes_have_the_published_parameter_counts():
    # Qwen3-Embedding-0.6B and Qwen3-4B, as their model cards count them
    enc = gpu_scale.parameter_count(gpu_scale.qwen3_config(gpu_scale.PUBLISHED["encoder"]), causal_lm=False)
    dec = gpu_scale.parameter_count(gpu_scale.qwen3_config(gpu_scale.PUBLISHED["decoder"]), causal_lm=True)
    assert enc == 595_776_512
    assert dec == 4_022_468_096


def test_the_tokenizer_has_the_regular_ids_then_the_memory_tokens():
    tok = gpu_scale.build_tokenizer(gpu_scale.paragraphs()[:300], 3000)
    assert len(tok) == 3000 + len(gpu_scale.SPECIALS)
    assert tok.convert_tokens_to_ids("<|memory|>") >= 3000
    text = "The quick brown fox, def main(): return 0"
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The benchmark at tiny size: 1k tokens, and 20k, past the tiny decoder's 16k context."""
    out = tmp_path_factory.mktemp("gpu-scale")
    rc = gpu_scale.main(["--size", "tiny", "--device", "cpu", "--dtype", "float32", "--lengths", "1024", "20480",
                         "--out", str(out / "report"), "--work", str(out / "work")])
    assert rc == 0
    return out


def test_checkpoints_are_in_the_published_layout(report):
    from lclm_core.checkpoint import load_checkpoint

    for n in (4, 8, 16):
        root = report / "work" / "checkpoints" / f"lclm-{n}x"
        assert json.loads((root / "model_config.json").read_text())["compression_ratio"] == n
        loaded = load_checkpoint(root)
        assert loaded.compressor.config.compression_ratio == n
        assert "<|memory|>" in loaded.decoder_tokenizer.get_vocab()


def test_every_mode_and_length_is_measured_or_says_why_not(report):
    data = json.loads((report / "report.json").read_text())
    rows = {(r["mode"], r["ratio"], r["length"]): r for r in data["rows"]}
    assert set(rows) == {(m, n, L) for m, n in [("latent", 4), ("latent", 8), ("latent", 16), ("full", None)]
                         for L in (1024, 20480)}
    for key, r in rows.items():
        if key == ("full", None, 20480):
            assert r["note"].startswith("does not fit") and r["ttft_cached_s"] is None
            continue
        assert r["note"] == "" and r["ttft_cached_s"] > 0 and r["ttft_warm_s"] > 0 and r["decode_tok_s"] > 0
        assert r["prefix_reused"]  # the second question reused the documents prefix
        assert r["kv_gb"] > 0
        if r["mode"] == "latent":
            assert r["encoder_tok_s"] > 0 and r["ttft_with_compression_s"] > r["ttft_cached_s"]
    # latents hold T / N positions: the 20k document fits at every ratio, in fewer positions the higher N
    pos = [rows[("latent", n, 20480)]["positions"] for n in (4, 8, 16)]
    assert pos[0] > pos[1] > pos[2] and pos[0] < 20480 / 4 * 1.3
    assert rows[("latent", 4, 20480)]["tokens"] >= 20480


def test_the_report_names_the_device_and_sets_the_paper_beside_it(report):
    md = (report / "report.md").read_text()
    assert "# GPU scale: " in md and "tiny shapes" in md
    assert "| TTFT at 64k, 16x | 0.48 s |" in md
    assert "| latent N=16 | 20k |" in md and "| full | 20k |" in md
    sweep = json.loads((report / "report.json").read_text())["meta"]["batch_sweep"]
    assert [x["batch_tokens"] for x in sweep] == [8192, 32768, 65536] and all(x["encoder_tok_s"] > 0 for x in sweep)
    assert "| 65,536 |" in md


def test_the_device_runner_pins_what_the_tests_ran_and_passes_arguments_through():
    import importlib.metadata as md
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "scripts" / "gpu_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert f"sqlite-utils=={md.version('sqlite-utils')}" in mod.pins()
    seen = {}
    mod.cmd_run = lambda a: seen.setdefault("args", a) and 0
    mod.main(["run", "--budget-s", "60", "--", "--lengths", "8192"])
    assert seen["args"].budget_s == 60 and seen["args"].rest == ["--lengths", "8192"]
