"""The package headers of rpm's "ndb" database, read from its bytes.

openSUSE Leap/SLES 15+ keep the rpm database in ``Packages.db`` (with indexes in
``Index.db``, which listing packages does not need). The layout follows rpm's
lib/backend/ndb/rpmpkg.c (commit 9ac6c427d240; the layout is the same at
09cc8ebad29a); every integer is a little-endian uint32:

- a 32-byte header: 'RpmP', version 0, generation, slot page count, next package index;
- slot pages of 4096 bytes (the header is the first 32 bytes of page 0), each slot
  16 bytes: 'Slot', package index, block offset (0: a free slot), block count;
- a blob at block offset * 16, filling its blocks: head ('BlbS', package index,
  timestamp, length), the header bytes, zero padding, tail (adler32 of everything
  before it, length, 'BlbE').

The bytes are the guest's. What rpm refuses (bad magic, version, file size, a slot
past the end or into the slot pages, a blob not matching its slot) raises
:class:`NDBError`, and so does what rpm only refuses when writing: overlapping
blobs or two slots for one package, so one blob cannot be returned many times.
The adler32 is checked too (rpm checks it only before it writes next to a
blob): a mismatch raises rather than skips, because a shorter list would hide a
package, and rpm's own listing stops with an error at a blob it cannot read.
Work is bounded by the file size and ``limit``; nothing loops.
"""

from __future__ import annotations

import itertools
import struct
import sys
import zlib
from array import array

MAGIC, VERSION, HEADER_SIZE = 0x506D7052, 0, 32  # 'RpmP'
PAGE_SIZE, SLOT_SIZE, BLK_SIZE = 4096, 16, 16
SLOT_START, SLOTS_PER_PAGE = HEADER_SIZE // SLOT_SIZE, PAGE_SIZE // SLOT_SIZE
SLOT_MAGIC, BLOB_HEAD_MAGIC, BLOB_TAIL_MAGIC = 0x746F6C53, 0x53626C42, 0x45626C42
BLOB_HEAD, BLOB_TAIL = 16, 12
LZO_MAGIC = b"LZOB"  # a blob of an rpm built with RPMPKG_LZO


class NDBError(ValueError):
    """Not an rpm ndb ``Packages.db`` this reader accepts."""


def blob_blocks(length: int) -> int:
    """Blocks a blob of ``length`` header bytes fills, head and tail included."""
    return -(-(BLOB_HEAD + length + BLOB_TAIL) // BLK_SIZE)


def ndb_blobs(data: bytes, limit: int = 100_000, max_value: int = 16 * 1024 * 1024
              ) -> list[bytes]:
    """Every package header blob of the ``Packages.db`` in ``data``, in file order;
    the first ``limit`` slots' only."""
    if len(data) < PAGE_SIZE:
        raise NDBError(f"too short for an rpm ndb database ({len(data)} bytes)")
    magic, version, _generation, npages, _nextpkgidx = struct.unpack_from("<5I", data)
    if magic != MAGIC:
        raise NDBError("not an rpm ndb database (bad magic)")
    if version != VERSION:
        raise NDBError(f"ndb version {version}, not {VERSION}")
    if len(data) % BLK_SIZE:
        raise NDBError(f"file size {len(data)} is not a multiple of {BLK_SIZE}")
    if not 1 <= npages <= len(data) // PAGE_SIZE:
        raise NDBError(f"{npages} slot pages in a file of {len(data)} bytes")
    out: list[bytes] = []
    end, seen = npages * PAGE_SIZE // BLK_SIZE, set()
    for blkoff, pkgidx, blkcnt in sorted(_slots(data, npages, limit)):
        if blkoff < end:
            raise NDBError(f"the blob of package {pkgidx} at block {blkoff} overlaps another")
        if pkgidx in seen:
            raise NDBError(f"two slots for package {pkgidx}")
        seen.add(pkgidx)
        end = blkoff + blkcnt
        out.append(_blob(data, pkgidx, blkoff, blkcnt, max_value))
    return out


def _slots(data: bytes, npages: int, limit: int) -> list[tuple[int, int, int]]:
    """(blkoff, pkgidx, blkcnt) of the first ``limit`` used slots, each within the file."""
    words = array("I", data[:npages * PAGE_SIZE])
    if sys.byteorder == "big":
        words.byteswap()
    first = HEADER_SIZE // 4
    magics = words[first::4]
    if magics.count(SLOT_MAGIC) != len(magics):
        bad = next(i for i, m in enumerate(magics) if m != SLOT_MAGIC)
        raise NDBError(f"slot {bad + SLOT_START} has no slot magic")
    pkgidxs, blkoffs, blkcnts = words[first + 1::4], words[first + 2::4], words[first + 3::4]
    fileblks, minblk = len(data) // BLK_SIZE, npages * PAGE_SIZE // BLK_SIZE
    out: list[tuple[int, int, int]] = []
    for i in itertools.islice(itertools.compress(range(len(blkoffs)), blkoffs), limit):
        pkgidx, blkoff, blkcnt = pkgidxs[i], blkoffs[i], blkcnts[i]
        where = f"slot {i + SLOT_START} (package {pkgidx})"
        if blkoff + blkcnt > fileblks:
            raise NDBError(f"{where} points past the end of the file (blocks {blkoff}+"
                           f"{blkcnt} of {fileblks}): a truncated database")
        if blkoff < minblk:
            raise NDBError(f"{where} points into the slot pages (block {blkoff})")
        if not pkgidx or not blkcnt:
            raise NDBError(f"{where} has no package index or no blocks")
        out.append((blkoff, pkgidx, blkcnt))
    return out


def _blob(data: bytes, pkgidx: int, blkoff: int, blkcnt: int, max_value: int) -> bytes:
    start, end = blkoff * BLK_SIZE, (blkoff + blkcnt) * BLK_SIZE
    where = f"package {pkgidx} at block {blkoff}"
    magic, owner, _timestamp, length = struct.unpack_from("<4I", data, start)
    if magic != BLOB_HEAD_MAGIC:
        raise NDBError(f"{where}: no blob head magic")
    if owner != pkgidx:
        raise NDBError(f"{where}: the blob there is package {owner}'s")
    if length > max_value:
        raise NDBError(f"{where}: a blob of {length} bytes (over {max_value})")
    if blob_blocks(length) != blkcnt:
        raise NDBError(f"{where}: a blob of {length} bytes does not fill its {blkcnt} blocks")
    adler, tail_length, tail_magic = struct.unpack_from("<3I", data, end - BLOB_TAIL)
    if tail_magic != BLOB_TAIL_MAGIC or tail_length != length:
        raise NDBError(f"{where}: bad blob tail")
    if zlib.adler32(memoryview(data)[start:end - BLOB_TAIL]) != adler:
        raise NDBError(f"{where}: adler32 checksum mismatch")
    blob = data[start + BLOB_HEAD:start + BLOB_HEAD + length]
    if blob[:4] == LZO_MAGIC:
        raise NDBError(f"{where}: an LZO-compressed blob (rpm built with RPMPKG_LZO)")
    return blob
