"""The runtime behind the UI, on a tiny published-layout checkpoint: library, chats, expansion, settings."""

import threading
import time

import pytest

from app.assistant import Assistant, AssistantError
from app.runtime import Reply, Runtime
from app.services import ServiceError
from app.settings import Settings
from latent_store import SegmentIn
import data
from data import wait_for

OPS = "The Zorblax cluster listens on port 7431.\n\nBackups run nightly to the Lisbon vault.\n"
TEA = "Green tea is brewed at eighty degrees.\n\nBlack tea wants boiling water.\n"


@pytest.fixture
def docs(folder):
    (folder / "ops.txt").write_text(OPS)
    (folder / "tea.txt").write_text(TEA)
    return folder


@pytest.fixture
def runtime(tmp_path, tiny_checkpoint, docs):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", dtype="float32", checkpoint=str(tiny_checkpoint))
    rt = Runtime(settings, debounce_s=0.1).start([docs])
    assert rt.wait_idle(60)
    yield rt
    rt.close()


def run(stream):
    pieces = list(stream)
    assert isinstance(pieces[-1], Reply)
    return "".join(p for p in pieces[:-1]), pieces[-1]


def test_folders_given_at_start_are_watched_and_indexed(runtime, docs):
    assert runtime.folders() == [str(docs)]
    assert sorted(d.status for d in runtime.documents()) == ["indexed", "indexed"]
    st = runtime.status()
    assert not st.active and st.by_status["indexed"] == 2 and "Idle" in st.line()


def test_a_question_streams_and_is_kept_in_a_new_chat_with_its_citations(runtime, docs):
    text, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=4))
    assert text.strip() == reply.answer.text
    assert reply.answer.citations[0].path == str(docs / "ops.txt")
    [chat] = runtime.chats()
    assert chat.id == reply.chat_id and chat.title.startswith("Which port")
    user, bot = runtime.messages(chat.id)
    assert (user.role, user.content) == ("user", "Which port does the Zorblax cluster listen on?")
    assert bot.id == reply.message_id and bot.content == reply.answer.text
    cited = [c for c in bot.citations if c["kind"] == "cited"]
    assert cited[0]["segment_id"] == reply.answer.citations[0].segment_id and "7431" in cited[0]["text"]


def test_a_follow_up_goes_to_the_same_chat(runtime):
    _, first = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    _, second = run(runtime.ask("How is green tea brewed?", first.chat_id, max_new_tokens=2))
    assert second.chat_id == first.chat_id and len(runtime.messages(first.chat_id)) == 4


def test_expand_reads_one_more_passage_and_answers_the_same_question_again(runtime, docs):
    runtime.set_answering(expand_k=1)
    _, reply = run(runtime.ask("Where do the Zorblax backups run, and how is tea brewed?", max_new_tokens=2))
    read = set(reply.answer.expanded)
    extra = next(d for d in runtime.documents() if d.path.endswith("tea.txt"))
    seg = runtime.store.get_segments(extra.id)[0].id
    _, again = run(runtime.expand(reply.chat_id, reply.message_id, seg, max_new_tokens=2))
    assert seg in again.answer.expanded and read <= set(again.answer.expanded)
    assert again.answer.question == reply.answer.question
    msgs = runtime.messages(reply.chat_id)
    assert msgs[-1].id == again.message_id
    # the request to read it is stored too, so a reopened chat shows why the question was answered again
    assert msgs[-2].role == "user" and msgs[-2].content == "Read tea.txt too and answer again."
    _, third = run(runtime.expand(reply.chat_id, again.message_id, seg, max_new_tokens=2))
    assert third.answer.question == reply.answer.question  # the stored request is never taken for the question


def _talkative(backend, monkeypatch, words: int = 200):
    """The decoder as a model that goes on and on (the tiny random one may stop at once)."""
    def talk(cfg=None, logits=None, result=None):
        for i in range(words):
            if result is not None:
                result.token_ids.append(i)
            yield f"word{i} "
    monkeypatch.setattr(backend, "generate", talk)


def test_stop_ends_the_answer_keeps_what_was_shown_and_the_next_question_works(runtime, monkeypatch):
    _talkative(runtime._get_assistant().backend, monkeypatch)
    shown, reply = "", None
    for piece in runtime.ask("Which port does the Zorblax cluster listen on?"):
        if isinstance(piece, Reply):
            reply = piece
            break
        shown += piece
        if len(shown) > 40:
            runtime.stop()  # what the UI's Stop button calls, from another request's thread
    assert reply.answer.stopped and reply.answer.finish_reason == "stopped"
    assert reply.answer.text == shown.strip() and "word199" not in shown
    stored = runtime.messages(reply.chat_id)[-1]
    assert stored.content == shown.strip() and stored.notes["stopped"] is True
    monkeypatch.undo()
    _, after = run(runtime.ask("How is green tea brewed?", reply.chat_id, max_new_tokens=3))
    assert not after.answer.stopped  # a stop never carries over to the next question


def test_regenerate_stores_a_second_answer_to_the_last_question(runtime):
    _, first = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=3))
    _, again = run(runtime.regenerate(first.chat_id, mode="rag", max_new_tokens=3))
    assert again.answer.question == first.answer.question and again.answer.mode == "rag"
    msgs = runtime.messages(first.chat_id)
    assert [m.role for m in msgs] == ["user", "assistant", "assistant"]
    assert msgs[-1].id == again.message_id and msgs[-1].notes["regenerated"] is True
    empty = runtime.store.create_chat("empty").id
    with pytest.raises(AssistantError, match="no question"):
        list(runtime.regenerate(empty))


def test_a_chat_exports_as_markdown_with_its_sources(runtime, docs):
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=3))
    md = runtime.export_markdown(reply.chat_id)
    assert md.startswith("# Which port does the Zorblax cluster listen on?")
    assert "**Question:** Which port does the Zorblax cluster listen on?" in md
    assert f"**Answer:** {reply.answer.text}" in md
    assert "Sources:\n\n[1] ops.txt\n\n> The Zorblax cluster listens on port 7431." in md


def test_an_empty_question_is_refused_before_anything_is_stored(runtime):
    with pytest.raises(AssistantError, match="type a question"):
        run(runtime.ask("   "))
    assert runtime.chats() == []


def test_a_folder_added_later_is_indexed_and_answerable(runtime, tmp_path):
    more = tmp_path / "more"
    more.mkdir()
    (more / "vault.txt").write_text("The Lisbon vault door code is 5512.\n")
    assert "added" in runtime.add_folder(str(more))
    wait_for(lambda: any(d.path.endswith("vault.txt") and d.status == "indexed" for d in runtime.documents()),
             timeout=30, what="the new folder's document indexed")
    _, reply = run(runtime.ask("What is the vault door code?", max_new_tokens=2))
    assert reply.answer.citations[0].path.endswith("vault.txt")
    assert "already" in runtime.add_folder(str(more))


def test_a_bad_folder_is_a_message_not_a_crash(runtime, tmp_path):
    with pytest.raises(ServiceError, match="no such folder"):
        runtime.add_folder(str(tmp_path / "nope"))
    with pytest.raises(ServiceError, match="type the path"):
        runtime.add_folder("  ")


def test_removing_a_folder_forgets_its_documents_but_not_the_files(runtime, docs):
    msg = runtime.remove_folder(str(docs))
    assert "2 document(s) forgotten" in msg and runtime.documents() == [] and runtime.folders() == []
    assert (docs / "ops.txt").exists()


def test_new_files_in_a_watched_folder_are_picked_up(runtime, docs):
    (docs / "new.md").write_text("# Notes\n\nThe release is called Quokka.\n")
    wait_for(lambda: any(d.path.endswith("new.md") and d.status == "indexed" for d in runtime.documents()),
             timeout=30, what="the watcher to index new.md")


def test_only_indexed_documents_under_watched_folders_are_served(runtime, docs, tmp_path):
    ops = next(d for d in runtime.documents() if d.path.endswith("ops.txt"))
    assert runtime.document_file(ops.id) == docs / "ops.txt"
    assert runtime.document_file(10_000) is None
    outside = runtime.store.upsert_document(str(tmp_path / "data" / "store.sqlite"), folder=str(docs))
    assert runtime.document_file(outside.id) is None  # a row outside the watched folders is never served


def test_the_viewer_parses_a_file_once_until_it_changes(runtime, docs, monkeypatch):
    """Each click on a citation showed the file's text by parsing it again (an image: an OCR run)."""
    import app.runtime as rt_mod

    calls = []
    real = rt_mod.read_pages
    monkeypatch.setattr(rt_mod, "read_pages", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    rt_mod._pages_of.cache_clear()
    ops = next(d for d in runtime.documents() if d.path.endswith("ops.txt"))
    assert "port 7431" in runtime.document_text(ops)
    assert "port 7431" in runtime.document_text(ops)
    assert len(calls) == 1
    (docs / "ops.txt").write_text(OPS.replace("7431", "7432") + "More text, so the size changes too.\n")
    assert "port 7432" in runtime.document_text(ops)  # an edited file is read afresh
    assert len(calls) == 2


def test_reindex_queues_documents_again(runtime):
    assert runtime.reindex() == "2 document(s) queued for indexing"
    assert runtime.wait_idle(30)
    assert all(d.status == "indexed" for d in runtime.documents())


def test_settings_for_answers_apply_to_the_next_question(runtime):
    runtime.set_answering(mode="rag", expand_k=2)
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    assert reply.answer.mode == "rag"
    with pytest.raises(ValueError):
        runtime.set_answering(mode="telepathy")
    with pytest.raises(ValueError, match="not an answering setting"):
        runtime.set_answering(temperature=3)


def test_a_backend_that_cannot_open_leaves_the_working_one_in_place(runtime):
    with pytest.raises(ServiceError, match="torch backend"):
        runtime.configure(backend="llama.cpp")  # a checkpoint's decoder is torch-only here
    assert runtime.settings.backend == "torch"
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    assert reply.answer.found


def test_a_bad_checkpoint_path_is_a_message_and_changes_nothing(runtime, tmp_path):
    before = runtime.models
    with pytest.raises(ServiceError, match="cannot load the checkpoint"):
        runtime.configure(checkpoint=str(tmp_path))
    assert runtime.models is before


def test_the_library_survives_a_restart(tmp_path, tiny_checkpoint, docs):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", dtype="float32", checkpoint=str(tiny_checkpoint))
    with Runtime(settings).start([docs]) as rt:
        assert rt.wait_idle(60)
        _, reply = run(rt.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    with Runtime(settings).start() as rt:  # no folder named: the library's own
        assert rt.folders() == [str(docs)]
        assert [c.id for c in rt.chats()] == [reply.chat_id]
        assert rt.messages(reply.chat_id)[-1].citations[0]["segment_id"] == reply.answer.citations[0].segment_id


def test_questions_are_answered_while_a_folder_is_being_indexed(runtime, tmp_path, monkeypatch):
    comp = runtime.models.compressor
    slow = comp.compress

    def compress(texts, *a, **kw):  # an encoder that takes its time, like the real one on a laptop
        time.sleep(0.4)
        return slow(texts, *a, **kw)

    monkeypatch.setattr(comp, "compress", compress)
    big = tmp_path / "big"
    big.mkdir()
    for i in range(12):
        (big / f"part-{i}.txt").write_text(data.prose(i, paragraphs=6, sentences=6))
    runtime.add_folder(str(big))
    wait_for(lambda: runtime.status().active, timeout=10, what="indexing to start")
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    st = runtime.status()
    assert st.active and st.docs_done < st.docs_total  # answered before the folder was done
    assert reply.answer.citations[0].path.endswith("ops.txt")
    assert "Indexing" in st.line() and "documents" in st.line()
    assert runtime.wait_idle(120)


def test_a_chat_keeps_what_its_answer_could_not_read(runtime, docs):
    # a document whose passages have no latents yet (as when the compressor just changed): read as raw text
    doc = runtime.store.upsert_document(str(docs / "later.txt"), folder=str(docs))
    runtime.store.replace_document_content(doc.id, [SegmentIn(0, "The Zorblax backup server listens on port 9999.")])
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    assert reply.answer.raw_segments == 1
    assert runtime.messages(reply.chat_id)[-1].notes == {"raw_segments": 1}  # a reopened chat shows it again


def test_a_checkpoint_fixes_the_ratio(runtime):
    assert runtime.configure(ratio=16) == "nothing changed"


def test_a_document_taken_out_of_the_library_stays_out_until_included_again(runtime, docs):
    tea = next(d for d in runtime.documents() if d.path.endswith("tea.txt"))
    assert "out of the library" in runtime.exclude_document(tea.id)
    assert [d.path for d in runtime.documents()] == [str(docs / "ops.txt")]
    assert (docs / "tea.txt").exists() and runtime.excluded() == [tea.path]  # the file is untouched
    (docs / "tea.txt").write_text(TEA + "\nOolong sits in between.\n")  # an edit does not bring it back
    runtime._indexing.sync.reconcile()
    time.sleep(0.5)
    assert runtime.wait_idle(30) and [d.path for d in runtime.documents()] == [str(docs / "ops.txt")]
    _, reply = run(runtime.ask("How is green tea brewed?", mode="rag", max_new_tokens=2))
    assert all(not c.path.endswith("tea.txt") for c in reply.answer.citations)

    assert "back in the library" in runtime.include(tea.path)
    assert runtime.wait_idle(60) and not runtime.excluded()
    back = next(d for d in runtime.documents() if d.path.endswith("tea.txt"))
    assert back.status == "indexed" and "Oolong" in " ".join(s.text for s in runtime.store.get_segments(back.id))
    with pytest.raises(ServiceError, match="excluded file"):
        runtime.include(str(docs / "ops.txt"))


def test_the_library_is_read_ahead_so_the_first_question_starts_warm(runtime):
    wait_for(lambda: runtime.warmed > 0, timeout=30, what="the documents block warmed")
    _, reply = run(runtime.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    assert reply.answer.prefix_reused  # the runtime's first question did not prefill the documents


def test_a_new_document_is_read_ahead_again(runtime, docs):
    wait_for(lambda: runtime.warmed > 0, timeout=30, what="the documents block warmed")
    before = runtime.warmed
    (docs / "vault.txt").write_text("The Lisbon vault door code is 5512.\n")
    wait_for(lambda: runtime.warmed > before, timeout=30, what="the grown library warmed again")
    _, reply = run(runtime.ask("What is the vault door code?", max_new_tokens=2))
    assert reply.answer.prefix_reused and reply.answer.citations[0].path.endswith("vault.txt")


def test_without_read_ahead_the_first_question_reads_the_documents_itself(tmp_path, tiny_checkpoint, docs):
    settings = Settings(data_dir=tmp_path / "data", device="cpu", dtype="float32", checkpoint=str(tiny_checkpoint))
    with Runtime(settings, debounce_s=0.1, warm_up=False).start([docs]) as rt:
        assert rt.wait_idle(60)
        _, reply = run(rt.ask("Which port does the Zorblax cluster listen on?", max_new_tokens=2))
    assert not reply.answer.prefix_reused and rt.warmed == 0


def test_the_status_line_says_while_the_documents_are_read_ahead(runtime, monkeypatch):
    wait_for(lambda: runtime.warmed > 0, timeout=30, what="the documents block warmed")
    entered, release = threading.Event(), threading.Event()
    real = Assistant.warm

    def slow_warm(self, scope=None):
        entered.set()
        release.wait(30)
        return real(self, scope)

    monkeypatch.setattr(Assistant, "warm", slow_warm)
    runtime.set_answering(expand_k=2)  # new settings: the block is read ahead again
    assert entered.wait(30)
    line = runtime.status().line()
    release.set()
    assert line.startswith("Idle. Reading the documents ahead of the next question.")
    wait_for(lambda: "Reading" not in runtime.status().line(), timeout=30, what="the read-ahead to end")
