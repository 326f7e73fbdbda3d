"""The decoder stage's LoRA as the app runs it: merged into a copy for torch, a GGUF adapter for llama.cpp."""

import copy
import json

import numpy as np
import pytest
import torch

import tiny
from lclm_core.default_model import adapted_copy
from lclm_core.gguf_lora import gguf_lora_tensors, write_gguf_lora
from lclm_core.lora import apply_lora, lora_state_dict


def random_lora(model, rank=4, std=0.05, seed=0) -> dict[str, torch.Tensor]:
    """A/B keyed as the parts ship them ("layers.K....lora_A"), with B non-zero so that it changes the output."""
    torch.manual_seed(seed)
    layers = copy.deepcopy(model.model.layers)
    apply_lora(layers, rank, 16.0)
    return {f"layers.{k}": (v if k.endswith("lora_A") else torch.randn_like(v) * std)
            for k, v in lora_state_dict(layers).items()}


def test_the_adapted_copy_computes_the_lora_model_and_leaves_the_base_alone():
    base = tiny.decoder("gemma", layers=2)
    ids = torch.tensor([[2, 17, 33, 54, 9, 71]])
    with torch.no_grad():
        before = base(ids).logits
    lora = random_lora(base)
    adapted = adapted_copy(base, lora, scale=4.0)
    # The same LoRA as live wrappers on another copy: what the trainer ran.
    wrapped = copy.deepcopy(base)
    apply_lora(wrapped.model.layers, 4, 16.0)
    wrapped.load_state_dict({f"model.{k}": v for k, v in lora.items()}, strict=False)
    with torch.no_grad():
        got, want, after = adapted(ids).logits, wrapped(ids).logits, base(ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - before).abs().max() > 1e-2  # the LoRA does change the output
    torch.testing.assert_close(after, before, rtol=0, atol=0)  # the base is untouched
    # Only the layers are copied: embeddings (the 262k-row matrix of Gemma) are shared.
    assert adapted.model.embed_tokens.weight is base.model.embed_tokens.weight
    assert adapted.model.layers[0].self_attn.q_proj.weight is not base.model.layers[0].self_attn.q_proj.weight


def test_the_adapted_copy_reads_out_attention_like_the_base():
    """The attention skim and SnapKV switch the decoder to eager attention to read it: the switch must
    reach the copied layers (they once kept a config of their own, and returned no attentions)."""
    base = tiny.decoder("gemma", layers=2)
    adapted = adapted_copy(base, random_lora(base), scale=4.0)
    assert all(layer.self_attn.config is adapted.config for layer in adapted.model.layers)
    ids = torch.tensor([[2, 17, 33, 54, 9, 71]])
    adapted.set_attn_implementation("eager")
    try:
        # The base keeps its own setting: switching the copy does not switch the shared, cached base.
        assert base.config._attn_implementation == "sdpa"
        with torch.no_grad():
            out = adapted(ids, output_attentions=True)
    finally:
        adapted.set_attn_implementation("sdpa")
    assert len(out.attentions) == 2 and out.attentions[0].shape[-2:] == (6, 6)


def test_parts_replaced_on_disk_replace_the_merged_copy_instead_of_adding_one(tmp_path):
    """A running app holds one merged copy per LoRA file; new parts under the same path must not leave
    the stale copy (its own layers, ~400 MB for Gemma-270M in fp32) alive beside the new one."""
    from safetensors.torch import save_file

    from lclm_core import default_model as dm
    from lclm_core.checkpoint import files_digest

    base = tiny.decoder("gemma", layers=2)
    f = tmp_path / "lora.safetensors"
    save_file(random_lora(base, seed=0), str(f))
    first, _ = dm._adapted_decoder((base, None), f, 4.0, files_digest([f]))
    assert dm._adapted_decoder((base, None), f, 4.0, files_digest([f]))[0] is first  # merged once
    save_file(random_lora(base, seed=1), str(f))
    second, _ = dm._adapted_decoder((base, None), f, 4.0, files_digest([f]))
    assert second is not first
    assert sum(key[0] == id(base) for key in dm._adapted) == 1
    ids = torch.tensor([[2, 17, 33, 54]])
    with torch.no_grad():
        assert (first(ids).logits - second(ids).logits).abs().max() > 1e-3  # the new matrices, not the old


def test_gguf_adapter_names_shapes_and_alpha_are_what_llama_cpp_reads(tmp_path):
    import gguf

    base = tiny.decoder("gemma", layers=2)
    lora = random_lora(base, rank=4)
    names = gguf_lora_tensors(lora, "gemma3")
    assert "blk.1.attn_q.weight.lora_a" in names and "blk.0.ffn_down.weight.lora_b" in names
    assert len(names) == len(lora) == 2 * 7 * 2
    out = write_gguf_lora(lora, 4.0, tmp_path / "a.gguf", "gemma3")
    r = gguf.GGUFReader(str(out))
    field = lambda k: r.fields[k].parts[r.fields[k].data[0]]  # noqa: E731
    assert bytes(field("general.type")).decode() == "adapter"
    assert bytes(field("adapter.type")).decode() == "lora"
    assert float(field("adapter.lora.alpha")[0]) == pytest.approx(4.0 * 4)  # llama.cpp scales by alpha / rank
    tensors = {t.name: t for t in r.tensors}
    q = base.model.layers[1].self_attn.q_proj.weight
    a, b = tensors["blk.1.attn_q.weight.lora_a"], tensors["blk.1.attn_q.weight.lora_b"]
    # ggml lists dimensions innermost first: A is (rank x in), B is (out x rank) in torch order.
    assert list(a.shape) == [q.shape[1], 4] and list(b.shape) == [4, q.shape[0]]
    np.testing.assert_array_equal(np.asarray(b.data).reshape(q.shape[0], 4),
                                  lora["layers.1.self_attn.q_proj.lora_B"].numpy())


def test_a_matrix_without_its_partner_or_outside_the_model_is_refused():
    lora = random_lora(tiny.decoder("gemma", layers=2))
    lonely = {k: v for k, v in lora.items() if k != "layers.0.self_attn.q_proj.lora_B"}
    with pytest.raises(ValueError, match="no partner"):
        gguf_lora_tensors(lonely, "gemma3")
    with pytest.raises(ValueError, match="not a LoRA"):
        gguf_lora_tensors({"layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}, "gemma3")


# --- the real default decoder ----------------------------------------------------------------
@pytest.fixture(scope="module")
def parts_with_decoder_lora(tmp_path_factory):
    """Hand-made N = 4 parts whose only trained piece is a decoder LoRA of visible size."""
    from lclm_core.adapter import MLPAdapter
    from lclm_core.checkpoint import save_adapter
    from lclm_core.default_model import default_config, gguf_sha256, load_default_decoder
    from lclm_core.device import Placement
    from safetensors.torch import save_file

    model, tok = load_default_decoder(Placement(torch.device("cpu"), torch.float32))
    root = tmp_path_factory.mktemp("parts")
    d = root / "ratio-4"
    (d / "decoder").mkdir(parents=True)
    default_config(4).save(d / "model_config.json")
    torch.manual_seed(1)
    save_adapter(MLPAdapter(640, 640), d / "adapter" / "adapter.safetensors")
    save_file(random_lora(model, rank=8, std=0.02), str(d / "decoder" / "lora.safetensors"))
    (d / "base.json").write_text(json.dumps({"gguf_sha256": gguf_sha256(), "decoder_lora_scale": 4.0}))
    return root


@pytest.mark.integration
def test_llama_cpp_applies_the_shipped_decoder_lora_as_torch_merges_it(parts_with_decoder_lora, tmp_path, monkeypatch):
    from lclm_core import default_model as dm
    from lclm_core.device import Placement
    from lclm_core.llama_backend import open_default

    monkeypatch.setattr(dm, "cache_dir", lambda: tmp_path)  # the GGUF adapter is written here
    cpu = Placement(torch.device("cpu"), torch.float32)
    base, tok = dm.load_default_decoder(cpu)
    adapted, _ = dm.load_default_decoder(cpu, ratio=4, parts_dir=parts_with_decoder_lora)
    assert adapted is not base and dm.load_default_decoder(cpu, ratio=8, parts_dir=parts_with_decoder_lora)[0] is base
    assert dm.load_default_decoder(cpu, ratio=4, parts_dir=parts_with_decoder_lora)[0] is adapted  # merged once
    ids = tok("The capital of France is Paris. The capital of Italy is")["input_ids"]
    with torch.no_grad():
        t_base, t_adapted = (m(torch.tensor([ids])).logits[0, -1] for m in (base, adapted))

    def llama_logits(**kw) -> torch.Tensor:
        dec = open_default(tok, n_ctx=256, **kw)
        try:
            dec.ctx.decode_tokens(ids, 0, True)
            return torch.tensor(np.array(dec.ctx.logits())), dec.fingerprint
        finally:
            dec.close()

    l_base, fp_base = llama_logits()
    l_adapted, fp_adapted = llama_logits(ratio=4, parts_dir=parts_with_decoder_lora)
    assert list(tmp_path.glob("lora/decoder-n4-*.gguf"))
    moved = (t_adapted - t_base).abs().max()
    # llama.cpp's quantized matmuls differ from the dequantized torch model by ~1 logit (measured 0.99 on
    # the base); the LoRA moves logits by ~9. Each backend's adapted logits sit with the other's.
    assert moved > 4
    assert (l_adapted - t_adapted).abs().max() < 0.3 * moved
    assert (l_base - t_base).abs().max() < 0.3 * moved
    assert fp_adapted != fp_base  # cached prefix states of one never restore into the other
