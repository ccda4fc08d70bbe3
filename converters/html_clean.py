"""HTML made safe to print and plain to read (not a converter itself; shared by the e-mail and
markup converters).

:func:`sanitise` keeps an allow-list of structural tags and NO attributes (only ``colspan`` and
``rowspan`` with digits): no ``src``, ``href``, ``style``, ``srcset``, ``background``, event
handlers or ``<link>``/``<base>``/``<meta>`` survive, so nothing in the result can make a renderer
(LibreOffice, a browser) fetch a remote resource or read a local file. Pictures become their
``alt`` text in brackets. ``<script>``, ``<style>``, ``<head>``, ``<iframe>``, ``<object>``,
``<svg>``, ``<math>``, ``<template>`` and similar are dropped with their content. Text and
character references are decoded by the parser and escaped again on output.

:func:`plain_text` gives the text a reader sees: the same dropped elements, block elements on
lines of their own, runs of blanks collapsed.

Both parse with the standard library's ``html.parser``: no network, no entity files, no DTDs.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_KEEP = frozenset(
    "p br div span b strong i em u s strike sub sup small big h1 h2 h3 h4 h5 h6 ul ol li dl dt dd "
    "table thead tbody tfoot tr th td caption blockquote pre code hr a center section article "
    "header footer main nav aside figure figcaption address abbr cite q mark del ins tt kbd samp var".split()
)
_DROP_WITH_CONTENT = frozenset(
    "script style head title iframe frame frameset object embed applet noscript noframes template "
    "svg math canvas audio video source track select textarea button form map xml".split()
)
_VOID = frozenset("br hr img input meta link base col area wbr param".split())
_BLOCK = frozenset(
    "p div br h1 h2 h3 h4 h5 h6 ul ol li dl dt dd table tr caption blockquote pre hr section "
    "article header footer main nav aside figure figcaption address center".split()
)
_CELL = frozenset({"td", "th"})
_NUMBER = re.compile(r"\d{1,3}")

PAGE_STYLE = (
    "body{font-family:'DejaVu Sans',sans-serif;font-size:11pt;line-height:1.4}"
    "table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 4px}"
    "pre{white-space:pre-wrap}"
)


class _Walker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.dropping = 0  # depth inside dropped elements
        self.out: list[str] = []
        self.text: list[str] = []

    # -- tags --
    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            if tag not in _VOID:
                self.dropping += 1
            return
        if self.dropping:
            return
        if tag in _BLOCK:
            self.text.append("\n")
        elif tag in _CELL:
            self.text.append("\t")
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(f"[{html.escape(alt)}]")
                self.text.append(f"[{alt}]")
            return
        if tag in _KEEP:
            kept = "".join(
                f' {name}="{value}"' for name, value in attrs
                if name in ("colspan", "rowspan") and value and _NUMBER.fullmatch(value)
            )
            self.out.append(f"<{tag}{kept}>" if tag not in _VOID else f"<{tag}>")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _DROP_WITH_CONTENT:
            return  # self-closed: nothing to drop
        self.handle_starttag(tag, attrs)
        if tag not in _VOID and tag in _KEEP and not self.dropping:
            self.out.append(f"</{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in _DROP_WITH_CONTENT:
            if tag not in _VOID and self.dropping:
                self.dropping -= 1
            return
        if self.dropping:
            return
        if tag in _BLOCK:
            self.text.append("\n")
        if tag in _KEEP and tag not in _VOID:
            self.out.append(f"</{tag}>")

    # -- content --
    def handle_data(self, data: str) -> None:
        if self.dropping:
            return
        self.out.append(html.escape(data, quote=False))
        self.text.append(data)

    def handle_comment(self, data: str) -> None:  # conditional comments carry markup: never kept
        return

    def handle_decl(self, decl: str) -> None:
        return

    def handle_pi(self, data: str) -> None:
        return

    def unknown_decl(self, data: str) -> None:
        return


def _walk(markup: str) -> _Walker:
    walker = _Walker()
    walker.feed(markup)
    walker.close()
    return walker


def sanitise(markup: str) -> str:
    """The body of ``markup`` with only allow-listed tags and no attributes (see module doc)."""
    return "".join(_walk(markup).out)


def plain_text(markup: str) -> str:
    """The readable text of ``markup``: one line per block, blanks collapsed."""
    return tidy_text("".join(_walk(markup).text))


def tidy_text(text: str) -> str:
    lines = [re.sub(r"[ \t\r\f\v\u00a0]+", " ", line).strip() for line in text.split("\n")]
    out: list[str] = []
    for line in lines:
        if line or (out and out[-1]):
            out.append(line)
    return "\n".join(out).strip() + ("\n" if out else "")


def page(title: str, body_html: str) -> str:
    """A complete, self-contained HTML document around already-sanitised ``body_html``."""
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{PAGE_STYLE}</style></head>"
        f"<body>\n{body_html}\n</body></html>\n"
    )
