"""The runtime on the real embedded default: switching the compression ratio re-encodes the library."""

import pytest

from app.runtime import Reply, Runtime
from app.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_new_ratio_re_encodes_every_document_and_answers_meanwhile(tmp_path, folder):
    (folder / "ops.txt").write_text("The Zorblax cluster runs on port 7431 and is administered by Mira Quell.\n")
    (folder / "tea.txt").write_text("Green tea should be brewed at 80 degrees Celsius for two minutes.\n")
    settings = Settings(data_dir=tmp_path / "data", device="cpu", ratio=4)
    with Runtime(settings).start([folder]) as rt:
        assert rt.wait_idle(300)
        n4 = rt.models.compressor.fingerprint
        msg = rt.configure(ratio=8)
        assert "N=8" in msg and "re-encoding" in msg
        n8 = rt.models.compressor.fingerprint
        assert n8 != n4 and rt.settings.ratio == 8
        *_, reply = rt.ask("What port does the Zorblax cluster run on?", max_new_tokens=16)
        assert isinstance(reply, Reply) and "7431" in reply.answer.text
        assert rt.wait_idle(300)
        stats = rt.store.stats()
        assert stats.latents_by_fingerprint.get(n8) == stats.segments  # every segment has N=8 latents now


def test_the_llama_cpp_backend_answers_from_the_settings_switch(tmp_path, folder):
    (folder / "ops.txt").write_text("The Zorblax cluster runs on port 7431 and is administered by Mira Quell.\n")
    with Runtime(Settings(data_dir=tmp_path / "data", device="cpu")).start([folder]) as rt:
        assert rt.wait_idle(300)
        assert rt.configure(backend="llama.cpp") == "backend: llama.cpp"
        *_, reply = rt.ask("What port does the Zorblax cluster run on?", max_new_tokens=16)
        assert "7431" in reply.answer.text and reply.answer.citations[0].path.endswith("ops.txt")
