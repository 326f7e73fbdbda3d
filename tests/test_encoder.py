"""The encoder follows the paper: fixed windows, restarted positions, group pooling, ceil(T/N) latents."""

import pytest
import torch

import tiny
from lclm_core.config import LCLMConfig
from lclm_core.encoder import LatentEncoder, make_windows, pool_groups

N, W = 4, 16


def encoder(family="qwen", **kw) -> LatentEncoder:
    cfg = LCLMConfig(**{"compression_ratio": N, "encoder_window_size": W, **kw})
    prefix = tiny.tokenizer(family)("", add_special_tokens=True)["input_ids"]
    return LatentEncoder(tiny.encoder_backbone(family), cfg, pad_token_id=0, prefix_ids=prefix)


def ids(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, 390, (n,), generator=g).tolist()


def same(x: torch.Tensor, y: torch.Tensor) -> None:
    """Equal up to kernel rounding (a row's result may depend on its place in the batch)."""
    torch.testing.assert_close(x, y, rtol=0, atol=1e-5)


def different(x: torch.Tensor, y: torch.Tensor) -> bool:
    return bool((x - y).abs().max() > 1e-3)


def hand_states(enc: LatentEncoder, window_ids: list[int]) -> torch.Tensor:
    """The backbone on one window alone, positions 0.., no padding: (L, D)."""
    x = torch.tensor([window_ids])
    with torch.no_grad():
        return enc.backbone(input_ids=x, position_ids=torch.arange(len(window_ids))[None]).last_hidden_state[0].float()


@pytest.mark.parametrize("family", ["qwen", "gemma"])
@pytest.mark.parametrize("pooling", ["mean", "concat", "eos"])
def test_latent_count_is_ceil_tokens_over_ratio(family, pooling):
    enc = encoder(family, pooling=pooling)
    lengths = [0, 1, N - 1, N, W, W + 1, 5 * W + 3]
    out = enc.encode([ids(t, seed=t) for t in lengths], windows_per_batch=3)
    assert [x.shape[0] for x in out] == [-(-t // N) for t in lengths]
    width = 32 * N if pooling == "concat" else 32
    assert all(x.shape[1] == width for x in out)
    assert all(torch.isfinite(x).all() for x in out)


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_causal_windows_do_not_see_each_other(family):
    enc = encoder(family)
    a = ids(3 * W)
    b = list(a)
    b[W + 5] = 7 if a[W + 5] != 7 else 8  # a token in window 2
    la, lb = enc.encode([a, b])
    per_window = W // N
    same(la[:per_window], lb[:per_window])  # window 1 untouched
    same(la[2 * per_window :], lb[2 * per_window :])  # window 3 too
    assert different(la[per_window + 1], lb[per_window + 1])  # the group holding the change
    # Causal inside the window as well: the group before the change is unchanged.
    same(la[per_window], lb[per_window])


@pytest.mark.parametrize("family", ["qwen", "gemma"])
def test_bidirectional_window_sees_later_tokens_but_not_other_windows(family):
    enc = encoder(family, encoder_mask_type="bidirectional")
    a = ids(2 * W)
    b = list(a)
    b[W - 1] = 7 if a[W - 1] != 7 else 8  # last token of window 1
    la, lb = enc.encode([a, b])
    assert different(la[0], lb[0])  # the first group saw the last token
    same(la[W // N :], lb[W // N :])


def test_bidirectional_sliding_layers_keep_their_window():
    """Gemma's sliding layers (window 16 in the tiny model) stay local in both directions."""
    cfg = LCLMConfig(compression_ratio=N, encoder_window_size=64, encoder_mask_type="bidirectional")
    backbone = tiny.encoder_backbone("gemma", layers=1, layer_types=["sliding_attention"])
    enc = LatentEncoder(backbone, cfg)
    a = ids(64)
    b = list(a)
    b[63] = 7 if a[63] != 7 else 8
    la, lb = enc.encode([a, b])
    same(la[0], lb[0])  # 63 positions away: out of the window
    assert different(la[-1], lb[-1])


def test_mean_pooling_equals_a_hand_computation():
    enc = encoder()
    text = ids(W + 6)  # one full window and a partial one
    (lat,) = enc.encode([text])
    s1 = hand_states(enc, text[:W])
    s2 = hand_states(enc, text[W:])  # positions restart at 0 in window 2
    expect = torch.cat([s1.reshape(W // N, N, -1).mean(1), s2[:4].mean(0, keepdim=True), s2[4:].mean(0, keepdim=True)])
    torch.testing.assert_close(lat, expect, rtol=1e-5, atol=1e-5)


def test_prefix_tokens_are_read_but_not_pooled():
    enc = encoder("gemma")
    assert enc.prefix_ids == (2,)
    text = ids(N * 2)
    (lat,) = enc.encode([text])
    s = hand_states(enc, [2] + text)[1:]
    torch.testing.assert_close(lat, s.reshape(2, N, -1).mean(1), rtol=1e-5, atol=1e-5)


def test_boundary_overlap_gives_left_context_without_extra_latents():
    enc = encoder(boundary_overlap=3)
    text = ids(W + 8)
    (lat,) = enc.encode([text])
    assert lat.shape[0] == (W + 8) // N
    s2 = hand_states(enc, text[W - 3 :])[3:]  # the overlap shapes window 2's states but is not pooled
    torch.testing.assert_close(lat[W // N :], s2.reshape(2, N, -1).mean(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("pooling", ["concat", "eos"])
def test_concat_and_eos_pooling(pooling):
    enc = encoder(pooling=pooling)
    text = ids(N + 2)
    (lat,) = enc.encode([text])
    s = hand_states(enc, text)
    if pooling == "concat":
        expect = torch.stack([s[:N].reshape(-1), torch.cat([s[N:].reshape(-1), torch.zeros((N - 2) * s.shape[1])])])
    else:
        expect = torch.stack([s[N - 1], s[-1]])
    torch.testing.assert_close(lat, expect, rtol=1e-5, atol=1e-5)


def test_batching_and_padding_do_not_change_latents():
    enc = encoder()
    texts = [ids(n, seed=n) for n in (3, W, 2 * W + 5, 7)]
    together = enc.encode(texts, windows_per_batch=8)
    alone = [enc.encode([t], windows_per_batch=1)[0] for t in texts]
    for x, y in zip(together, alone):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


def test_windows_are_cut_every_w_tokens():
    cfg = LCLMConfig(compression_ratio=N, encoder_window_size=W, boundary_overlap=2)
    ws = make_windows([list(range(2 * W + 1))], cfg, prefix=(99,))
    assert [len(w.content) for w in ws] == [W, W, 1]
    assert ws[0].context == (99,) and ws[1].context == (99, W - 2, W - 1)


def test_pool_groups_ignores_padding():
    states = torch.arange(8, dtype=torch.float32).reshape(1, 8, 1)
    valid = torch.tensor([[True] * 5 + [False] * 3])
    out = pool_groups(states, valid, 4, "mean")
    assert out[0, :, 0].tolist() == [1.5, 4.0]
