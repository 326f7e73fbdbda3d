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
from lclm_core.train.evaluate import derangement, evaluate, heldout_examples, lcs_length
from lclm_core.train.trainer import TrainConfig, build_module, export_parts, module_from_checkpoint, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("train"))


def make_workdir(d: Path) -> Path:
    """A tiny HF decoder directory and token shards cut from a small corpus."""
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


def test_a_run_from_trained_parts_draws_fresh_batches_and_its_resume_draws_the_same_ones(workdir, tmp_path, monkeypatch):
    """Every run started from parts once redrew the first batches of the run that made them:
    four decoder-stage runs of N = 4 trained on the same ~5,600 passages."""
    from lclm_core.train.data import TokenShards

    drawn: list[tuple] = []
    sample = TokenShards.sample

    def recording(self, rng, *a, **kw):
        ex = sample(self, rng, *a, **kw)
        drawn.append(tuple(ex.passage.tolist()))
        return ex

    monkeypatch.setattr(TokenShards, "sample", recording)

    def batches(cfg) -> tuple[list[tuple], Path]:
        drawn.clear()
        latest = train(cfg)
        return list(drawn), latest

    first, start = batches(config(workdir, tmp_path / "a", steps=2))
    assert batches(config(workdir, tmp_path / "b", steps=2))[0] == first  # same seed from scratch: same batches
    tokens = torch.load(start, weights_only=False)["tokens_seen"]
    fresh, _ = batches(config(workdir, tmp_path / "c", steps=2, init_from=str(start)))
    assert len(fresh) == len(first) == 2 * 3 and fresh != first
    # Stopped after one step and resumed: the stream is the checkpoint's, so the batches are the same.
    half, ck = batches(config(workdir, tmp_path / "d", steps=1, init_from=str(start)))
    assert torch.load(ck, weights_only=False)["stream"] == tokens
    rest, _ = batches(config(workdir, tmp_path / "d", steps=2, init_from=str(start)))
    assert half + rest == fresh


def test_a_new_ratio_starts_its_decoder_stage_from_another_ratios_decoder_lora(workdir, tmp_path):
    from lclm_core.train.trainer import read_decoder_lora

    dec4 = train(config(workdir, tmp_path / "n4", stage="decoder", steps=2, lr_decoder=0.05))
    trained = read_decoder_lora(dec4)
    assert trained and all(k.startswith("decoder.") for k in trained)
    assert any(v.abs().sum() > 0 for k, v in trained.items() if k.endswith("lora_B"))
    enc8 = train(config(workdir, tmp_path / "n8", stage="encoder", ratio=8, steps=1))
    # One step at learning rate 0 saves exactly what the run started from.
    dec8 = train(config(workdir, tmp_path / "n8", stage="decoder", ratio=8, steps=1, init_from=str(enc8),
                        init_decoder_from=str(dec4), lr_adapter=0.0, lr_encoder=0.0, lr_decoder=0.0))
    ck = torch.load(dec8, weights_only=False)
    for k, v in trained.items():
        torch.testing.assert_close(ck["trainable"][k], v)
    enc_state = torch.load(enc8, weights_only=False)["trainable"]
    for k, v in enc_state.items():  # the compressor is still the N = 8 one
        torch.testing.assert_close(ck["trainable"][k], v)
    with pytest.raises(ValueError, match="no decoder LoRA"):
        read_decoder_lora(enc8)


def test_a_decoder_stage_grows_its_lora_rank_without_changing_what_it_computes(workdir, tmp_path):
    def deltas(ck_path) -> dict[str, torch.Tensor]:
        ck = torch.load(ck_path, weights_only=False)
        scale = ck["config"]["lora_alpha"] / ck["config"]["decoder_lora_rank"]
        t = ck["trainable"]
        return {k[: -len(".lora_A")]: (t[k[:-1] + "B"] @ t[k]) * scale for k in t if k.startswith("decoder.") and k.endswith("lora_A")}

    small = train(config(workdir, tmp_path / "r2", stage="decoder", steps=2, lr_decoder=0.05))  # rank 2, scale 16
    # One step at learning rate 0 saves exactly what the run started from, now at rank 4 (scale 8).
    grown = train(config(workdir, tmp_path / "r4", stage="decoder", steps=1, decoder_lora_rank=4, init_from=str(small),
                         lr_adapter=0.0, lr_encoder=0.0, lr_decoder=0.0))
    before, after = deltas(small), deltas(grown)
    assert before.keys() == after.keys() and any(d.abs().sum() > 0 for d in before.values())
    for k in before:  # the same update to every decoder weight
        torch.testing.assert_close(after[k], before[k])
    t = torch.load(grown, weights_only=False)["trainable"]
    a = next(v for k, v in t.items() if k.startswith("decoder.") and k.endswith("lora_A"))
    b = next(v for k, v in t.items() if k.startswith("decoder.") and k.endswith("lora_B"))
    assert a.shape[0] == 4 and a[2:].abs().sum() > 0 and b[:, 2:].abs().sum() == 0  # new directions: ready to learn
    # The same holds for a LoRA taken from another run (--init-decoder-from), and shrinking is refused.
    enc = train(config(workdir, tmp_path / "enc", stage="encoder", steps=1))
    via = train(config(workdir, tmp_path / "enc", stage="decoder", steps=1, decoder_lora_rank=4, init_from=str(enc),
                       init_decoder_from=str(small), lr_adapter=0.0, lr_encoder=0.0, lr_decoder=0.0))
    for k, d in deltas(via).items():
        torch.testing.assert_close(d, before[k])
    with pytest.raises(ValueError, match="can grow, not shrink"):
        train(config(workdir, tmp_path / "r1", stage="decoder", steps=1, decoder_lora_rank=1, init_from=str(grown)))


def test_evaluation_reports_every_baseline(workdir, tmp_path):
    latest = train(config(workdir, tmp_path, steps=1))
    module, cfg, _ = module_from_checkpoint(latest)
    ex = heldout_examples(TokenShards(workdir / "shards", "heldout"), 6, 16, 8)
    r = evaluate(module, ex, batch_size=3)
    d = r.as_dict()
    for k in ("loss_raw", "loss_own", "loss_shuffled", "loss_none", "recon_tf_acc", "recon_tf_floor",
              "recon_greedy_acc", "recon_greedy_floor", "recon_greedy_lcs", "recon_greedy_lcs_floor",
              "gap_closed", "content_gap"):
        assert np.isfinite(d[k]), k
    assert r.n_examples == 6
    assert 0 <= r.recon_tf_acc <= 1 and 0 <= r.recon_greedy_acc <= r.recon_greedy_lcs <= 1
    assert r.recon_greedy_floor <= r.recon_greedy_lcs_floor  # a token right in place is in the LCS too
    assert r.content_gap == pytest.approx((r.loss_shuffled - r.loss_own) / (r.loss_none - r.loss_raw))
    # each passage's greedy score is kept, in order, so that two checkpoints pair up passage by passage
    assert len(r.recon_greedy_each) == 6 and np.mean(r.recon_greedy_each) == pytest.approx(r.recon_greedy_acc)
    assert r.recon_greedy_se == pytest.approx(np.std(r.recon_greedy_each, ddof=1) / np.sqrt(6))
    assert "recon_greedy_each" not in d and d["recon_greedy_se"] == r.recon_greedy_se
    assert r.as_dict(each=True)["recon_greedy_each"] == r.recon_greedy_each


def test_lcs_counts_a_copy_shifted_by_one_token_as_nearly_whole():
    x = list(range(10, 30))
    shifted = [99] + x[:-1]  # one extra token first: every position is wrong
    assert sum(a == b for a, b in zip(shifted, x)) == 0
    assert lcs_length(shifted, x) == 19
    assert lcs_length(x, x) == 20 and lcs_length([], x) == 0 and lcs_length([1, 2], [3, 4]) == 0
    assert lcs_length([1, 3, 2, 4], [1, 2, 3, 4]) == 3


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


def test_a_resumed_run_climbs_back_to_the_configured_peak_rate(workdir, tmp_path):
    """The saved optimizer holds the last *scheduled* rate; a resume must not take it for the peak."""
    from lclm_core.train.trainer import lr_at

    out = tmp_path / "run"
    first = config(workdir, out, steps=3, lr_adapter=1e-3)
    ck = torch.load(train(first), weights_only=False)
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * lr_at(2, first))  # decayed, < peak
    resumed = config(workdir, out, steps=4, lr_adapter=1e-3)
    ck = torch.load(train(resumed), weights_only=False)
    assert ck["optimizer"]["param_groups"][0]["lr"] == pytest.approx(1e-3 * lr_at(3, resumed))


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


# --- the QA stage ----------------------------------------------------------------------
def qa_sampler(workdir, passage_len=48, **kw):
    from lclm_core.train.qa import QASampler

    return QASampler(TokenShards(workdir / "shards"), tiny.tokenizer("qwen"), passage_len, **kw)


@pytest.mark.parametrize("kind", ["follows", "blank", "fact"])
def test_qa_examples_are_answered_by_their_passage(workdir, kind):
    tok = tiny.tokenizer("qwen")
    qa = qa_sampler(workdir, kinds=(kind,), unknown_share=0.0)
    rng = np.random.default_rng(0)
    for _ in range(20):
        ex = qa.sample(rng)
        passage = tok.decode(ex.passage.tolist())
        cont = tok.decode(ex.continuation.tolist())
        answer = tok.decode(ex.continuation[ex.answer_mask].tolist())
        assert len(ex.passage) == 48 and ex.kind == kind
        assert cont.startswith("\n\nQuestion: ") and cont.endswith(f"\nAnswer: {ex.answer}\n")
        assert answer == f" {ex.answer}\n"  # the loss is on the answer and the newline that ends it
        assert tok.decode(ex.continuation[ex.score_mask].tolist()) == f" {ex.answer}"  # evaluation checks the answer
        question = cont.split("Question: ")[1].split("\nAnswer:")[0]
        flat = " ".join(passage.split())
        if kind == "follows":
            cue = question.split('"')[1]
            assert f"{cue} {ex.answer}" in flat
        elif kind == "blank":
            sentence = question.split('"')[1]
            assert sentence.count("___") == 1 and sentence.replace("___", ex.answer) in flat
        else:
            assert ex.answer in passage and ex.answer != "unknown"


def test_every_qa_passage_has_the_passage_length_even_where_a_fact_barely_fits(workdir):
    """A fact longer than the passage once made ids[:negative] a longer passage, and a batch that would not stack."""
    from lclm_core.train.qa import collate

    qa = qa_sampler(workdir, passage_len=16, unknown_share=0.0)
    rng = np.random.default_rng(0)
    examples = [qa.sample(rng) for _ in range(60)]
    assert {len(ex.passage) for ex in examples} == {16}
    assert collate(examples, 0)[0].shape == (60, 16)


def test_a_fact_left_out_is_answered_unknown(workdir):
    qa = qa_sampler(workdir, kinds=("fact",), unknown_share=1.0)
    ex = qa.sample(np.random.default_rng(1))
    assert ex.answer == "unknown" and "access code" not in tiny.tokenizer("qwen").decode(ex.passage.tolist())


def test_qa_loss_reads_only_real_answer_tokens_so_padding_changes_nothing(workdir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lclm_core.train.qa import collate

    cfg = config(workdir, tmp_path, stage="qa", passage_len=48, window=64, restricted_vocab=0)
    module = build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                          AutoTokenizer.from_pretrained(workdir / "decoder"))
    rng = np.random.default_rng(2)
    qa = qa_sampler(workdir)
    exs = [qa.sample(rng) for _ in range(2)]

    def loss_of(batch, extra_pad):
        x, y, ans, valid = collate(batch, pad_id=0)
        pad = np.zeros((len(batch), extra_pad), dtype=np.int64)
        y = np.concatenate([y, pad], 1)
        ans, valid = (np.concatenate([m, pad.astype(bool)], 1) for m in (ans, valid))
        return module(*(torch.tensor(a) for a in (x, y)), 0, 0, torch.tensor(ans), torch.tensor(valid))

    (l0, p0), (l5, p5) = loss_of(exs, 0), loss_of(exs, 5)
    torch.testing.assert_close(l0, l5)
    assert "reconstruction" not in p0 and p0["continuation"] > 0 and p0["distill_hidden"] > 0
    # With no mask, the loss would read every position of the continuation: different.
    x, y, ans, valid = (torch.tensor(a) for a in collate(exs, pad_id=0))
    assert not torch.allclose(module(x, y, 0, 0)[0], l0)


def test_qa_stage_mixes_qa_and_plain_batches_from_the_encoder_stage(workdir, tmp_path):
    out = tmp_path / "run"
    enc = train(config(workdir, out, stage="encoder", steps=1, passage_len=48, window=64))
    latest = train(config(workdir, out, stage="qa", steps=6, passage_len=48, window=64, init_from=str(enc)))
    ck = torch.load(latest, weights_only=False)
    logged = [h for h in ck["history"] if "loss" in h]
    kinds = {"qa" if "qa_continuation" in h else "plain" for h in logged}
    assert kinds == {"qa", "plain"} and all(np.isfinite(h["loss"]) for h in logged)
    assert any(k.endswith("lora_B") for k in ck["trainable"])
    assert not any(k.startswith("decoder.") for k in ck["trainable"])  # the decoder stays frozen


def test_qa_exact_answer_means_greedy_decoding_writes_it(workdir, tmp_path):
    """evaluate_qa scores by teacher forcing; an answer counts only if greedy generation gives it token for token."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lclm_core.train.evaluate import evaluate_qa
    from lclm_core.train.qa import QAExample

    cfg = config(workdir, tmp_path, stage="qa", passage_len=48, window=64)
    module = build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                          AutoTokenizer.from_pretrained(workdir / "decoder"))
    qa = qa_sampler(workdir)
    rng = np.random.default_rng(3)
    examples = []
    for _ in range(2):
        ex = qa.sample(rng)
        q = ex.continuation[~ex.answer_mask]
        ids = torch.tensor([[module.bos, *ex.passage.tolist(), *q.tolist()]])
        out = module.decoder.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, do_sample=False,
                                      eos_token_id=None, pad_token_id=0)
        written = out[0, ids.shape[1]:].numpy()  # what greedy decoding writes after the raw passage
        examples.append(QAExample(ex.passage, np.concatenate([q, written]),
                                  np.r_[np.zeros(len(q), bool), np.ones(3, bool)], ex.kind, "?"))
    r = evaluate_qa(module, examples, batch_size=2)
    assert r["qa_exact_raw"] == 1.0 and r["qa_examples"] == 2
    wrong = [QAExample(e.passage, np.r_[e.continuation[:-1], (e.continuation[-1] + 1) % 50], e.answer_mask, e.kind, "?")
             for e in examples]
    assert evaluate_qa(module, wrong, batch_size=2)["qa_exact_raw"] == 0.0
    assert set(r) >= {"qa_exact_own", "qa_exact_shuffled", "qa_exact_none", f"qa_exact_raw_{examples[0].kind}"}


def test_eval_command_can_measure_qa_alone_and_compare_at_another_passage_length(workdir, tmp_path):
    from lclm_core.train.trainer import main

    latest = train(config(workdir, tmp_path, steps=1, window=64))
    out = tmp_path / "fig.json"
    main(["eval", "--ckpt", str(latest), "--data", str(workdir / "shards"), "--examples", "0", "--qa-examples", "4",
          "--qa-passage-len", "48", "--batch-size", "2", "--out", str(out)])
    fig = json.loads(out.read_text())
    assert "loss_own" not in fig and fig["qa_examples"] == 4 and 0 <= fig["qa_exact_own"] <= 1
    main(["eval", "--ckpt", str(latest), "--data", str(workdir / "shards"), "--examples", "4", "--qa-examples", "0",
          "--passage-len", "24", "--no-greedy", "--batch-size", "2", "--out", str(out)])
    fig = json.loads(out.read_text())
    assert "qa_examples" not in fig and fig["examples"] == 4 and np.isfinite(fig["content_gap"])


def test_a_stage_can_start_from_shipped_parts_as_from_its_checkpoint(workdir, tmp_path):
    from safetensors.torch import save_file

    from lclm_core.checkpoint import save_adapter
    from lclm_core.train.trainer import read_init

    enc = train(config(workdir, tmp_path / "run", stage="encoder", steps=1))
    module, cfg, ck = module_from_checkpoint(enc)
    parts = tmp_path / "parts"  # the shipped layout, as export_parts writes it for the default decoder
    parts.mkdir()
    module.compressor.config.save(parts / "model_config.json")
    save_adapter(module.compressor.adapter, parts / "adapter" / "adapter.safetensors")
    (parts / "encoder").mkdir()
    save_file(lora_state_dict(module.compressor.encoder.backbone), str(parts / "encoder" / "lora.safetensors"))
    (parts / "base.json").write_text(json.dumps({"tokens_seen": ck["tokens_seen"]}))
    state, tokens = read_init(parts, 4)
    assert tokens == ck["tokens_seen"] and set(state) == set(ck["trainable"])
    for k, v in ck["trainable"].items():
        torch.testing.assert_close(state[k], v.float())
    with pytest.raises(ValueError, match="N = 4, not the N = 8"):
        read_init(parts, 8)
    qa = train(config(workdir, tmp_path / "run", stage="qa", steps=1, init_from=str(parts)))
    assert torch.load(qa, weights_only=False)["tokens_seen"] > ck["tokens_seen"]


def test_interleaved_objective_reads_raw_chunks_between_latent_blocks(workdir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lclm_core.train.objectives import LossWeights

    cfg = config(workdir, tmp_path, stage="encoder", passage_len=24, interleave_chunk=8, restricted_vocab=0,
                 weights=LossWeights(interleaved=1.0))
    module = build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                          AutoTokenizer.from_pretrained(workdir / "decoder"))
    # 32 tokens in chunks of 8 at N = 4: [bos] [s] z0 z0 [e] c1 [s] z2 z2 [e] c3; teacher: [bos] c0 c1 c2 c3
    assert module.interleave_layout(32, 2) == (4, [(5, 9), (17, 25)])
    assert module.interleave_layout(40, 2)[0] == 4  # a fifth chunk would be compressed with nothing after it
    shards = TokenShards(workdir / "shards")
    ex = [shards.sample(np.random.default_rng(i), 24, 8) for i in range(2)]
    x = torch.tensor(np.stack([e.passage for e in ex]))
    y = torch.tensor(np.stack([e.continuation for e in ex]))
    seen = []
    real = module._logits
    module._logits = lambda h, t, th=None: seen.append(t) or real(h, t, th)
    loss, parts = module(x, y, 0, 0)
    window = torch.cat([x, y], 1)
    assert torch.equal(seen[-1], torch.cat([window[:, 8:16], window[:, 24:32]], 1))  # the raw chunks are the targets
    assert np.isfinite(parts["interleaved_ce"]) and parts["interleaved_distill"] > 0
    loss.backward()
    assert module.compressor.adapter.fc1.weight.grad.abs().sum() > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in module.named_parameters() if "lora_B" in n)
    with pytest.raises(ValueError, match="multiple of the ratio"):
        build_module(config(workdir, tmp_path, interleave_chunk=6), AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                     AutoTokenizer.from_pretrained(workdir / "decoder"))


def _decoder_stage_module(workdir, tmp_path, **weights):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lclm_core.train.objectives import LossWeights

    cfg = config(workdir, tmp_path, stage="decoder", passage_len=48, window=64, restricted_vocab=0,
                 weights=LossWeights(**weights))
    return build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                        AutoTokenizer.from_pretrained(workdir / "decoder"))


def test_raw_keep_is_the_adapted_decoders_drift_from_the_untouched_one_on_plain_text(workdir, tmp_path):
    from transformers import AutoModelForCausalLM

    from lclm_core.train.qa import collate

    module = _decoder_stage_module(workdir, tmp_path, raw_keep=1.0)
    rng = np.random.default_rng(3)
    x, y, ans, valid = (torch.tensor(a) for a in collate([qa_sampler(workdir).sample(rng) for _ in range(2)], 0))
    # A fresh LoRA (B = 0) is the untouched decoder: nothing to keep yet.
    assert module(x, y, 0, 0, ans, valid)[1]["raw_keep"] == 0.0
    with torch.no_grad():
        for n, p in module.decoder.named_parameters():
            if n.endswith("lora_B"):
                p.normal_(0, 0.05)
    loss, parts = module(x, y, 0, 0, ans, valid)
    assert parts["raw_keep"] > 0
    loss.backward()
    assert all(p.grad is not None for n, p in module.decoder.named_parameters() if n.endswith("lora_B"))
    # Right padding past the real tokens is not plain text to keep.
    pad = torch.zeros(2, 5, dtype=torch.long)
    padded = module(x, torch.cat([y, pad], 1), 0, 0, torch.cat([ans, pad.bool()], 1), torch.cat([valid, pad.bool()], 1))
    assert padded[1]["raw_keep"] == pytest.approx(parts["raw_keep"], rel=1e-5)
    # Without a decoder LoRA (the encoder stage) there is no drift and no extra pass.
    enc = build_module(config(workdir, tmp_path, stage="encoder", passage_len=48, window=64, weights=module.w),
                       AutoModelForCausalLM.from_pretrained(workdir / "decoder"), module.compressor.tokenizer)
    assert "raw_keep" not in enc(x, y, 0, 0, ans, valid)[1]


def test_raw_keep_holds_a_reconstruction_trained_decoder_lora_to_plain_texts_reading(workdir, tmp_path):
    """The same decoder stage, with and without the anchor: with it, the LoRA moves the
    decoder's reading of raw held-out text far less."""
    from transformers import AutoModelForCausalLM

    from lclm_core.train.objectives import LossWeights

    held = TokenShards(workdir / "shards", "heldout")
    raw = torch.tensor(np.stack([held.sample(np.random.default_rng(i), 40, 8).passage for i in range(4)]))
    base = AutoModelForCausalLM.from_pretrained(workdir / "decoder").eval()
    with torch.no_grad():
        want = base.model(raw).last_hidden_state

    def drift(**w) -> float:
        out = tmp_path / ("keep" if w.get("raw_keep") else "free")
        latest = train(config(workdir, out, stage="decoder", steps=10, lr_decoder=2e-3, lr_adapter=0.0,
                              weights=LossWeights(continuation=0, distill_hidden=0, distill_kl=0, latent_align=0,
                                                  reconstruction=1.0, **w), reconstruct_fraction=1.0))
        module, _, _ = module_from_checkpoint(latest)
        with torch.no_grad():
            got = module.decoder.model(raw).last_hidden_state
        return float((got - want).pow(2).mean() / want.pow(2).mean())

    free, kept = drift(), drift(raw_keep=10.0)
    assert free > 1e-3  # the reconstruction LoRA did move the decoder
    assert kept < 0.5 * free, (kept, free)


def test_decoder_stage_can_mix_in_qa_batches(workdir, tmp_path):
    out = tmp_path / "run"
    latest = train(config(workdir, out, stage="decoder", steps=6, passage_len=48, window=64,
                          decoder_qa_fraction=0.5, weights={"raw_keep": 1.0}))
    logged = [h for h in torch.load(latest, weights_only=False)["history"] if "loss" in h]
    assert {"qa" if "qa_continuation" in h else "plain" for h in logged} == {"qa", "plain"}
    assert all("qa_raw_keep" in h for h in logged if "qa_continuation" in h)
    # Off by default: a decoder stage is plain batches unless asked.
    plain = train(config(workdir, tmp_path / "plain", stage="decoder", steps=3, passage_len=48, window=64))
    assert not any("qa_continuation" in h for h in torch.load(plain, weights_only=False)["history"] if "loss" in h)
