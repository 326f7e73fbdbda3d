"""The trainer on a tiny random decoder: objectives, stages, resume, evaluation, export, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny
from lclm_core.lora import LoRALinear, apply_lora, lora_disabled, lora_state_dict, merge_lora_state
from lclm_core.train.data import ShardWriter, TokenShards
from lclm_core.train.evaluate import derangement, evaluate, heldout_examples
from lclm_core.train.trainer import TrainConfig, build_module, export_parts, module_from_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A tiny HF decoder directory and token shards cut from a small corpus."""
    d = tmp_path_factory.mktemp("train")
    tok = tiny.tokenizer("qwen")
    tiny.decoder("qwen").save_pretrained(d / "decoder")
    tok.save_pretrained(d / "decoder")
    text = " ".join(tiny.CORPUS) * 3
    ids = tok(text, add_special_tokens=False)["input_ids"]
    for split, n_docs in (("train", 12), ("heldout", 4)):
        w = ShardWriter(d / "shards", split, shard_tokens=2000)
        rng = np.random.default_rng(len(split))
        for _ in range(n_docs):
            a = int(rng.integers(0, len(ids) - 200))
            w.add(ids[a : a + 200])
        w.close()
    return d


def config(workdir, out, **kw) -> TrainConfig:
    base = dict(
        data=str(workdir / "shards"), out=str(out), decoder=str(workdir / "decoder"), ratio=4, window=32,
        passage_len=16, cont_len=8, batch_size=3, steps=4, encoder_layers=1, encoder_lora_rank=4,
        decoder_lora_rank=2, distill_layers=(1, 2), restricted_vocab=64, device="cpu", dtype="float32",
        save_every=2, log_every=1, warmup=1,
    )
    base.update(kw)
    return TrainConfig(**base)


def test_shards_round_trip_and_sampling_stays_inside_documents(tmp_path):
    w = ShardWriter(tmp_path, "train", shard_tokens=10)
    docs = [list(range(100 * k, 100 * k + 12)) for k in range(1, 6)]
    for d in docs:
        w.add(d)
    assert w.close() == {"shards": 5, "documents": 5, "tokens": 60}
    s = TokenShards(tmp_path, "train")
    rng = np.random.default_rng(0)
    for _ in range(50):
        ex = s.sample(rng, 6, 4)
        window = np.concatenate([ex.passage, ex.continuation])
        assert (np.diff(window) == 1).all()  # contiguous: never across two documents
    with pytest.raises(ValueError, match="no document"):
        s.sample(rng, 10, 10)
    assert [d.tolist() for d in s.documents()] == docs


def test_every_objective_gives_a_finite_loss_and_gradients_reach_only_trainable_parts(workdir, tmp_path):
    cfg = config(workdir, tmp_path, stage="encoder")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(workdir / "decoder")
    module = build_module(cfg, model, AutoTokenizer.from_pretrained(workdir / "decoder"))
    shards = TokenShards(workdir / "shards")
    ex = [shards.sample(np.random.default_rng(i), 16, 8) for i in range(3)]
    x = torch.tensor(np.stack([e.passage for e in ex]))
    y = torch.tensor(np.stack([e.continuation for e in ex]))
    loss, parts = module(x, y, 2, 0)
    assert set(parts) == {"continuation", "reconstruction", "distill_hidden", "distill_kl", "latent_align", "total"}
    assert all(np.isfinite(v) for v in parts.values())
    loss.backward()
    grads = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    assert any(".adapter." in f".{n}" for n in grads) and any("lora_" in n for n in grads)
    assert not any(n.startswith("decoder.") for n in grads)  # the decoder is frozen in the encoder stage


def test_train_resume_and_next_stage(workdir, tmp_path):
    out = tmp_path / "run"
    latest = train(config(workdir, out, steps=2))
    ck = torch.load(latest, weights_only=False)
    assert ck["step"] == 2 and ck["tokens_seen"] == 2 * 3 * 24
    assert all(k.startswith("compressor.") for k in ck["trainable"])
    train(config(workdir, out, steps=4))  # same command, more steps: resumes at 2
    ck2 = torch.load(latest, weights_only=False)
    assert ck2["step"] == 4 and [h["step"] for h in ck2["history"] if "loss" in h] == [1, 2, 3, 4]
    assert not torch.equal(ck["trainable"]["compressor.adapter.fc1.weight"], ck2["trainable"]["compressor.adapter.fc1.weight"])
    # Next stage starts from the adapter stage and trains the encoder's LoRA too.
    enc = train(config(workdir, out, stage="encoder", steps=2, init_from=str(latest)))
    ck3 = torch.load(enc, weights_only=False)
    b = [v for k, v in ck3["trainable"].items() if k.endswith("lora_B")]
    assert b and any(v.abs().sum() > 0 for v in b)  # B starts at zero: it moved
    dec = train(config(workdir, out, stage="decoder", steps=1, init_from=str(enc)))
    assert any(k.startswith("decoder.") and "lora_" in k for k in torch.load(dec, weights_only=False)["trainable"])


def test_evaluation_reports_every_baseline(workdir, tmp_path):
    latest = train(config(workdir, tmp_path, steps=1))
    module, cfg, _ = module_from_checkpoint(latest)
    ex = heldout_examples(TokenShards(workdir / "shards", "heldout"), 6, 16, 8)
    r = evaluate(module, ex, batch_size=3)
    d = r.as_dict()
    for k in ("loss_raw", "loss_own", "loss_shuffled", "loss_none", "recon_tf_acc", "recon_tf_floor",
              "recon_greedy_acc", "recon_greedy_floor", "gap_closed", "content_gap"):
        assert np.isfinite(d[k]), k
    assert r.n_examples == 6
    assert 0 <= r.recon_tf_acc <= 1 and 0 <= r.recon_greedy_acc <= 1
    assert r.content_gap == pytest.approx((r.loss_shuffled - r.loss_own) / (r.loss_none - r.loss_raw))


def test_derangement_moves_every_item():
    rng = np.random.default_rng(0)
    for n in (2, 3, 10):
        p = derangement(n, rng)
        assert sorted(p) == list(range(n)) and not (p == np.arange(n)).any()


def test_lora_merge_equals_the_wrapped_layer():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 6))
    net.q_proj = torch.nn.Linear(6, 5)
    plain = torch.nn.Sequential()
    plain.q_proj = torch.nn.Linear(6, 5)
    plain.q_proj.load_state_dict(net.q_proj.state_dict())
    apply_lora(net, rank=2, alpha=4, targets=("q_proj",))
    assert isinstance(net.q_proj, LoRALinear)
    torch.nn.init.normal_(net.q_proj.lora_B)
    x = torch.randn(3, 6)
    with lora_disabled(net):
        torch.testing.assert_close(net.q_proj(x), plain.q_proj(x))
    merge_lora_state(plain, lora_state_dict(net), scale=4 / 2)
    torch.testing.assert_close(net.q_proj(x), plain.q_proj(x), rtol=1e-5, atol=1e-5)


def test_export_refuses_a_checkpoint_not_trained_on_the_default(workdir, tmp_path):
    latest = train(config(workdir, tmp_path, steps=1))
    with pytest.raises(ValueError, match="embedded default"):
        export_parts(latest, tmp_path / "parts")


@pytest.mark.slow
def test_two_process_data_parallel_run_agrees_on_the_loss(workdir, tmp_path):
    """accelerate launch with 2 CPU processes: same reduced loss on both, different data on each."""
    out = tmp_path / "ddp"
    cmd = [
        # accelerate's --cpu flag runs one process; --multi_gpu starts torchrun, and the
        # trainer's Accelerator(cpu=True) then joins the processes over gloo on the CPU.
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
        "-m", "lclm_core.train.trainer", "train", "--data", str(workdir / "shards"), "--out", str(out),
        "--decoder", str(workdir / "decoder"), "--ratio", "4", "--window", "32", "--passage-len", "16",
        "--cont-len", "8", "--batch-size", "2", "--steps", "3", "--encoder-layers", "1", "--encoder-lora-rank", "4",
        "--distill-layers", "1", "2", "--restricted-vocab", "64", "--device", "cpu", "--dtype", "float32",
        "--log-every", "1", "--save-every", "3", "--warmup", "1",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    ranks = [json.loads((out / "adapter" / f"losses.rank{k}.json").read_text()) for k in (0, 1)]
    assert [x["mean"] for x in ranks[0]] == [x["mean"] for x in ranks[1]]
    assert [x["local"] for x in ranks[0]] != [x["local"] for x in ranks[1]]  # each process saw its own batch
    for a, b in zip(ranks[0], ranks[1]):
        assert a["mean"] == pytest.approx((a["local"] + b["local"]) / 2, rel=1e-5)


def test_learning_rate_decays_over_the_time_budget_when_steps_are_open_ended():
    from lclm_core.train.trainer import TrainConfig, lr_at

    cfg = TrainConfig(data="d", out="o", steps=100_000, warmup=10, max_minutes=5.0)
    assert lr_at(0, cfg) == pytest.approx(0.1)  # warm-up
    assert lr_at(50, cfg, elapsed_minutes=0.0) == pytest.approx(1.0, abs=1e-3)
    assert lr_at(50, cfg, elapsed_minutes=2.5) == pytest.approx(0.55, abs=1e-3)  # half-way through the minutes
    assert lr_at(50, cfg, elapsed_minutes=5.0) == pytest.approx(0.1)
    no_budget = TrainConfig(data="d", out="o", steps=100_000, warmup=10)
    assert lr_at(50, no_budget, elapsed_minutes=60.0) == pytest.approx(1.0, abs=1e-3)  # steps rule alone
