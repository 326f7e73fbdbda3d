"""The serialised latent form the store persists: dtype, shape, fingerprint, ratio, bytes."""

import pytest
import torch

from lclm_core.latents import LatentArray


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_bytes_round_trip_is_exact(dtype):
    a = LatentArray(torch.randn(7, 12).to(dtype), "f" * 32, 8)
    b = LatentArray.from_bytes(a.to_bytes())
    assert (b.fingerprint, b.ratio, b.shape, b.dtype_name) == (a.fingerprint, 8, (7, 12), a.dtype_name)
    assert torch.equal(a.data, b.data)
    c = LatentArray.from_payload(a.payload(), a.dtype_name, a.shape, a.fingerprint, a.ratio)
    assert torch.equal(a.data, c.data)


def test_payload_is_compact():
    a = LatentArray(torch.zeros(10, 640, dtype=torch.float16), "x", 4)
    assert len(a.payload()) == 10 * 640 * 2


def test_corrupt_or_foreign_blobs_are_refused():
    a = LatentArray(torch.zeros(3, 4), "x", 4)
    with pytest.raises(ValueError, match="magic"):
        LatentArray.from_bytes(b"NOPE" + a.to_bytes()[4:])
    with pytest.raises(ValueError, match="shape"):
        LatentArray.from_payload(a.payload()[:-4], "float32", (3, 4), "x", 4)
    with pytest.raises(ValueError, match="dtype"):
        LatentArray.from_payload(a.payload(), "int8", (3, 4), "x", 4)
    with pytest.raises(ValueError, match="2-D"):
        LatentArray(torch.zeros(3), "x", 4)
