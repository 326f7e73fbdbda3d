"""E-mail as pages of text: a .eml or .msg is one message, a .mbox one page per message.

A message reads as its headers (From, To, Date, Subject) and its body, then the
text of each attachment in a format we index, under "Attachment: name", so a
citation names "inbox.mbox, message 12: Re: budget, attachment budget.xlsx".
Attachments are read by the same readers as files (nested mail and images
excepted: a forwarded mail inside a mail could nest without end, and OCR of
every logo in a mailbox would cost minutes for nothing).

Libraries: the standard library's ``email`` and ``mailbox`` (RFC 5322 and
mbox, with MIME decoding), and msg-parser (BSD, on olefile) for Outlook's
.msg, which is an OLE compound file. extract-msg reads more of .msg, but it is
GPL, which this Apache-2.0 project cannot ship.
"""

from __future__ import annotations

import email
import email.policy
import logging
import mailbox
import tempfile
from dataclasses import replace
from email.message import EmailMessage
from pathlib import Path

from .ingest import IngestError, IngestLimits, Page, clean_text, decode_text, file_type, html_to_text
from .office import OLE_MAGIC, PageBuilder

log = logging.getLogger(__name__)

HEADERS = ("From", "To", "Cc", "Date", "Subject")
#: attachments in these types are not read (see the module's docstring)
NOT_ATTACHED = {"eml", "mbox", "msg", "image"}


def _attachment_text(name: str, data: bytes, limits: IngestLimits) -> str:
    """The text of an attachment in a format we index ('' for any other, or one that fails: a bad
    attachment must not lose its message)."""
    from .ingest import read_pages

    kind = file_type(name)
    if kind is None or kind in NOT_ATTACHED or not data or len(data) > limits.max_file_bytes:
        return ""
    with tempfile.TemporaryDirectory(prefix="lclm-attach-") as tmp:
        p = Path(tmp) / ("attachment" + Path(name).suffix.lower())
        p.write_bytes(data)
        try:  # no OCR: a scanned attachment would hold its whole mailbox up for minutes
            _, pages = read_pages(p, kind, replace(limits, ocr=False))
            return "\n\n".join(pg.text for pg in pages if pg.text)
        except IngestError as e:
            log.info("attachment %s not read: %s", name, e.reason)
            return ""


def _body(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain", "html"))
    if part is None:
        return ""
    try:
        content = part.get_content()
    except (LookupError, UnicodeError, AssertionError):  # an unknown or lying charset
        content = decode_text(part.get_payload(decode=True) or b"")
    if not isinstance(content, str):
        return ""
    return html_to_text(content) if part.get_content_type() == "text/html" else content


def _message_page(headers: dict[str, str], body: str, attachments: list[tuple[str, bytes]], limits: IngestLimits,
                  number: int | None, label: str | None) -> Page:
    page = PageBuilder()
    page.add("\n".join(f"{k}: {' '.join(v.split())}" for k, v in headers.items() if v))
    page.add(clean_text(body))
    for name, data in attachments:
        text = _attachment_text(name, data, limits)
        if text:
            page.mark(f"attachment {name}")
            page.add(f"Attachment: {name}\n\n{text}")
    return page.page(number, label)


def _email_parts(msg: EmailMessage) -> tuple[dict[str, str], str, list[tuple[str, bytes]]]:
    headers = {k: str(msg.get(k, "") or "") for k in HEADERS}
    attachments = []
    for part in msg.iter_attachments():
        name = part.get_filename()
        if name:
            try:
                attachments.append((name, part.get_payload(decode=True) or b""))
            except (ValueError, TypeError) as e:
                log.info("attachment %s not decoded: %s", name, e)
    return headers, _body(msg), attachments


def _subject_label(n: int, subject: str) -> str:
    subject = " ".join(subject.split())
    return f"message {n}" + (f": {subject[:60]}" if subject else "")


def eml_pages(path: Path, limits: IngestLimits) -> list[Page]:
    from .ingest import _read_bytes

    data = _read_bytes(path, limits)
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        headers, body, attachments = _email_parts(msg)  # type: ignore[arg-type]
    except Exception as e:  # noqa: BLE001 - the parser is lenient; what it still raises means a broken file
        raise IngestError(f"unreadable e-mail ({type(e).__name__}: {e})") from e
    if not any(headers.values()):
        raise IngestError("not an e-mail message (no From, To, Date or Subject header)")
    return [_message_page(headers, body, attachments, limits, None, None)]


def mbox_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """One page per message. The mailbox is scanned for where each message starts, then read one
    message at a time: memory holds one message, whatever the mailbox's size."""
    try:
        box = mailbox.mbox(str(path), factory=None, create=False)
        keys = box.keys()
    except Exception as e:  # noqa: BLE001
        raise IngestError(f"unreadable mailbox ({type(e).__name__}: {e})") from e
    if not keys:
        raise IngestError("empty mailbox (no message starts with a 'From ' line)", "skipped")
    if len(keys) > limits.max_pages:
        raise IngestError(f"mailbox has {len(keys):,} messages, over the {limits.max_pages}-message limit "
                          "(--max-pages)", "skipped")
    out = []
    try:
        for n, key in enumerate(keys, 1):
            msg = email.message_from_bytes(box.get_bytes(key), policy=email.policy.default)
            try:
                headers, body, attachments = _email_parts(msg)  # type: ignore[arg-type]
            except Exception as e:  # noqa: BLE001 - one broken message must not lose the mailbox
                log.warning("%s: message %d unreadable: %s", path, n, e)
                continue
            out.append(_message_page(headers, body, attachments, limits, n, _subject_label(n, headers["Subject"])))
    finally:
        box.close()
    return out


def msg_pages(path: Path, limits: IngestLimits) -> list[Page]:
    """An Outlook .msg (an OLE compound file) as one message."""
    from msg_parser import MsOxMessage

    with open(path, "rb") as f:
        if f.read(8) != OLE_MAGIC:
            raise IngestError("not an Outlook .msg file (no OLE header)")
    try:
        props = MsOxMessage(str(path)).get_properties()
    except Exception as e:  # noqa: BLE001
        raise IngestError(f"unreadable .msg ({type(e).__name__}: {e})") from e
    transport = email.message_from_string(str(props.get("TransportMessageHeaders") or ""),
                                          policy=email.policy.default)
    sender = " ".join(x for x in (str(props.get("SenderName") or ""),
                                  f"<{props['SenderEmailAddress']}>" if props.get("SenderEmailAddress") else "") if x)
    headers = {"From": sender or str(transport.get("From", "") or ""),
               "To": str(props.get("DisplayTo") or transport.get("To", "") or ""),
               "Cc": str(props.get("DisplayCc") or ""),
               "Date": str(transport.get("Date", "") or props.get("ClientSubmitTime") or ""),
               "Subject": str(props.get("Subject") or "")}
    body = props.get("Body") or ""
    if not body and props.get("Html"):
        html = props["Html"]
        body = html_to_text(html.decode("utf-8", "replace") if isinstance(html, bytes) else str(html))
    attachments = []
    atts = props.get("attachments") or []
    for att in (atts.values() if isinstance(atts, dict) else atts):
        name = getattr(att, "AttachLongFilename", None) or getattr(att, "AttachFilename", None)
        data = getattr(att, "data", None)
        if name and isinstance(data, bytes):
            attachments.append((str(name), data))
    return [_message_page(headers, str(body), attachments, limits, None, None)]


READERS = {"eml": eml_pages, "mbox": mbox_pages, "msg": msg_pages}
