"""E-mail (``.eml``, RFC 5322/MIME, and Outlook ``.msg``): headers as metadata, the body as text, a
sanitised printable HTML, and every attachment and embedded message as a member of its own.

``.eml`` is parsed with the standard library's ``email`` package (``policy.default``); ``.msg``
(an OLE2 compound file, told by ``options["mime"]`` ``application/vnd.ms-outlook`` or by its
magic bytes) with ``extract-msg``, its embedded messages handed on as ``.msg`` members. Outputs:

* ``text.txt`` (role ``text``): the subject and the body as plain text: the ``text/plain``
  alternative when there is one, else the HTML body made plain (:mod:`converters.html_clean`).
* ``message.html`` (role ``web``, text/html): a self-contained page with the From/To/Cc/Date/
  Subject block, the body (HTML sanitised to an allow-list with no attributes, or the plain body
  escaped) and the list of attachments. It references nothing: no remote image, no ``cid:``
  link, no style sheet; the e-mail flow prints it to PDF through LibreOffice.
* members: every attachment (a leaf part that is marked ``attachment``, has a file name, or is
  not text) and every embedded message (``message/rfc822``, written as ``.eml`` bytes) in
  ``members/000001`` ..., named by their file name (else ``attachment-<n>`` / the embedded
  subject). They are processed as files of their own, linked like archive members.

Metadata: ``from``, ``to``, ``cc``, ``reply_to`` (lists of addresses as written), ``date`` (ISO
8601), ``subject``, ``message_id``, ``in_reply_to``, ``body_format`` (html, plain or none),
``attachments`` (name, mime, size each), ``depth``.

Guards, with the options and defaults of the archive steps: ``max_bytes`` (100 MiB) of the
message itself; ``max_entries`` (attachments), ``max_entry_bytes``, ``max_total_bytes`` (decoded
sizes); ``depth``/``max_depth``: a message nested ``max_depth`` deep (an e-mail attached to an
e-mail attached to ...) is refused with :class:`LimitExceeded`, like a nested archive. Attachment
names are checked like archive member names (traversal, absolute, control characters reject the
message with :class:`CorruptInput`); they are display names only, never paths. Bytes that hold
no message headers fail with :class:`CorruptInput`. On any failure ``members/`` is removed.
"""

from __future__ import annotations

import html
import shutil
from pathlib import Path
from typing import Any, Iterator, Mapping

from converters import html_clean
from converters.archive_expand import DEFAULTS, MEMBERS_DIR, _check_name, _shown
from converters.base import ConversionResult, ConverterSpec, Member, Rendition, require, fresh_members_dir, refuse_past_depth
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="email_parse",
    version="1.0.0",
    kinds=frozenset({"email"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="E-mail (.eml, .msg): headers, body text, sanitised printable HTML, attachments as members",
    reads=frozenset({"max_depth", "depth"}),
)

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
_HEADERS = ("from", "to", "cc", "reply-to", "date", "subject", "message-id", "in-reply-to")
_ADDRESS_HEADERS = ("from", "to", "cc", "reply-to")
_OLE_MAGIC = bytes.fromhex("D0CF11E0A1B11AE1")


def _options(options: Mapping[str, Any]) -> dict[str, int]:
    opts = {key: int_option(options, key, default, minimum=0) for key, default in DEFAULTS.items()}
    opts["max_bytes"] = int_option(options, "max_bytes", DEFAULT_MAX_BYTES, minimum=1)
    return opts


def _header(msg: Any, name: str) -> str | None:
    try:
        value = msg.get(name)
    except Exception:  # a malformed header the policy cannot parse
        raw = msg.get_all(name, failobj=None) if hasattr(msg, "get_all") else None
        value = raw[0] if raw else None
    if value is None:
        return None
    return " ".join(str(value).split()) or None


def _addresses(msg: Any, name: str) -> list[str]:
    try:
        header = msg.get(name)
        if header is None:
            return []
        return [str(a) for a in header.addresses] or [str(header)]
    except Exception:
        value = _header(msg, name)
        return [value] if value else []


def _date(msg: Any) -> str | None:
    try:
        header = msg.get("date")
        moment = getattr(header, "datetime", None)
        return moment.isoformat() if moment is not None else _header(msg, "date")
    except Exception:
        return _header(msg, "date")


def _content(part: Any) -> str:
    """A text part's content; undecodable charsets fall back to UTF-8 with replacements."""
    try:
        content = part.get_content()
        if isinstance(content, str):
            return content
    except (LookupError, UnicodeError, ValueError, AssertionError, KeyError):
        pass
    payload = part.get_payload(decode=True) or b""
    return payload.decode("utf-8", "replace")


def _leaves(part: Any):
    """Non-multipart parts in order; an embedded message is a leaf (it becomes a member)."""
    if part.get_content_maintype() == "multipart":
        for sub in part.iter_parts():
            yield from _leaves(sub)
    else:
        yield part


def _is_attachment(part: Any, bodies: tuple[Any, ...]) -> bool:
    if any(part is b for b in bodies):
        return False
    if part.get_content_type() == "message/rfc822":
        return True
    if part.is_attachment() or part.get_filename():
        return True
    return part.get_content_maintype() != "text"


def _member_bytes(part: Any) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) else inner
        return inner.as_bytes() if hasattr(inner, "as_bytes") else str(inner).encode()
    return part.get_payload(decode=True) or b""


def _member_name(part: Any, number: int) -> str:
    name = part.get_filename()
    if name:
        return " ".join(str(name).split()) if "\n" in name or "\r" in name else str(name)
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload()
        inner = inner[0] if isinstance(inner, list) else inner
        subject = _header(inner, "subject") if hasattr(inner, "get") else None
        return f"{(subject or f'message-{number}')[:100].replace('/', '_')}.eml"
    return f"attachment-{number}"


def _printable(meta: dict[str, Any], body_html: str, attachments: list[dict[str, Any]]) -> str:
    rows = []
    for label, key in (("From", "from"), ("To", "to"), ("Cc", "cc"), ("Date", "date"), ("Subject", "subject")):
        value = meta.get(key)
        if isinstance(value, list):
            value = ", ".join(value)
        if value:
            rows.append(f"<tr><th>{label}</th><td>{html.escape(value)}</td></tr>")
    listed = "".join(
        f"<li>{html.escape(a['name'])} ({html.escape(a['mime'])}, {a['size']} bytes)</li>" for a in attachments
    )
    return html_clean.page(
        meta.get("subject") or "e-mail",
        f"<table>{''.join(rows)}</table>\n<hr>\n{body_html}\n"
        + (f"<hr>\n<p><b>Attachments</b></p><ul>{listed}</ul>" if attachments else ""),
    )


def _parse_eml(src: Path) -> tuple[dict[str, Any], str, str, Iterator[tuple[str, str, bytes]]]:
    """(metadata, body text, sanitised body HTML, attachments as (name, MIME type, bytes))."""
    from email import policy
    from email.parser import BytesParser

    with open(src, "rb") as fh:
        head = fh.read(64 * 1024)
        if b"\0" in head:
            raise CorruptInput("not an e-mail message: it holds binary data (NUL bytes) in its headers")
        fh.seek(0)
        try:
            msg = BytesParser(policy=policy.default).parse(fh)
        except (ValueError, TypeError, IndexError, AttributeError) as exc:
            raise CorruptInput(f"the e-mail cannot be parsed ({type(exc).__name__}: {exc})") from None
    if not any(_header(msg, h) for h in ("from", "to", "subject", "date", "message-id")):
        raise CorruptInput("not an e-mail message: it has none of the From, To, Subject, Date or Message-ID headers")

    meta: dict[str, Any] = {
        "from": _addresses(msg, "from"), "to": _addresses(msg, "to"), "cc": _addresses(msg, "cc"),
        "reply_to": _addresses(msg, "reply-to"), "date": _date(msg), "subject": _header(msg, "subject"),
        "message_id": _header(msg, "message-id"), "in_reply_to": _header(msg, "in-reply-to"),
    }
    try:
        html_part = msg.get_body(preferencelist=("html",))
        plain_part = msg.get_body(preferencelist=("plain",))
    except (KeyError, ValueError, AttributeError):
        html_part = plain_part = None
    markup = _content(html_part) if html_part is not None else None
    plain = _content(plain_part) if plain_part is not None else None
    body_text, body_html = _body(meta, markup, plain)

    def attachments() -> Iterator[tuple[str, str, bytes]]:
        number = 0
        for part in _leaves(msg):
            if _is_attachment(part, (html_part, plain_part)):
                number += 1
                yield _member_name(part, number), part.get_content_type(), _member_bytes(part)

    return meta, body_text, body_html, attachments()


def _body(meta: dict[str, Any], markup: str | None, plain: str | None) -> tuple[str, str]:
    """(text, sanitised HTML) of the body; sets ``body_format``."""
    if markup is not None:
        meta["body_format"] = "html"
        return (plain if plain is not None else html_clean.plain_text(markup)), html_clean.sanitise(markup)
    if plain is not None:
        meta["body_format"] = "plain"
        return plain, f"<pre>{html.escape(plain)}</pre>"
    meta["body_format"] = "none"
    return "", ""


def _parse_msg(src: Path) -> tuple[dict[str, Any], str, str, Iterator[tuple[str, str, bytes]]]:
    """Outlook .msg through extract-msg; the same shape as :func:`_parse_eml`."""
    extract_msg = require("extract_msg", "extract-msg")
    try:
        msg = extract_msg.openMsg(str(src), delayAttachments=True)
    except Exception as exc:  # extract-msg and olefile raise many kinds on damaged files
        raise CorruptInput(f"the Outlook message cannot be read ({type(exc).__name__}: {exc})") from None

    def field(name: str) -> Any:
        try:
            return getattr(msg, name)
        except Exception:  # a damaged property: reported as missing
            return None

    def people(value: Any) -> list[str]:
        return [p.strip() for p in str(value or "").split(";") if p.strip()]

    when = field("date")
    meta: dict[str, Any] = {
        "from": people(field("sender")), "to": people(field("to")), "cc": people(field("cc")),
        "reply_to": people(field("replyTo")), "date": when.isoformat() if hasattr(when, "isoformat") else None,
        "subject": field("subject") or None, "message_id": field("messageId") or None,
        "in_reply_to": field("inReplyTo") or None,
    }
    markup = field("htmlBody")
    if isinstance(markup, bytes):
        markup = markup.decode("utf-8", "replace")
    plain = field("body")
    body_text, body_html = _body(meta, markup or None, plain or None)

    def attachments() -> Iterator[tuple[str, str, bytes]]:
        for number, att in enumerate(msg.attachments, start=1):
            data = att.data
            if isinstance(data, bytes):
                name = att.longFilename or att.shortFilename or f"attachment-{number}"
                yield name, att.mimetype or "application/octet-stream", data
            elif hasattr(data, "exportBytes"):  # an embedded message: handed on as a .msg of its own
                subject = getattr(data, "subject", None) or f"message-{number}"
                yield f"{str(subject)[:100].replace('/', '_')}.msg", "application/vnd.ms-outlook", data.exportBytes()
        msg.close()

    return meta, body_text, body_html, attachments()


def _is_msg(src: Path, options: Mapping[str, Any]) -> bool:
    mime = str(options.get("mime") or "").split(";")[0].strip().lower()
    if mime == "application/vnd.ms-outlook":
        return True
    with open(src, "rb") as fh:
        return fh.read(8) == _OLE_MAGIC


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    opts = _options(options)
    src, out_dir = Path(src), Path(out_dir)
    members_dir = fresh_members_dir(out_dir, MEMBERS_DIR)
    refuse_past_depth("e-mail", opts["depth"], opts["max_depth"])
    size = src.stat().st_size
    if size > opts["max_bytes"]:
        raise LimitExceeded(f"the message is {size} bytes; the limit is {opts['max_bytes']} (option max_bytes)")
    meta, body_text, body_html, parts = (_parse_msg if _is_msg(src, options) else _parse_eml)(src)

    members: list[Member] = []
    attachments: list[dict[str, Any]] = []
    total = 0
    try:
        for name, mime, data in parts:
            number = len(members) + 1
            if number > opts["max_entries"]:
                raise LimitExceeded(
                    f"e-mail has more than {opts['max_entries']} attachments (option max_entries); nothing was kept"
                )
            try:
                _check_name(name, opts["max_name_bytes"])
            except CorruptInput as exc:  # the archive's wording, said of a message
                raise CorruptInput(str(exc).replace("hostile archive: entry", "hostile e-mail: attachment")
                                   .replace("the whole archive", "the whole message")) from None
            if len(data) > opts["max_entry_bytes"]:
                raise LimitExceeded(
                    f"attachment {_shown(name)} is {len(data)} bytes; the limit is {opts['max_entry_bytes']} "
                    "(option max_entry_bytes)"
                )
            total += len(data)
            if total > opts["max_total_bytes"]:
                raise LimitExceeded(
                    f"attachments pass {opts['max_total_bytes']} bytes in total at {_shown(name)} "
                    "(option max_total_bytes)"
                )
            members_dir.mkdir(exist_ok=True)
            rel = f"{MEMBERS_DIR}/{number:06d}"
            (out_dir / rel).write_bytes(data)
            members.append(Member(name=name, path=rel, size=len(data)))
            attachments.append({"name": name, "mime": mime, "size": len(data)})
    except BaseException:
        shutil.rmtree(members_dir, ignore_errors=True)
        raise

    meta["attachments"] = attachments
    meta["depth"] = opts["depth"]
    text = html_clean.tidy_text(f"{meta['subject'] or ''}\n\n{body_text}")
    (out_dir / "text.txt").write_text(text, encoding="utf-8")
    (out_dir / "message.html").write_text(_printable(meta, body_html, attachments), encoding="utf-8")
    return ConversionResult(
        renditions=[
            Rendition(role="text", path="text.txt", mime="text/plain", bytes=(out_dir / "text.txt").stat().st_size),
            Rendition(role="web", path="message.html", mime="text/html",
                      bytes=(out_dir / "message.html").stat().st_size),
        ],
        metadata=meta,
        members=members,
    )
