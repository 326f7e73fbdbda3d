"""Integration: a short training run on the embedded default, exported as its shipped parts."""

import json

import numpy as np
import pytest
import torch

from lclm_core.default_model import default_compressor, load_default_decoder
from lclm_core.device import Placement
from lclm_core.train.data import ShardWriter
from lclm_core.train.trainer import TrainConfig, export_parts, main, module_from_checkpoint, train

pytestmark = pytest.mark.integration
CPU32 = Placement(torch.device("cpu"), torch.float32)
TEXT = (
    "R is an integrated suite of software facilities for data manipulation, calculation and graphical display. "
    "It includes an effective data handling and storage facility, a suite of operators for calculations on "
    "arrays, in particular matrices, a large, coherent, integrated collection of intermediate tools for data "
    "analysis, graphical facilities for data analysis and display either on-screen or on hardcopy, and a well "
    "developed, simple and effective programming language which includes conditionals, loops, user-defined "
    "recursive functions and input and output facilities. "
)


def gemma_shards(root, repeats: int) -> list[int]:
    """Train and held-out shards of TEXT in the default's tokens; returns the ids."""
    _, tok = load_default_decoder(CPU32)
    ids = tok(TEXT * repeats, add_special_tokens=False)["input_ids"]
    for split in ("train", "heldout"):
        w = ShardWriter(root, split)
        w.add(ids)
        w.close()
    return ids


def test_trained_parts_export_and_load_as_the_default(tmp_path):
    _, tok = load_default_decoder(CPU32)
    ids = gemma_shards(tmp_path / "shards", 4)
    cfg = dict(data=str(tmp_path / "shards"), out=str(tmp_path / "run"), ratio=4, passage_len=32, cont_len=8,
               batch_size=2, steps=2, device="cpu", dtype="float32", restricted_vocab=256, warmup=1,
               encoder_lora_rank=4, save_every=2)
    first = train(TrainConfig(**cfg))
    ckpt = train(TrainConfig(**{**cfg, "stage": "encoder", "init_from": str(first)}))
    # The documented chain: trainer eval --out, then export with it and a QA report beside it.
    figs = tmp_path / "eval.json"
    assert main(["eval", "--ckpt", str(ckpt), "--data", str(tmp_path / "shards"), "--examples", "2",
                 "--qa-examples", "0", "--batch-size", "2", "--out", str(figs)]) == 0
    qa = tmp_path / "qa.json"
    needle = {"raw": {"4096": 1.0}, "latents+quotes": {"4096": 0.9}}
    qa.write_text(json.dumps({"args": {"lengths": [4096], "depths": [0.0, 0.5], "trials": 2, "n": 40},
                              "summary": {"needle": needle, "faq": {"raw": {"f1": 0.3}}},
                              "command": "python bench/eval_qa.py --n 40"}))
    parts = tmp_path / "parts" / "ratio-4"
    assert main(["export", "--ckpt", str(ckpt), "--out", str(parts), "--figures", str(figs), "--qa-report", str(qa)]) == 0
    card = json.loads((parts / "base.json").read_text())["figures"]
    assert card["examples"] == 2 and "recon_greedy_acc" in card
    assert card["measured"].endswith(f"python -m lclm_core.train.trainer eval --ckpt {ckpt} --data {tmp_path / 'shards'} "
                                     f"--examples 2 --qa-examples 0 --batch-size 2 --out {figs}")
    assert card["needle_4k_4_haystacks"] == needle and card["faq_qa_40"] == {"raw": {"f1": 0.3}}
    assert card["qa_measured"] == "python bench/eval_qa.py --n 40"
    assert (parts / "adapter" / "adapter.safetensors").exists() and (parts / "encoder" / "lora.safetensors").exists()
    assert (parts / "encoder" / "lora.safetensors").stat().st_size < 8_000_000  # a few MB at most

    comp = default_compressor(4, CPU32, parts_dir=tmp_path / "parts")
    assert comp.trained and "stage encoder" in comp.description
    # The shipped (merged) encoder computes what the training module computed.
    module, _, _ = module_from_checkpoint(ckpt, CPU32)
    x = torch.tensor([ids[:32]])
    with torch.no_grad():
        expect = module.latents(x)[0]
    (got,) = comp.compress([tok.decode(ids[:32])], dtype=torch.float32)
    if got.shape[0] == expect.shape[0]:
        torch.testing.assert_close(got.data, expect, rtol=1e-3, atol=1e-3)
    got_ids = comp.forward_ids([ids[:32]])[0]
    torch.testing.assert_close(got_ids, expect, rtol=1e-3, atol=1e-3)
    # The shared default decoder's own layers are untouched by the encoder's LoRA.
    base = default_compressor(4, CPU32, parts_dir=tmp_path / "none")
    assert not torch.equal(base.encoder.backbone.layers[0].self_attn.q_proj.weight,
                           comp.encoder.backbone.layers[0].self_attn.q_proj.weight)


def test_eval_bench_puts_trained_and_untrained_side_by_side(tmp_path, capsys):
    import sys as _sys
    from pathlib import Path

    _sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    import eval_compressor

    gemma_shards(tmp_path / "shards", 6)
    ckpt = train(TrainConfig(data=str(tmp_path / "shards"), out=str(tmp_path / "run"), ratio=4, passage_len=32,
                             cont_len=16, batch_size=2, steps=1, device="cpu", dtype="float32", restricted_vocab=256,
                             warmup=1))
    assert eval_compressor.main(["--data", str(tmp_path / "shards"), "--ckpt", str(ckpt), "--smoke",
                                 "--out", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "| untrained N=4 |" in out and "| adapter N=4, 0.00M tok |" in out and "content gap" in out
    figures = json.loads((tmp_path / "report.json").read_text())
    assert set(figures) == {"untrained N=4", "adapter N=4, 0.00M tok"}


def test_decoder_stage_parts_ship_the_decoder_lora_that_the_app_reads_with(tmp_path):
    from lclm_core.train.trainer import read_init

    _, tok = load_default_decoder(CPU32)
    ids = gemma_shards(tmp_path / "shards", 4)
    cfg = dict(data=str(tmp_path / "shards"), out=str(tmp_path / "run"), ratio=4, passage_len=32, cont_len=8,
               batch_size=2, steps=1, device="cpu", dtype="float32", restricted_vocab=256, warmup=1,
               encoder_lora_rank=4, decoder_lora_rank=4, save_every=1)
    first = train(TrainConfig(**cfg))
    # One step at a large rate, so that the decoder's LoRA is far from zero.
    ckpt = train(TrainConfig(**{**cfg, "stage": "decoder", "init_from": str(first), "lr_decoder": 0.05}))
    parts = export_parts(ckpt, tmp_path / "parts" / "ratio-4")
    meta = json.loads((parts / "base.json").read_text())
    assert (parts / "decoder" / "lora.safetensors").exists() and meta["decoder_lora_scale"] == 32.0 / 4
    # Stored in fp16 (half the bytes in the repo). This LoRA, one step at rate 0.05, is far larger than a
    # trained one, so fp16 rounding moves its logits by up to ~0.1; the comparison below is with the
    # trained module's LoRA rounded the same way, and pins the merge, not the storage.
    from safetensors.torch import load_file
    assert {v.dtype for v in load_file(str(parts / "decoder" / "lora.safetensors")).values()} == {torch.float16}

    module, _, _ = module_from_checkpoint(ckpt, CPU32)  # the decoder with its LoRA wrappers, as trained
    with torch.no_grad():
        for name, p in module.decoder.named_parameters():
            if "lora_" in name:
                p.copy_(p.half().float())
    base, _ = load_default_decoder(CPU32)
    app, _ = load_default_decoder(CPU32, ratio=4, parts_dir=tmp_path / "parts")
    x = torch.tensor([ids[:40]])
    with torch.no_grad():
        want, got, plain = module.decoder(x).logits, app(x).logits, base(x).logits
    # Merged (W + BA s) and wrapped (Wx + B(Ax) s) differ in float rounding only: ~2e-3 on logits of ~30.
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-2)
    assert (got - plain).abs().max() > 0.5
    # The encoder is built from the base's layers, not the adapted ones.
    comp = default_compressor(4, CPU32, parts_dir=tmp_path / "parts")
    torch.testing.assert_close(comp.forward_ids([ids[:32]])[0], module.latents(torch.tensor([ids[:32]]))[0],
                               rtol=1e-3, atol=1e-3)
    # A later stage started from these parts gets the decoder's LoRA back.
    state, _ = read_init(parts, 4)
    assert {k for k in state if k.startswith("decoder.")} == {k for k in module.state_dict() if k.startswith("decoder.") and "lora_" in k}
