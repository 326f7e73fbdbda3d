"""A chat as a Markdown file: what a user keeps, shares or pastes into a report.

Each answer is followed by the passages it cites, quoted with their place
(document, page), so the exported file stands on its own without the app.
"""

from __future__ import annotations

import time

from latent_store import Chat, Message

from .assistant import place

NOTES = {
    "stopped": "Stopped before the end.",
    "regenerated": "Answered again (regenerated).",
}


def _quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in text.strip().splitlines())


def chat_markdown(chat: Chat, messages: list[Message]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(chat.updated_at))
    out = [f"# {chat.title or 'Chat'}", "", f"Exported from Latent Context Docs; last message {when}.", ""]
    for m in messages:
        if m.role == "user":
            out += [f"**Question:** {m.content}", ""]
            continue
        notes = m.notes or {}
        out += [f"**Answer:** {m.content}", ""]
        out += [f"*{text}*" for key, text in NOTES.items() if notes.get(key)]
        if notes.get("no_answer"):
            out.append(f"*The model's reply was not an answer ({notes['no_answer']}); the best passage is shown instead.*")
        if any(notes.get(k) for k in (*NOTES, "no_answer")):
            out.append("")
        cited = [r for r in (m.citations or []) if r.get("kind", "cited") == "cited"]
        if cited:
            out += ["Sources:", ""]
            for r in cited:
                out += [f"[{r.get('number', '?')}] {place(r.get('path', '?'), r.get('page'), r.get('location'))}", "", _quote(r.get("text", "")), ""]
    return "\n".join(out).rstrip() + "\n"
