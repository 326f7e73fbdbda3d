"""The serialised form of a latent array, as the latent store persists it.

A latent array is the adapter output for one span of text: ``(n_latents,
dec_dim)`` rows in the decoder's input space. It travels with the fingerprint
of the encoder+adapter that made it (latents from another compressor are
meaningless to this one) and the compression ratio. The byte form is
self-describing (magic, version, dtype, shape, ratio, fingerprint) so a blob
read back alone can be checked; the store may also keep those fields as
columns.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

import numpy as np
import torch

_MAGIC = b"LCLM"
_VERSION = 1
# Storage dtypes. bfloat16 has no numpy type: it travels as its raw 16 bits.
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class LatentArray:
    """Latents of one text span, in the decoder's input space.

    data: (n_latents, dec_dim) tensor, on the CPU, in the storage dtype.
    fingerprint: hex digest of the compressor (encoder + adapter + config).
    ratio: the compression ratio N that made them.
    """

    data: torch.Tensor
    fingerprint: str
    ratio: int

    def __post_init__(self) -> None:
        if self.data.ndim != 2:
            raise ValueError(f"latents must be 2-D (n_latents, dim), got shape {tuple(self.data.shape)}")
        if self.dtype_name not in _DTYPES:
            raise ValueError(f"unsupported latent dtype {self.data.dtype}")

    @property
    def dtype_name(self) -> str:
        return str(self.data.dtype).removeprefix("torch.")

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)  # type: ignore[return-value]

    def __len__(self) -> int:
        return self.data.shape[0]

    def to(self, dtype: torch.dtype) -> "LatentArray":
        return LatentArray(self.data.to(dtype), self.fingerprint, self.ratio)

    # --- raw payload (the store keeps dtype/shape/fingerprint as columns) ----
    def payload(self) -> bytes:
        t = self.data.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        return t.numpy().tobytes()

    @classmethod
    def from_payload(cls, blob: bytes, dtype: str, shape: tuple[int, int], fingerprint: str, ratio: int) -> "LatentArray":
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported latent dtype {dtype!r}")
        np_dtype = np.int16 if dtype == "bfloat16" else np.dtype(dtype)
        arr = np.frombuffer(blob, dtype=np_dtype)
        if arr.size != shape[0] * shape[1]:
            raise ValueError(f"latent blob holds {arr.size} values, shape {shape} needs {shape[0] * shape[1]}")
        t = torch.from_numpy(arr.copy()).reshape(shape)
        if dtype == "bfloat16":
            t = t.view(torch.bfloat16)
        return cls(t, fingerprint, ratio)

    # --- self-describing bytes -----------------------------------------------
    def to_bytes(self) -> bytes:
        header = json.dumps(
            {"v": _VERSION, "dtype": self.dtype_name, "shape": list(self.shape), "ratio": self.ratio, "fingerprint": self.fingerprint},
            separators=(",", ":"),
        ).encode()
        return _MAGIC + struct.pack("<I", len(header)) + header + self.payload()

    @classmethod
    def from_bytes(cls, blob: bytes) -> "LatentArray":
        if blob[:4] != _MAGIC:
            raise ValueError("not a serialised latent array (bad magic)")
        (n,) = struct.unpack("<I", blob[4:8])
        h = json.loads(blob[8 : 8 + n])
        if h["v"] != _VERSION:
            raise ValueError(f"latent array format version {h['v']} is not supported (expected {_VERSION})")
        return cls.from_payload(blob[8 + n :], h["dtype"], tuple(h["shape"]), h["fingerprint"], h["ratio"])
