import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))  # tests/tiny.py

import pytest  # noqa: E402

import data  # noqa: E402  (tests/data.py: real PDFs from Debian packages, test compressors)


@pytest.fixture(scope="session")
def r_intro_pdf() -> Path:
    """Debian's R-intro.pdf (package r-doc-pdf), installed if missing and possible."""
    why = data.ensure_files(data.R_INTRO)
    if why:
        pytest.skip(why)
    return data.R_INTRO


@pytest.fixture(scope="session")
def debian_reference_pdf() -> Path:
    """The Debian Reference PDF (package debian-reference-en): text extraction loses spaces."""
    why = data.ensure_files(data.DEBIAN_REFERENCE)
    if why:
        pytest.skip(why)
    return data.DEBIAN_REFERENCE


@pytest.fixture(scope="session")
def tiny_compressor():
    """A real LCLMCompressor on a tiny random encoder (window 32, N=4)."""
    return data.tiny_compressor()


@pytest.fixture
def fake_compressor():
    return data.FakeCompressor()


@pytest.fixture
def store(tmp_path):
    """An empty store in a fresh data directory."""
    from latent_store import LatentStore

    with LatentStore(tmp_path / "data" / "store.sqlite") as s:
        yield s


@pytest.fixture
def folder(tmp_path) -> Path:
    """An empty documents folder (resolved: the app stores resolved paths)."""
    d = tmp_path / "docs"
    d.mkdir()
    return d.resolve()


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A published-layout LCLM checkpoint with tiny random weights (what `--checkpoint` loads)."""
    import tiny
    from lclm_core.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("ckpt") / "tiny-LCLM-4x"
    save_checkpoint(root, data.tiny_compressor(), tiny.decoder("qwen"), tiny.tokenizer("qwen"))
    return root

