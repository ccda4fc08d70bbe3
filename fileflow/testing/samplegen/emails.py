"""Deterministic e-mails (.eml) for email_parse's tests and the pipeline: an HTML message with a
PDF attachment (the corpus's case), a plain one, nested messages, and hostile variants
(an attached zip bomb, messages nested past the depth limit, traversal names, too many
attachments). Built with the standard library's ``email.message.EmailMessage``.
"""

from __future__ import annotations

import io
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

from fileflow.testing.samplegen import archives, documents

DATE = "Fri, 17 May 2024 10:30:00 +0200"
BODY_EN = (
    "Dear team,\n\nplease find attached the signed supply contract for the north site. "
    "The delivery schedule starts in June and the first invoice is due at the end of the month. "
    "Let me know if anything in the payment terms needs to be changed before the board meeting.\n\n"
    "Best regards,\nAnna"
)
BODY_DE = (
    "Sehr geehrte Damen und Herren,\n\nanbei erhalten Sie den unterschriebenen Liefervertrag für den "
    "Standort Nord. Die Lieferungen beginnen im Juni, die erste Rechnung ist am Monatsende fällig. "
    "Bitte prüfen Sie die Zahlungsbedingungen vor der nächsten Sitzung des Aufsichtsrats.\n\n"
    "Mit freundlichen Grüßen\nJürgen Müller"
)
PDF_LINES = ["Supply contract", "North site, deliveries from June"]
#: what the HTML body tries and must never achieve: remote pictures, scripts, styles, frames
HOSTILE_HTML = (
    '<html><head><title>x</title><style>body{background:url(http://tracker.invalid/bg.png)}</style>'
    '<script>document.write("SCRIPT-RAN")</script><link rel="stylesheet" href="http://tracker.invalid/s.css">'
    '</head><body onload="alert(1)"><p>{body}</p>'
    '<img src="http://tracker.invalid/pixel.gif" alt="logo"><img src="file:///etc/passwd">'
    '<iframe src="http://tracker.invalid/frame">IFRAME-TEXT</iframe>'
    '<a href="javascript:alert(1)">contract portal</a></body></html>'
)


def _message(subject: str, *, sender: str = "Anna Weber <anna.weber@example.com>",
             to: str = "Board <board@example.com>, Ben Ode <ben@example.org>",
             cc: str | None = "legal@example.com", msgid: str = "<contract-42@example.com>") -> EmailMessage:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"], msg["Date"], msg["Message-ID"] = sender, to, subject, DATE, msgid
    if cc:
        msg["Cc"] = cc
    return msg


def pdf_bytes(scratch: Path) -> bytes:
    return documents.text_pdf(scratch / "contract.pdf", [PDF_LINES]).read_bytes()


def html_with_pdf(path: Path, scratch: Path) -> Path:
    """HTML body (hostile markup around an English text) with a plain alternative and a PDF."""
    msg = _message("Signed supply contract")
    msg.set_content(BODY_EN)
    paragraphs = "</p><p>".join(BODY_EN.split("\n\n"))
    msg.add_alternative(HOSTILE_HTML.replace("{body}", paragraphs), subtype="html")
    msg.add_attachment(pdf_bytes(scratch), maintype="application", subtype="pdf", filename="contract.pdf")
    return _write(path, msg)


def html_only(path: Path) -> Path:
    """An HTML body without a plain alternative (its text must come from the HTML)."""
    msg = _message("Rechnung Standort Nord", msgid="<rechnung-7@example.de>", cc=None)
    msg.set_content(HOSTILE_HTML.replace("{body}", BODY_DE.replace("\n", "<br>")), subtype="html")
    return _write(path, msg)


def nested(path: Path, levels: int) -> Path:
    """A message forwarding a message ... ``levels`` deep (level 0 has a text attachment)."""
    inner = _message("level 0", msgid="<level-0@example.com>")
    inner.set_content(BODY_EN)
    inner.add_attachment(b"innermost note\n", maintype="text", subtype="plain", filename="note.txt")
    for level in range(1, levels + 1):
        outer = _message(f"level {level}", msgid=f"<level-{level}@example.com>")
        outer.set_content(f"Forwarded message, level {level}.\n\n{BODY_EN}")
        outer.add_attachment(inner)  # message/rfc822
        inner = outer
    return _write(path, inner)


def attachment_bomb(path: Path, scratch: Path, megabytes: int = 64) -> Path:
    """An ordinary message carrying a ZIP of zeros that expands about 1000 times."""
    archives.make_ratio_bomb(scratch / "bomb.zip", megabytes)
    msg = _message("Quarterly figures")
    msg.set_content(BODY_EN)
    msg.add_attachment((scratch / "bomb.zip").read_bytes(), maintype="application", subtype="zip",
                       filename="figures.zip")
    return _write(path, msg)


def named_attachment(path: Path, name: str) -> Path:
    msg = _message("Named attachment")
    msg.set_content(BODY_EN)
    msg.add_attachment(b"owned\n", maintype="application", subtype="octet-stream", filename=name)
    return _write(path, msg)


def many_attachments(path: Path, count: int) -> Path:
    msg = _message("Many attachments")
    msg.set_content(BODY_EN)
    for i in range(count):
        msg.add_attachment(f"part {i}\n".encode(), maintype="text", subtype="plain", filename=f"part{i:03d}.txt")
    return _write(path, msg)


def _write(path: Path, msg: EmailMessage) -> Path:
    buf = io.BytesIO()
    buf.write(msg.as_bytes(policy=SMTP))
    Path(path).write_bytes(buf.getvalue())
    return Path(path)


def outlook(path: Path, scratch: Path, attachment_name: str = "contract.pdf") -> Path:
    """The HTML-with-PDF message's content as an Outlook .msg (plain body), built byte by byte."""
    from fileflow.testing.samplegen import msg
    return msg.message(
        path, subject="Signed supply contract", sender_name="Anna Weber", sender_email="anna.weber@example.com",
        to=[("Board", "board@example.com"), ("Ben Ode", "ben@example.org")], cc=[("Legal", "legal@example.com")],
        body=BODY_EN, message_id="<contract-43@example.com>",
        filetime=(1_715_934_600 + 11_644_473_600) * 10_000_000,  # 2024-05-17 08:30:00 UTC as a FILETIME
        attachments=[(attachment_name, "application/pdf", pdf_bytes(scratch))],
    )
