"""The values of a Berkeley DB hash database, read from its bytes.

CentOS/RHEL 7 and older SUSE keep the rpm database in ``/var/lib/rpm/Packages``,
a Berkeley DB hash file whose values are rpm headers. The format is simple
enough to walk in Python (a meta page, hash pages of key/value items, values
too large for a page in chains of overflow pages), and the bytes are the
guest's: every offset is checked, every chain bounded, every page visited at
most once, so a hostile file ends the walk instead of looping or reading out
of bounds.
"""

from __future__ import annotations

import struct

HASH_MAGIC = 0x061561
P_HASH_UNSORTED, P_OVERFLOW, P_HASH = 2, 7, 13
H_KEYDATA, H_OFFPAGE = 1, 3
PAGE_HEADER = 26


class BDBError(ValueError):
    """Not a Berkeley DB hash file this reader understands."""


def hash_values(data: bytes, limit: int = 100_000, max_value: int = 16 * 1024 * 1024
                ) -> list[bytes]:
    """Every value of the hash database in ``data`` (keys dropped), at most ``limit``."""
    if len(data) < 512:
        raise BDBError("too short for a Berkeley DB file")
    for order in "<>":
        if struct.unpack_from(order + "I", data, 12)[0] == HASH_MAGIC:
            break
    else:
        raise BDBError("not a Berkeley DB hash database (bad magic)")
    (pagesize,) = struct.unpack_from(order + "I", data, 20)
    if pagesize < 512 or pagesize > 65536 or pagesize & (pagesize - 1):
        raise BDBError(f"bad page size {pagesize}")
    pages = len(data) // pagesize
    out: list[bytes] = []
    for pgno in range(1, pages):
        page = data[pgno * pagesize:(pgno + 1) * pagesize]
        if page[25] not in (P_HASH, P_HASH_UNSORTED):
            continue
        (entries,) = struct.unpack_from(order + "H", page, 20)
        entries = min(entries, (pagesize - PAGE_HEADER) // 2)
        offsets = struct.unpack_from(f"{order}{entries}H", page, PAGE_HEADER)
        for i in range(1, entries, 2):  # key, value, key, value...
            off = offsets[i]
            end = offsets[i - 1] if offsets[i - 1] > off else pagesize
            if not PAGE_HEADER <= off < end <= pagesize:
                continue
            value = _item(data, page, off, end, order, pagesize, pages, max_value)
            if value is not None:
                out.append(value)
                if len(out) >= limit:
                    return out
    return out


def _item(data: bytes, page: bytes, off: int, end: int, order: str, pagesize: int,
          pages: int, max_value: int) -> bytes | None:
    kind = page[off]
    if kind == H_KEYDATA:
        return page[off + 1:end]
    if kind != H_OFFPAGE or off + 12 > end:
        return None  # duplicates are not used by rpm's Packages
    pgno, total = struct.unpack_from(order + "II", page, off + 4)
    if total > max_value:
        return None
    chunks, got, seen = [], 0, set()
    while pgno and got < total:
        if pgno in seen or pgno >= pages:
            return None
        seen.add(pgno)
        ov = data[pgno * pagesize:(pgno + 1) * pagesize]
        if ov[25] != P_OVERFLOW:
            return None
        (length,) = struct.unpack_from(order + "H", ov, 22)
        length = min(length, pagesize - PAGE_HEADER, total - got)
        chunks.append(ov[PAGE_HEADER:PAGE_HEADER + length])
        got += length
        (pgno,) = struct.unpack_from(order + "I", ov, 16)
    return b"".join(chunks) if got == total else None
