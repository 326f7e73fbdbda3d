import json

import pytest

from lclm_core.config import LCLMConfig, MemoryTokens


def test_published_keys_round_trip_and_unknown_keys_survive(tmp_path):
    published = {
        "compression_ratio": 16, "encoder_window_size": 1024, "pooling": "mean",
        "encoder_mask_type": "causal", "boundary_overlap": 0, "adapter_type": "mlp",
        "some_future_key": [1, 2],
    }
    (tmp_path / "model_config.json").write_text(json.dumps(published))
    cfg = LCLMConfig.load(tmp_path / "model_config.json")
    assert cfg.compression_ratio == 16 and cfg.extra == {"some_future_key": [1, 2]}
    cfg.save(tmp_path / "again.json")
    again = json.loads((tmp_path / "again.json").read_text())
    assert {k: again[k] for k in published} == published
    assert LCLMConfig.load(tmp_path / "again.json") == cfg


@pytest.mark.parametrize("n", [1, 3, 4, 8, 16])
def test_any_integer_ratio_is_accepted(n):
    cfg = LCLMConfig(compression_ratio=n, encoder_window_size=48 * n)
    assert (cfg.n_latents(0), cfg.n_latents(1), cfg.n_latents(n), cfg.n_latents(n + 1)) == (0, 1, 1, 2)


def test_latent_count_is_ceil_of_tokens_over_ratio():
    cfg = LCLMConfig(compression_ratio=8, encoder_window_size=64)
    assert [cfg.n_latents(t) for t in (0, 1, 7, 8, 9, 64, 65)] == [0, 1, 1, 1, 2, 8, 9]


@pytest.mark.parametrize(
    "kw, words",
    [
        ({"compression_ratio": 0}, "compression_ratio"),
        ({"compression_ratio": 8, "encoder_window_size": 100}, "multiple"),
        ({"pooling": "max"}, "pooling"),
        ({"encoder_mask_type": "sliding"}, "encoder_mask_type"),
        ({"boundary_overlap": 1024}, "boundary_overlap"),
        ({"adapter_type": "qformer"}, "adapter_type"),
    ],
)
def test_bad_values_are_refused_with_the_key_named(kw, words):
    with pytest.raises(ValueError, match=words):
        LCLMConfig(**kw)


def test_memory_tokens_from_dict():
    cfg = LCLMConfig.from_dict({"memory_tokens": {"start": "a", "placeholder": "b", "end": "c"}})
    assert cfg.memory_tokens == MemoryTokens("a", "b", "c")
