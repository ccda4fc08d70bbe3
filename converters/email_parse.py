"""E-mail (``.eml``, RFC 5322/MIME): headers as metadata, the body as text, a sanitised printable
HTML, and every attachment and embedded message as a member of its own.

Parsed with the standard library's ``email`` package (``policy.default``). Outputs:

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
from typing import Any, Mapping

from converters import html_clean
from converters.archive_expand import DEFAULTS, MEMBERS_DIR, _check_name, _shown
from converters.base import ConversionResult, ConverterSpec, Member, Rendition
from converters.options import int_option
from fileflow.errors import CorruptInput, LimitExceeded

SPEC = ConverterSpec(
    name="email_parse",
    version="1.0.0",
    kinds=frozenset({"email"}),
    timeout_s=120,
    memory_mb=2048,
    retries=1,
    description="E-mail (.eml): headers, body text, sanitised printable HTML, attachments as members",
)

DEFAULT_MAX_BYTES = 100 * 1024 * 1024
_HEADERS = ("from", "to", "cc", "reply-to", "date", "subject", "message-id", "in-reply-to")
_ADDRESS_HEADERS = ("from", "to", "cc", "reply-to")


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


def convert(src: Path, out_dir: Path, options: Mapping[str, Any]) -> ConversionResult:
    from email import policy
    from email.parser import BytesParser

    opts = _options(options)
    src, out_dir = Path(src), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    members_dir = out_dir / MEMBERS_DIR
    if members_dir.is_symlink() or members_dir.is_file():
        members_dir.unlink()
    elif members_dir.exists():
        shutil.rmtree(members_dir)

    if opts["depth"] >= opts["max_depth"]:
        raise LimitExceeded(
            f"e-mail nested deeper than {opts['max_depth']} (this one is at depth {opts['depth']}; "
            "option max_depth)"
        )
    size = src.stat().st_size
    if size > opts["max_bytes"]:
        raise LimitExceeded(f"the message is {size} bytes; the limit is {opts['max_bytes']} (option max_bytes)")
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
    if html_part is not None:
        markup = _content(html_part)
        body_html = html_clean.sanitise(markup)
        body_text = _content(plain_part) if plain_part is not None else html_clean.plain_text(markup)
        meta["body_format"] = "html"
    elif plain_part is not None:
        body_text = _content(plain_part)
        body_html = f"<pre>{html.escape(body_text)}</pre>"
        meta["body_format"] = "plain"
    else:
        body_text, body_html = "", ""
        meta["body_format"] = "none"

    members: list[Member] = []
    attachments: list[dict[str, Any]] = []
    total = 0
    try:
        for part in _leaves(msg):
            if not _is_attachment(part, (html_part, plain_part)):
                continue
            number = len(members) + 1
            if number > opts["max_entries"]:
                raise LimitExceeded(
                    f"e-mail has more than {opts['max_entries']} attachments (option max_entries); nothing was kept"
                )
            name = _member_name(part, number)
            try:
                _check_name(name, opts["max_name_bytes"])
            except CorruptInput as exc:  # the archive's wording, said of a message
                raise CorruptInput(str(exc).replace("hostile archive: entry", "hostile e-mail: attachment")
                                   .replace("the whole archive", "the whole message")) from None
            data = _member_bytes(part)
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
            attachments.append({"name": name, "mime": part.get_content_type(), "size": len(data)})
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
