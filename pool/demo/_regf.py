"""A minimal Windows registry hive writer, so tests and the corpus can give a
guest a real hive.

Only what a reader needs: the base block, one hbin, nk keys (with lh subkey
lists) and vk values (REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD,
REG_MULTI_SZ). Layout per the regf format that hivex reads.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

REG_SZ, REG_EXPAND_SZ, REG_BINARY, REG_DWORD, REG_MULTI_SZ = 1, 2, 3, 4, 7
NONE = 0xFFFFFFFF


@dataclass(frozen=True)
class Expand:
    """A REG_EXPAND_SZ value (a string with %VARIABLES%)."""

    text: str


Value = str | int | bytes | Expand | list[str]


@dataclass
class Key:
    name: str
    values: dict[str, Value] = field(default_factory=dict)
    children: list[Key] = field(default_factory=list)


class _Bin:
    def __init__(self) -> None:
        self.data = bytearray()

    def cell(self, payload: bytes) -> int:
        """Append a used cell; return its offset from the start of the hive bins."""
        size = (4 + len(payload) + 7) & ~7
        offset = 0x20 + len(self.data)
        self.data += struct.pack("<i", -size) + payload + b"\0" * (size - 4 - len(payload))
        return offset

    def patch(self, offset: int, at: int, fmt: str, *values: int) -> None:
        struct.pack_into(fmt, self.data, offset - 0x20 + 4 + at, *values)


def _nk(b: _Bin, key: Key, parent: int, root: bool) -> int:
    name = key.name.encode("ascii")
    body = struct.pack("<2sHQ" + "I" * 15 + "HH", b"nk", 0x2C if root else 0x20, 0, 0, parent,
                       len(key.children), 0, NONE, NONE, len(key.values), NONE, NONE, NONE,
                       0, 0, 0, 0, 0, len(name), 0) + name
    me = b.cell(body)
    if key.values:
        vks = []
        for vname, value in key.values.items():
            vtype, data = _encode(value)
            if len(data) <= 4:  # small data lives in the offset field itself
                dlen, doff = 0x80000000 | len(data), struct.unpack("<I", data.ljust(4, b"\0"))[0]
            else:
                dlen, doff = len(data), b.cell(data)
            n = vname.encode("ascii")
            vks.append(b.cell(struct.pack("<2sHIIIHH", b"vk", len(n), dlen, doff, vtype, 1, 0)
                              + n))
        b.patch(me, 0x28, "<I", b.cell(struct.pack(f"<{len(vks)}I", *vks)))
    if key.children:
        kids = [(_nk(b, child, me, False), child.name) for child in key.children]
        lh = struct.pack("<2sH", b"lh", len(kids)) + b"".join(
            struct.pack("<II", off, _hash(name)) for off, name in kids)
        b.patch(me, 0x1C, "<I", b.cell(lh))
    return me


def _encode(value: Value) -> tuple[int, bytes]:
    if isinstance(value, int):
        return REG_DWORD, struct.pack("<I", value)
    if isinstance(value, bytes):
        return REG_BINARY, value
    if isinstance(value, Expand):
        return REG_EXPAND_SZ, (value.text + "\0").encode("utf-16-le")
    if isinstance(value, list):
        return REG_MULTI_SZ, "".join(v + "\0" for v in [*value, ""]).encode("utf-16-le")
    return REG_SZ, (value + "\0").encode("utf-16-le")


def _hash(name: str) -> int:
    h = 0
    for ch in name.upper():
        h = (h * 37 + ord(ch)) & 0xFFFFFFFF
    return h


def hive(root: Key) -> bytes:
    """The bytes of a hive file whose root key is ``root``."""
    b = _Bin()
    root_off = _nk(b, root, NONE, True)
    used = 0x20 + len(b.data)
    size = (used + 0xFFF) & ~0xFFF
    free = size - used
    body = bytes(b.data) + (struct.pack("<i", free) + b"\0" * (free - 4) if free else b"")
    hbin = struct.pack("<4sIIQQI", b"hbin", 0, size, 0, 0, 0) + body
    base = bytearray(4096)
    struct.pack_into("<4sIIQIIIIIII", base, 0, b"regf", 1, 1, 0, 1, 3, 0, 1, root_off, size, 1)
    checksum = 0
    for (word,) in struct.iter_unpack("<I", bytes(base[:0x1FC])):
        checksum ^= word
    struct.pack_into("<I", base, 0x1FC, checksum)
    return bytes(base) + hbin
