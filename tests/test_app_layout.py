"""The app-layout training stage on a tiny random decoder: its examples are the app's prompt, its loss reads
only the answers, gradients reach what the stage trains, and the stage runs, resumes and is measured."""

import json
import re

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lclm_core.inputs import InputBuilder
from lclm_core.prompt import INSTRUCTIONS
from lclm_core.train.app_layout import AppSampler, app_loss, heldout_app, teacher_answers
from lclm_core.train.data import TokenShards
from lclm_core.train.trainer import build_module, main, module_from_checkpoint, train
from test_train import config, make_workdir


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return make_workdir(tmp_path_factory.mktemp("app-layout"))


@pytest.fixture(scope="module")
def module(workdir):
    cfg = config(workdir, workdir / "unused", stage="app", passage_len=32, window=64, restricted_vocab=0)
    return build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                        AutoTokenizer.from_pretrained(workdir / "decoder"))


def sampler(workdir, module, **kw):
    tok = module.compressor.tokenizer
    builder = InputBuilder(tok, module.compressor.config.memory_tokens)
    return AppSampler(TokenShards(workdir / "shards"), tok, builder, 32, 4, **{"documents": 4, **kw})


def test_an_example_is_the_apps_prompt_with_the_answer_after_it(workdir, module):
    tok = module.compressor.tokenizer
    builder = InputBuilder(tok, module.compressor.config.memory_tokens)
    s = sampler(workdir, module)
    rng = np.random.default_rng(0)
    quoted = 0
    for _ in range(30):
        e = s.sample(rng)
        ids = e.student
        assert builder.bos_id is None or ids[0] == builder.bos_id
        assert e.passages.shape == (4, 32) and len(e.latent_at) == 4
        for at in e.latent_at:  # each document's 8 latents sit between the block markers
            assert ids[at - 1] == builder.start_id and ids[at + 8] == builder.end_id
            assert set(ids[at : at + 8]) == {builder.placeholder_id}
        text = tok.decode([i for i in ids if i != builder.placeholder_id])
        assert text.count("Document: ") == 4 and INSTRUCTIONS.strip() in text
        assert text.endswith(f"\nQuestion: {e.question}\nAnswer:")
        assert tok.decode(e.answer) == f" {e.answer_text}\n"
        teacher = tok.decode(e.teacher)
        gold_text = re.fullmatch(r'.*\n\[1\] [^\n]*?: "(.*)"\n\nQuestion: .*', teacher, re.S).group(1)
        assert "\n[2] " not in teacher and "Document: " not in teacher  # the gold passage alone, quoted
        quotes = text.split("Passages quoted from the documents:")[-1] if "Passages quoted" in text else ""
        assert e.gold_quoted == (gold_text.strip() in quotes)
        quoted += e.gold_quoted
    assert 5 < quoted < 25  # some answers come from a quote, the others from the latents alone


def test_the_answer_loss_is_the_same_alone_or_padded_in_a_batch(workdir, module):
    s = sampler(workdir, module)
    rng = np.random.default_rng(1)
    a, b = s.sample(rng), s.sample(rng)
    if len(a.student) == len(b.student):
        b = s.sample(rng)
    (la, pa, xa), (lb, pb, xb), (lab, pab, xab) = (app_loss(module, batch, pad_id=0) for batch in ([a], [b], [a, b]))
    na, nb = len(a.answer), len(b.answer)
    assert pab["answer_ce"] == pytest.approx((pa["answer_ce"] * na + pb["answer_ce"] * nb) / (na + nb), rel=1e-4)
    assert pab["answer_kl"] == pytest.approx((pa["answer_kl"] * na + pb["answer_kl"] * nb) / (na + nb), abs=1e-6)
    assert xab.tolist() == [bool(xa[0]), bool(xb[0])]


def test_gradients_reach_the_adapter_and_both_loras_and_the_latents_matter(workdir, module):
    s = sampler(workdir, module)
    e = s.sample(np.random.default_rng(2))
    module.zero_grad(set_to_none=True)
    loss, parts, _ = app_loss(module, [e], pad_id=0)
    loss.backward()
    got = {("adapter" if ".adapter." in n else "encoder" if n.startswith("compressor.") else "decoder")
           for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert got == {"adapter", "encoder", "decoder"} and np.isfinite(parts["total"])
    other = type(e)(**{**e.__dict__, "passages": e.passages[::-1].copy()})  # the same prompt, other latents in place
    with torch.no_grad():
        assert app_loss(module, [other], pad_id=0)[1]["answer_ce"] != pytest.approx(parts["answer_ce"])


def test_teacher_answers_end_with_a_newline_and_replace_the_template(workdir, module):
    s = sampler(workdir, module)
    batch = [s.sample(np.random.default_rng(3)) for _ in range(2)]
    answers = teacher_answers(module, batch, max_new_tokens=4)
    newline = module.compressor.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert all(a[-len(newline):] == newline for a in answers)
    loss, parts, exact = app_loss(module, batch, pad_id=0, answers=answers)
    assert np.isfinite(parts["answer_ce"]) and len(exact) == 2


def test_the_app_stage_mixes_its_batches_resumes_and_is_measured_on_held_out_examples(workdir, tmp_path):
    out = tmp_path / "run"
    kw = dict(stage="app", passage_len=32, window=64, app_documents=3, app_quotes=2, app_teacher="base")
    train(config(workdir, out, steps=2, **kw))
    latest = train(config(workdir, out, steps=6, **kw))  # resumes at step 2
    ck = torch.load(latest, weights_only=False)
    logged = [h for h in ck["history"] if "loss" in h]
    assert [h["step"] for h in logged] == list(range(1, 7))
    assert {"app" if "app_answer_ce" in h else "plain" for h in logged} == {"app", "plain"}
    assert any(k.startswith("decoder.") and k.endswith("lora_B") and v.abs().sum() > 0 for k, v in ck["trainable"].items())
    fig = tmp_path / "fig.json"
    main(["eval", "--ckpt", str(latest), "--data", str(workdir / "shards"), "--examples", "0", "--qa-examples", "0",
          "--app-examples", "6", "--out", str(fig)])
    r = json.loads(fig.read_text())
    assert r["app_examples"] == 6 and r.get("app_quoted_n", 0) + r.get("app_latents_n", 0) == 6
    assert 0 <= r["app_teacher_exact"] <= 1 and 0 <= r["app_rag_exact"] <= 1
    # the same held-out examples for every checkpoint
    m, cfg, _ = module_from_checkpoint(latest)
    from lclm_core.train.trainer import app_sampler

    one = heldout_app(app_sampler(cfg, TokenShards(workdir / "shards", "heldout"), m), 3)
    two = heldout_app(app_sampler(cfg, TokenShards(workdir / "shards", "heldout"), m), 3)
    assert [e.student for e in one] == [e.student for e in two]


def test_teacher_targets_train_too(workdir, tmp_path):
    latest = train(config(workdir, tmp_path, steps=2, stage="app", passage_len=32, window=64, app_fraction=1.0,
                          app_targets="teacher", app_documents=2))
    assert all("app_answer_ce" in h for h in torch.load(latest, weights_only=False)["history"] if "loss" in h)
    with pytest.raises(ValueError, match="app_targets"):
        config(workdir, tmp_path, app_targets="oracle")


def test_shipped_parts_are_measured_by_the_same_eval_command(workdir, tmp_path):
    from safetensors.torch import save_file

    from lclm_core.checkpoint import save_adapter
    from lclm_core.lora import lora_state_dict

    latest = train(config(workdir, tmp_path / "run", steps=1, stage="app", passage_len=32, window=64, restricted_vocab=0))
    module, cfg, ck = module_from_checkpoint(latest)
    parts = tmp_path / "parts"  # the shipped layout, as export_parts writes it (its decoder is the default's)
    parts.mkdir()
    module.compressor.config.save(parts / "model_config.json")
    save_adapter(module.compressor.adapter, parts / "adapter" / "adapter.safetensors")
    for side, tree in (("encoder", module.compressor.encoder.backbone), ("decoder", module.decoder.model)):
        (parts / side).mkdir()
        save_file(lora_state_dict(tree), str(parts / side / "lora.safetensors"))
    (parts / "base.json").write_text(json.dumps({"tokens_seen": ck["tokens_seen"], "steps": 1, "train_config": ck["config"]}))
    from_parts, _, _ = module_from_checkpoint(parts)
    e = heldout_app(sampler(workdir, module), 1)
    with torch.no_grad():
        assert app_loss(from_parts, e, 0)[1]["total"] == pytest.approx(app_loss(module, e, 0)[1]["total"], rel=1e-5)


def test_the_teacher_is_the_decoder_as_the_stage_began_frozen_and_never_saved(workdir):
    from lclm_core.train.app_layout import freeze_teacher, teacher_of

    cfg = config(workdir, workdir / "unused", stage="app", passage_len=32, window=64, restricted_vocab=0)
    m = build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                     AutoTokenizer.from_pretrained(workdir / "decoder"))
    for n, p in m.named_parameters():  # a decoder LoRA that has learnt something
        if n.startswith("decoder.") and n.endswith("lora_B"):
            p.data.normal_(0, 0.5)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        adapted = m.decoder(input_ids=ids).logits
        with teacher_of(m) as base:  # no copy made: the untouched base decoder
            untouched = base(input_ids=ids).logits
        freeze_teacher(m)
        for n, p in m.named_parameters():
            if n.startswith("decoder.") and n.endswith("lora_B"):
                p.data.zero_()  # the run trains on; the teacher stays as it began
        with teacher_of(m) as t:
            frozen = t(input_ids=ids).logits
    assert not torch.allclose(adapted, untouched)
    torch.testing.assert_close(frozen, adapted)
    assert not any(k.startswith("app_teacher") for k in m.state_dict())
    assert not any(p.requires_grad for p in m.app_teacher.parameters())


def test_held_out_figures_read_the_whole_vocabulary_so_they_repeat(workdir):
    """Training scores a random subset of the vocabulary (the targets plus negatives); an evaluation that did
    so would move from call to call, and find an argmax among 64 words easier than among all of them."""
    from lclm_core.train.app_layout import evaluate_app

    cfg = config(workdir, workdir / "unused", stage="app", passage_len=32, window=64, restricted_vocab=64)
    m = build_module(cfg, AutoModelForCausalLM.from_pretrained(workdir / "decoder"),
                     AutoTokenizer.from_pretrained(workdir / "decoder"))
    examples = heldout_app(sampler(workdir, m), 4)
    first, second = evaluate_app(m, examples, 0), evaluate_app(m, examples, 0)
    assert first == second and m.restricted_vocab == 64
