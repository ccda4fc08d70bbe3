"""email_parse: headers, text, sanitised printable HTML, attachments and embedded messages as
members; hostile messages fail typed and keep no members."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest

from converters import email_parse, html_clean
from fileflow.errors import CorruptInput, LimitExceeded

from fileflow.testing.samplegen import emails as gen


def parse(src: Path, out: Path, **options):
    return email_parse.convert(src, out, options)


def test_html_message_with_pdf_attachment(tmp_path: Path) -> None:
    src = gen.html_with_pdf(tmp_path / "in.eml", tmp_path)
    out = tmp_path / "out"
    result = parse(src, out)
    meta = result.metadata
    assert meta["from"] == ["Anna Weber <anna.weber@example.com>"]
    assert meta["to"] == ["Board <board@example.com>", "Ben Ode <ben@example.org>"]
    assert meta["cc"] == ["legal@example.com"]
    assert meta["date"] == "2024-05-17T10:30:00+02:00"
    assert meta["subject"] == "Signed supply contract"
    assert meta["message_id"] == "<contract-42@example.com>"
    assert meta["body_format"] == "html"
    assert [(m.name, m.path) for m in result.members] == [("contract.pdf", "members/000001")]
    assert (out / "members/000001").read_bytes() == gen.pdf_bytes(tmp_path)
    assert meta["attachments"] == [{"name": "contract.pdf", "mime": "application/pdf",
                                    "size": (out / "members/000001").stat().st_size}]
    text = (out / "text.txt").read_text()
    assert text.startswith("Signed supply contract\n") and "signed supply contract for the north site" in text
    assert {r.role: r.path for r in result.renditions} == {"text": "text.txt", "web": "message.html"}


def test_printable_html_references_nothing_and_runs_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    parse(gen.html_with_pdf(tmp_path / "in.eml", tmp_path), out)
    page = (out / "message.html").read_text()
    assert "north site" in page and "contract.pdf" in page and "[logo]" in page
    for bad in ("tracker.invalid", "http:", "file:", "javascript:", "<script", "SCRIPT-RAN", "onload",
                "<iframe", "IFRAME-TEXT", "<img", "src=", "href=", "<link", "url("):
        assert bad not in page, bad


def test_html_only_body_gives_its_text(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = parse(gen.html_only(tmp_path / "in.eml"), out)
    text = (out / "text.txt").read_text()
    assert "Liefervertrag für den Standort Nord" in text and "Jürgen Müller" in text
    assert "SCRIPT-RAN" not in text and "background" not in text
    assert result.metadata["cc"] == [] and result.members == []


def test_embedded_message_is_a_member_in_eml_form(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = parse(gen.nested(tmp_path / "in.eml", 2), out)
    (member,) = result.members
    assert member.name == "level 1.eml"
    inner = email.message_from_bytes((out / member.path).read_bytes(), policy=policy.default)
    assert inner["Subject"] == "level 1" and inner["Message-ID"] == "<level-1@example.com>"
    # the member is itself a message whose member is the next level
    again = parse(out / member.path, tmp_path / "out2", depth=1)
    assert [m.name for m in again.members] == ["level 0.eml"]


def test_nesting_past_the_depth_limit_is_refused(tmp_path: Path) -> None:
    src = gen.nested(tmp_path / "in.eml", 1)
    assert parse(src, tmp_path / "ok", depth=2).metadata["depth"] == 2
    with pytest.raises(LimitExceeded, match="nested deeper than 3"):
        parse(src, tmp_path / "out", depth=3)
    assert not (tmp_path / "out" / "members").exists()


@pytest.mark.parametrize("name", ["../../etc/cron.d/evil", "/etc/passwd", "C:\\evil.exe", "ok\u202etxt.exe"])
def test_hostile_attachment_names_reject_the_message(tmp_path: Path, name: str) -> None:
    with pytest.raises(CorruptInput, match="hostile e-mail: attachment .* the whole message is rejected"):
        parse(gen.named_attachment(tmp_path / "in.eml", name), tmp_path / "out")
    assert not (tmp_path / "out" / "members").exists()
    assert not list(tmp_path.rglob("evil*")) and not list(tmp_path.rglob("passwd"))


def test_attachment_limits(tmp_path: Path) -> None:
    src = gen.many_attachments(tmp_path / "in.eml", 12)
    assert len(parse(src, tmp_path / "ok").members) == 12
    with pytest.raises(LimitExceeded, match="more than 10 attachments"):
        parse(src, tmp_path / "out", max_entries=10)
    assert not (tmp_path / "out" / "members").exists()
    with pytest.raises(LimitExceeded, match="max_total_bytes"):
        parse(src, tmp_path / "out", max_total_bytes=50)
    with pytest.raises(LimitExceeded, match="max_bytes"):
        parse(src, tmp_path / "out", max_bytes=100)


def test_attachment_bomb_is_handed_on_unexpanded(tmp_path: Path) -> None:
    """The message itself is small; the bomb is a member the archive step refuses (pipeline test)."""
    out = tmp_path / "out"
    result = parse(gen.attachment_bomb(tmp_path / "in.eml", tmp_path, 16), out)
    (member,) = result.members
    assert member.name == "figures.zip" and member.size < 100_000


@pytest.mark.parametrize("data", [bytes(range(256)) * 64, b"just some words without any header\n", b"\0\0\0"])
def test_not_a_message(tmp_path: Path, data: bytes) -> None:
    src = tmp_path / "in.eml"
    src.write_bytes(data)
    with pytest.raises(CorruptInput, match="not an e-mail"):
        parse(src, tmp_path / "out")


def test_sanitiser_keeps_structure_and_drops_every_attribute() -> None:
    dirty = ('<table border=1 style="x"><tr><td colspan="2" onclick="x()">a &amp; b</td></tr></table>'
             '<p style="background:url(http://x)">t<script>bad()</script><svg><image href="file:///etc/passwd"/></svg></p>'
             '<!--[if mso]><img src="http://x"><![endif]--><a href="http://x">link</a>')
    assert html_clean.sanitise(dirty) == (
        '<table><tr><td colspan="2">a &amp; b</td></tr></table><p>t</p><a>link</a>'
    )
    assert html_clean.plain_text(dirty) == "a & b\n\nt\nlink\n"


# --- Outlook .msg (built byte by byte by fileflow/testing/samplegen/msg.py: no free tool writes them) ----------


def test_outlook_msg_headers_body_and_attachment(tmp_path: Path) -> None:
    src = gen.outlook(tmp_path / "in.msg", tmp_path)
    out = tmp_path / "out"
    result = parse(src, out, mime="application/vnd.ms-outlook")
    meta = result.metadata
    assert meta["subject"] == "Signed supply contract" and meta["message_id"] == "<contract-43@example.com>"
    assert meta["from"] == ["Anna Weber <anna.weber@example.com>"]
    assert meta["to"] == ["Board <board@example.com>", "Ben Ode <ben@example.org>"]
    assert meta["cc"] == ["Legal <legal@example.com>"]
    assert meta["date"].startswith("2024-05-17T08:30:00")
    assert meta["body_format"] == "html"  # extract-msg makes an HTML body of a plain one
    assert [(m.name, m.path) for m in result.members] == [("contract.pdf", "members/000001")]
    assert (out / "members/000001").read_bytes() == gen.pdf_bytes(tmp_path)
    assert "north site" in (out / "text.txt").read_text() and "north site" in (out / "message.html").read_text()


def test_outlook_msg_is_recognised_by_its_bytes_too(tmp_path: Path) -> None:
    result = parse(gen.outlook(tmp_path / "in.bin", tmp_path), tmp_path / "out")
    assert result.metadata["subject"] == "Signed supply contract"


def test_outlook_msg_limits_and_hostile_names(tmp_path: Path) -> None:
    src = gen.outlook(tmp_path / "in.msg", tmp_path)
    with pytest.raises(LimitExceeded, match="nested deeper than 3"):
        parse(src, tmp_path / "out", depth=3)
    with pytest.raises(LimitExceeded, match="max_entry_bytes"):
        parse(src, tmp_path / "out", max_entry_bytes=100)
    bad = gen.outlook(tmp_path / "bad.msg", tmp_path, attachment_name="../../evil.pdf")
    with pytest.raises(CorruptInput, match="hostile e-mail: attachment"):
        parse(bad, tmp_path / "out")
    assert not (tmp_path / "out" / "members").exists()


@pytest.mark.parametrize("keep", [8, 600, 1500])
def test_damaged_outlook_msg_is_corrupt_input(tmp_path: Path, keep: int) -> None:
    whole = gen.outlook(tmp_path / "whole.msg", tmp_path).read_bytes()
    src = tmp_path / "cut.msg"
    src.write_bytes(whole[:keep] + bytes(range(256)) * 4)
    with pytest.raises(CorruptInput):
        parse(src, tmp_path / "out", mime="application/vnd.ms-outlook")
