"""Turn a published LCLM checkpoint's ``decoder/`` into a GGUF, and pair it with the torch compressor.

llama.cpp's own converter (``convert_hf_to_gguf.py`` with its ``conversion``
package and ``gguf-py``) does the conversion; we never re-implement it. It is
taken, in order, from ``--llama-cpp-dir`` / ``$LLAMA_CPP_DIR`` (a llama.cpp
checkout), a copy already extracted into the user cache, or — when online —
the sdist of the installed llama-cpp-python release on PyPI (which vendors the
matching llama.cpp), checked against the sha256 the index publishes.

    lclm-docs convert-decoder ~/models/0.6b-4b-LCLM-8x --outtype q8_0
    # then: ask/serve with --checkpoint ~/models/0.6b-4b-LCLM-8x --backend llama.cpp

The memory tokens (<|memory_start|> ...) are ordinary added tokens of the
decoder's tokenizer, so they carry over into the GGUF vocabulary.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError, LoadedCheckpoint, load_checkpoint, resolve_checkpoint_dir
from .device import Placement

log = logging.getLogger(__name__)

CONVERTER = "convert_hf_to_gguf.py"
SIMPLE_INDEX = "https://pypi.org/simple/llama-cpp-python/"
OUTTYPES = ("f32", "f16", "bf16", "q8_0")


class ConverterError(RuntimeError):
    """The converter cannot be had or failed; the message says what to do."""


def _installed_version() -> str:
    import llama_cpp

    return llama_cpp.__version__


def _has_converter(d: Path) -> bool:
    return (d / CONVERTER).is_file() and (d / "gguf-py" / "gguf").is_dir()


def _fetch_sdist(version: str, dest: Path) -> Path:
    """Extract the converter and its packages from llama-cpp-python's sdist on PyPI."""
    name = f"llama_cpp_python-{version}.tar.gz"
    try:
        html = urllib.request.urlopen(SIMPLE_INDEX, timeout=30).read().decode()
        m = re.search(r'href="([^"]*/' + re.escape(name) + r')#sha256=([0-9a-f]{64})"', html)
        if not m:
            raise ConverterError(f"{name} is not on PyPI's index")
        url, sha = m.groups()
        log.info("downloading %s to get llama.cpp's converter (once)", name)
        blob = urllib.request.urlopen(url, timeout=600).read()
    except OSError as e:
        raise ConverterError(
            f"llama.cpp's converter is not on this machine and PyPI cannot be reached ({e}); "
            "pass --llama-cpp-dir pointing at a llama.cpp checkout"
        ) from e
    if hashlib.sha256(blob).hexdigest() != sha:
        raise ConverterError(f"{name}: sha256 does not match PyPI's index; not using it")
    top = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    keep = (top + CONVERTER, top + "conversion/", top + "gguf-py/")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(keep) and (m.isfile() or m.isdir())]
        for m in members:
            m.name = m.name[len(top):]
        # The "data" filter refuses links and paths out of tmp (Python >= 3.10.12).
        kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(tmp, members=members, **kw)
    tmp.rename(dest)
    return dest


def find_converter(llama_cpp_dir: str | os.PathLike | None = None) -> Path:
    """A directory holding convert_hf_to_gguf.py, conversion/ and gguf-py/."""
    given = llama_cpp_dir or os.environ.get("LLAMA_CPP_DIR")
    if given:
        d = Path(given).expanduser()
        if not _has_converter(d):
            raise ConverterError(f"{d} has no {CONVERTER} and gguf-py/: is it a llama.cpp checkout?")
        return d
    from .default_model import cache_dir

    version = _installed_version()
    d = cache_dir() / f"llama.cpp-converter-{version}"
    if _has_converter(d):
        return d
    d.parent.mkdir(parents=True, exist_ok=True)
    return _fetch_sdist(version, d)


def convert_decoder(checkpoint: str | os.PathLike, out: Path | None = None, outtype: str = "f16",
                    llama_cpp_dir: str | os.PathLike | None = None) -> Path:
    """Run llama.cpp's converter on <checkpoint>/decoder; returns the GGUF path."""
    if outtype not in OUTTYPES:
        raise ValueError(f"outtype must be one of {OUTTYPES}")
    root = resolve_checkpoint_dir(checkpoint)
    if not (root / "decoder" / "config.json").exists():
        raise CheckpointError(f"{root}: no decoder/ to convert")
    out = Path(out or root / f"decoder-{outtype}.gguf")
    conv = find_converter(llama_cpp_dir)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(conv / "gguf-py"), str(conv)])}
    cmd = [sys.executable, str(conv / CONVERTER), str(root / "decoder"), "--outfile", str(out), "--outtype", outtype]
    log.info("converting %s -> %s", root / "decoder", out)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0 or not out.exists():
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-5:])
        raise ConverterError(f"llama.cpp's converter failed on {root / 'decoder'}:\n{tail}")
    return out


@dataclass
class LlamaPair:
    """A checkpoint's torch compressor and its decoder in llama.cpp."""

    checkpoint: LoadedCheckpoint
    decoder: object  # LlamaCppDecoder

    def close(self) -> None:
        self.decoder.close()


def load_with_gguf(checkpoint: str | os.PathLike, gguf: str | os.PathLike, placement: Placement | None = None,
                   **llama_kw) -> LlamaPair:
    """The compressor (encoder + adapter, torch) of a checkpoint with its decoder as a GGUF in llama.cpp."""
    from transformers import AutoTokenizer

    from .llama_backend import LlamaCppDecoder

    ck = load_checkpoint(checkpoint, placement, load_decoder=False)
    tok = AutoTokenizer.from_pretrained(ck.path / "decoder")
    dec = LlamaCppDecoder(gguf, tok, ck.compressor.config.memory_tokens, **llama_kw)
    if dec.hidden_size != ck.compressor.dec_dim:
        dec.close()
        raise CheckpointError(f"{gguf}: hidden size {dec.hidden_size} but the adapter outputs {ck.compressor.dec_dim}")
    ck.decoder_tokenizer = tok
    return LlamaPair(ck, dec)
