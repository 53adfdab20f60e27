"""Read and write rpm header blobs as rpm's databases store them.

A blob is ``il`` (entry count) and ``dl`` (data length) as big-endian int32,
``il`` index entries of (tag, type, offset, count), then ``dl`` bytes of data.
We read only the tags an inventory needs, with every offset checked, because
the blob comes from a guest. The writers make real databases for the demo fleet
and the fidelity corpus: sqlite (Fedora), and ndb (SUSE), which no rpm on a
Debian host can write.
"""

from __future__ import annotations

import sqlite3
import struct
import zlib
from typing import Any

from . import _ndb as ndb

NAME, VERSION, RELEASE, EPOCH, ARCH = 1000, 1001, 1002, 1003, 1022
_INT32, _STRING = 4, 6
_WANT = {NAME: "name", VERSION: "version", RELEASE: "release", EPOCH: "epoch", ARCH: "arch"}
MAX_ENTRIES = 10_000


def parse_header(blob: bytes) -> dict[str, Any] | None:
    """The package fields of one header blob, or None when it is malformed."""
    if len(blob) < 8:
        return None
    il, dl = struct.unpack(">ii", blob[:8])
    start = 8 + 16 * il
    if not (0 < il <= MAX_ENTRIES) or dl < 0 or start + dl > len(blob):
        return None
    data = blob[start:start + dl]
    out: dict[str, Any] = {}
    for i in range(il):
        tag, typ, offset, count = struct.unpack(">iiii", blob[8 + 16 * i: 24 + 16 * i])
        key = _WANT.get(tag)
        if key is None or not (0 <= offset < dl):
            continue
        if typ == _STRING:
            end = data.find(b"\0", offset)
            if end < 0:
                return None
            out[key] = data[offset:end].decode("utf-8", errors="replace")
        elif typ == _INT32 and count >= 1 and offset + 4 <= dl:
            out[key] = struct.unpack(">i", data[offset:offset + 4])[0]
    return out if "name" in out else None


def build_header(name: str, version: str, release: str, arch: str, epoch: int | None = None
                 ) -> bytes:
    """A minimal header blob (used by the demo fleet to write a real rpmdb.sqlite)."""
    entries: list[tuple[int, int, bytes]] = []
    if epoch is not None:
        entries.append((EPOCH, _INT32, struct.pack(">i", epoch)))
    for tag, value in ((NAME, name), (VERSION, version), (RELEASE, release), (ARCH, arch)):
        entries.append((tag, _STRING, value.encode() + b"\0"))
    index, data = b"", b""
    for tag, typ, payload in entries:
        if typ == _INT32:
            data += b"\0" * (-len(data) % 4)
        index += struct.pack(">iiii", tag, typ, len(data), 1)
        data += payload
    return struct.pack(">ii", len(entries), len(data)) + index + data


def write_sqlite(path: str, packages: list[tuple[str, str, str, str]]) -> None:
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, "
                "blob BLOB NOT NULL)")
    con.executemany("INSERT INTO Packages (blob) VALUES (?)",
                    [(build_header(*p),) for p in packages])
    con.commit()
    con.close()


def ndb_image(blobs: list[bytes], timestamp: int = 1_700_000_000) -> bytes:
    """The bytes of an ndb ``Packages.db`` holding ``blobs`` as packages 1..n.

    Laid out as rpm's lib/backend/ndb/rpmpkg.c (commit 9ac6c427d240; the layout is
    the same at 09cc8ebad29a) leaves a database filled in one go: the header and
    enough slot pages, then each blob in block order, padded with zeros to whole
    blocks, its adler32 covering head, header bytes and padding. ``generation``
    counts the writes as rpm counts them (one per page added, one per slot)."""
    npages = -(-(len(blobs) + ndb.SLOT_START) // ndb.SLOTS_PER_PAGE)
    slots, body = bytearray(), bytearray()
    blk = npages * ndb.PAGE_SIZE // ndb.BLK_SIZE
    for pkgidx, blob in enumerate(blobs, 1):
        head = struct.pack("<4I", ndb.BLOB_HEAD_MAGIC, pkgidx, timestamp, len(blob))
        blkcnt = ndb.blob_blocks(len(blob))
        pad = bytes(blkcnt * ndb.BLK_SIZE - ndb.BLOB_HEAD - len(blob) - ndb.BLOB_TAIL)
        adler = zlib.adler32(head + blob + pad)  # rpm's ADLER32_INIT is zlib's start, 1
        body += head + blob + pad + struct.pack("<3I", adler, len(blob), ndb.BLOB_TAIL_MAGIC)
        slots += struct.pack("<4I", ndb.SLOT_MAGIC, pkgidx, blk, blkcnt)
        blk += blkcnt
    free = npages * ndb.SLOTS_PER_PAGE - ndb.SLOT_START - len(blobs)
    slots += struct.pack("<4I", ndb.SLOT_MAGIC, 0, 0, 0) * free
    header = struct.pack("<5I", ndb.MAGIC, ndb.VERSION, npages + len(blobs), npages,
                         len(blobs) + 1).ljust(ndb.HEADER_SIZE, b"\0")
    return header + bytes(slots) + bytes(body)


def write_ndb(path: str, packages: list[tuple[str, int | None, str, str, str]]) -> None:
    """A SUSE ``Packages.db`` of (name, epoch, version, release, arch) packages.

    Only ``Packages.db``: rpm keeps its indexes in ``Index.db`` (rpmxdb.c), which the
    package listing does not need and no rpm on this host could check."""
    blobs = [build_header(n, v, r, a, e) for n, e, v, r, a in packages]
    with open(path, "wb") as f:
        f.write(ndb_image(blobs))
