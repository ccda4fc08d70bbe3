"""Outlook ``.msg`` files built byte by byte: no free tool writes them, so this module writes a
Compound File (CFB v3, [MS-CFB]) holding the MAPI property streams of [MS-OXMSG]: the message's
``__properties_version1.0``, string properties as ``__substg1.0_<tag>`` streams (UTF-16LE), one
storage per recipient and per attachment, and an empty named-property map.

Every stream must be smaller than the mini-stream cutoff (4096 bytes): all of them live in the
mini stream, which keeps the writer short. Enough for the tests' messages.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

SECTOR, MINI = 512, 64
END, FREE, FATSECT, NOSTREAM = 0xFFFFFFFE, 0xFFFFFFFF, 0xFFFFFFFD, 0xFFFFFFFF
# property types
STRING, BINARY, INT32, TIME = 0x001F, 0x0102, 0x0003, 0x0040


@dataclass
class _Node:
    name: str
    data: bytes | None = None  # None: a storage
    kids: list["_Node"] = field(default_factory=list)


def _props_stream(props: list[tuple[int, int, bytes]], header: bytes) -> bytes:
    """The ``__properties_version1.0`` stream: header, then one 16-byte entry per property."""
    out = bytearray(header)
    for prop_id, ptype, value in props:
        tag = (prop_id << 16) | ptype
        if ptype in (STRING, BINARY):
            entry = struct.pack("<IIII", tag, 0x6, len(value), 0)  # readable + writable; size of the stream
        else:
            entry = struct.pack("<II", tag, 0x6) + value.ljust(8, b"\0")
        out += entry
    return bytes(out)


def _storage(name: str, props: list[tuple[int, int, bytes]], header: bytes) -> _Node:
    node = _Node(name)
    for prop_id, ptype, value in props:
        if ptype in (STRING, BINARY):
            node.kids.append(_Node(f"__substg1.0_{prop_id:04X}{ptype:04X}", value))
    node.kids.append(_Node("__properties_version1.0", _props_stream(props, header)))
    return node


def _s(text: str) -> bytes:
    return text.encode("utf-16-le")


def message(
    path: Path,
    *,
    subject: str,
    sender_name: str,
    sender_email: str,
    to: list[tuple[str, str]],
    cc: list[tuple[str, str]] = (),
    body: str,
    message_id: str,
    filetime: int,
    attachments: list[tuple[str, str, bytes]] = (),
) -> Path:
    """A .msg with a plain-text body, To/Cc recipients and (file name, MIME type, bytes) attachments."""
    display = lambda people: "; ".join(name for name, _ in people)  # noqa: E731
    props = [
        (0x001A, STRING, _s("IPM.Note")),
        (0x0037, STRING, _s(subject)),
        (0x0E1D, STRING, _s(subject)),  # normalized subject
        (0x0C1A, STRING, _s(sender_name)),
        (0x0C1F, STRING, _s(sender_email)),
        (0x5D01, STRING, _s(sender_email)),  # sender SMTP address
        (0x0C1E, STRING, _s("SMTP")),
        (0x0E04, STRING, _s(display(to))),
        (0x0E03, STRING, _s(display(cc))),
        (0x1000, STRING, _s(body)),
        (0x1035, STRING, _s(message_id)),
        (0x0039, TIME, struct.pack("<Q", filetime)),  # client submit time
        (0x0E06, TIME, struct.pack("<Q", filetime)),  # delivery time
        (0x0E07, INT32, struct.pack("<I", 0x1)),  # message flags: read
    ]
    people = [(1, p) for p in to] + [(2, p) for p in cc]
    header = struct.pack("<8sIIII8s", b"", len(people), len(attachments), len(people), len(attachments), b"")
    root = _storage("Root Entry", props, header)
    for i, (kind, (name, email)) in enumerate(people):
        root.kids.append(_storage(f"__recip_version1.0_#{i:08X}", [
            (0x3001, STRING, _s(name)), (0x3003, STRING, _s(email)), (0x39FE, STRING, _s(email)),
            (0x3002, STRING, _s("SMTP")), (0x0C15, INT32, struct.pack("<I", kind)),
            (0x3000, INT32, struct.pack("<I", i)),
        ], b"\0" * 8))
    for i, (filename, mime, data) in enumerate(attachments):
        root.kids.append(_storage(f"__attach_version1.0_#{i:08X}", [
            (0x3707, STRING, _s(filename)), (0x3704, STRING, _s(filename[:12])), (0x3001, STRING, _s(filename)),
            (0x370E, STRING, _s(mime)), (0x3701, BINARY, data), (0x3705, INT32, struct.pack("<I", 1)),
            (0x0E21, INT32, struct.pack("<I", i)),
        ], b"\0" * 8))
    nameid = _Node("__nameid_version1.0", kids=[
        _Node("__substg1.0_00020102", b""), _Node("__substg1.0_00030102", b""), _Node("__substg1.0_00040102", b""),
    ])
    root.kids.append(nameid)
    Path(path).write_bytes(_compound_file(root))
    return Path(path)


def not_a_message(path: Path) -> Path:
    """A valid Compound File (the container of .msg, .doc, .xls) holding one binary stream and no
    message properties."""
    root = _Node("Root Entry", kids=[_Node("Contents", bytes(range(256)) * 8)])
    Path(path).write_bytes(_compound_file(root))
    return Path(path)


# --- CFB v3 -------------------------------------------------------------------------------------


def _compound_file(root: _Node) -> bytes:
    nodes: list[_Node] = []

    def number(node: _Node) -> None:
        nodes.append(node)
        for kid in node.kids:
            number(kid)

    number(root)
    index = {id(n): i for i, n in enumerate(nodes)}

    # mini stream: every stream's bytes in 64-byte mini sectors, chained in the mini FAT
    ministream = bytearray()
    minifat: list[int] = []
    start: dict[int, int] = {}
    for node in nodes:
        if node.data is None:
            continue
        if len(node.data) >= 4096:
            raise ValueError(f"stream {node.name} is too large for this writer (mini stream only)")
        if not node.data:
            start[id(node)] = END
            continue
        first = len(minifat)
        count = -(-len(node.data) // MINI)
        minifat += [first + k + 1 for k in range(count - 1)] + [END]
        ministream += node.data.ljust(count * MINI, b"\0")
        start[id(node)] = first

    def pad(data: bytes, fill: bytes = b"\0") -> bytes:
        extra = -len(data) % SECTOR
        return data + fill * (extra // len(fill))

    minifat_bytes = pad(b"".join(struct.pack("<I", v) for v in minifat), struct.pack("<I", FREE))
    mini_bytes = pad(bytes(ministream))

    def entry(node: _Node | None, right: int = NOSTREAM, child: int = NOSTREAM, sector: int = END, size: int = 0) -> bytes:
        if node is None:
            return b"\0" * 64 + struct.pack("<HBBIII", 0, 0, 0, NOSTREAM, NOSTREAM, NOSTREAM) + b"\0" * 36 + struct.pack("<IQ", 0, 0)
        name = node.name.encode("utf-16-le") + b"\0\0"
        kind = 5 if node is root else (1 if node.data is None else 2)
        return (name.ljust(64, b"\0") + struct.pack("<HBB", len(name), kind, 1)
                + struct.pack("<III", NOSTREAM, right, child) + b"\0" * 16 + b"\0" * 4 + b"\0" * 16
                + struct.pack("<IQ", sector, size))

    n_minifat = len(minifat_bytes) // SECTOR
    n_mini = len(mini_bytes) // SECTOR
    n_dir = -(-len(nodes) // 4)
    n_fat = 1
    while n_fat * 128 < n_fat + n_dir + n_minifat + n_mini:
        n_fat += 1
    dir_start = n_fat
    minifat_start = dir_start + n_dir
    mini_start = minifat_start + n_minifat

    entries = []
    for node in nodes:
        # siblings as a chain of right links (a degenerate but valid tree: every node black)
        parent = next((p for p in nodes if any(k is node for k in p.kids)), None)
        right = NOSTREAM
        if parent is not None:
            position = next(i for i, k in enumerate(parent.kids) if k is node)
            if position + 1 < len(parent.kids):
                right = index[id(parent.kids[position + 1])]
        child = index[id(node.kids[0])] if node.kids else NOSTREAM
        if node is root:
            entries.append(entry(node, right, child, mini_start if n_mini else END, len(ministream)))
        elif node.data is None:
            entries.append(entry(node, right, child, 0, 0))
        else:
            entries.append(entry(node, right, child, start[id(node)], len(node.data)))
    while len(entries) % 4:
        entries.append(entry(None))
    directory = b"".join(entries)

    fat = [FATSECT] * n_fat
    for first, count in ((dir_start, n_dir), (minifat_start, n_minifat), (mini_start, n_mini)):
        fat += [first + k + 1 for k in range(count - 1)] + ([END] if count else [])
    fat_bytes = pad(b"".join(struct.pack("<I", v) for v in fat), struct.pack("<I", FREE))

    difat = [*range(n_fat)] + [FREE] * (109 - n_fat)
    header = (bytes.fromhex("D0CF11E0A1B11AE1") + b"\0" * 16 + struct.pack("<HHHHH", 0x3E, 3, 0xFFFE, 9, 6)
              + b"\0" * 6 + struct.pack("<IIIIIIIII", 0, n_fat, dir_start, 0, 4096,
                                        minifat_start if n_minifat else END, n_minifat, END, 0)
              + b"".join(struct.pack("<I", v) for v in difat))
    assert len(header) == SECTOR
    return header + fat_bytes + directory + minifat_bytes + mini_bytes
