"""The app's prompt layout: the words around the documents, the quoted passages and the question.

It lives here, below the app, so that the trainer builds its app-layout batches
(lclm_core.train.app_layout) from the very strings the assistant sends the
decoder: a decoder trained on one wording and asked in another would be
measured on a prompt it never saw. The assistant (app.assistant) owns what goes
in (which segments, which passages); this module owns how it reads.

    [bos] INSTRUCTIONS
    document_header(name) <latents or text of its segments> ...   (one per document)
    question_block(question, passages)                            (ends with "Answer:")
"""

from __future__ import annotations

INSTRUCTIONS = "Read the documents below and answer the question from them. Answer briefly.\n"


def document_header(name: str) -> str:
    """The line that names a document before its segments."""
    return f"\nDocument: {name}\n"


def quoted_passages(passages: list[tuple[str, str]]) -> str:
    """The expanded passages, (where, text) best first, as the block that goes right before the question.

    Best last, next to the question: a small decoder leans on what it read most
    recently, and copies a quote it has just read better than a passage put back
    among latent blocks (bench/eval_qa.py measures both layouts).
    """
    if not passages:
        return ""
    text = "\n\nPassages quoted from the documents:\n"
    for n, (where, body) in reversed(list(enumerate(passages, 1))):
        text += f"[{n}] {where}: \"{body.strip()}\"\n"
    return text


def question_block(question: str, passages: list[tuple[str, str]]) -> str:
    """The prompt's tail: the quoted passages (if any), the question, and the cue the answer follows."""
    return quoted_passages(passages) + f"\nQuestion: {question}\nAnswer:"
