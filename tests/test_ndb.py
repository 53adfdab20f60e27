"""SUSE's rpm "ndb" Packages.db: what write_ndb lays out is rpm's rpmpkg.c layout
(checked against bytes assembled here from that source's constants), the reader
gets the packages back, and hostile files end in NDBError quickly, never in a
crash, a loop, an out-of-bounds read or an amplified result."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest
from helpers.fake_guest import mounted_guest
from hypothesis import given, settings
from hypothesis import strategies as st

from guestpool._errors import InspectorError
from guestpool.inspectors import _rpmdb as rpmdb
from guestpool.inspectors._inventory import PackagesInspector
from guestpool.inspectors._ndb import NDBError, ndb_blobs

PACKAGES: list[tuple[str, int | None, str, str, str]] = [
    ("bash", None, "4.4", "150400.27.3.2", "x86_64"),
    ("glibc", None, "2.31", "150300.63.1", "x86_64"),
    ("openSUSE-release", None, "15.5", "lp155.286.1", "x86_64"),
    ("zypper", None, "1.14.64", "150400.3.32.1", "x86_64"),
    ("timezone", 2, "2024a", "150000.75.28.1", "noarch")]


def db(packages: list[tuple[str, int | None, str, str, str]] = PACKAGES) -> bytearray:
    return bytearray(rpmdb.ndb_image([rpmdb.build_header(n, v, r, a, e)
                                      for n, e, v, r, a in packages]))


def as_tuples(blobs: list[bytes]) -> list[tuple[str, int | None, str, str, str]]:
    out = []
    for blob in blobs:
        p = rpmdb.parse_header(blob)
        assert p is not None
        out.append((p["name"], p.get("epoch"), p["version"], p["release"], p["arch"]))
    return out


# -- the layout: rpm's, not just our own ------------------------------------------------

def adler32_rfc1950(data: bytes) -> int:
    """rpmpkg.c's update_adler32 from ADLER32_INIT (1), written out (no zlib)."""
    s1, s2 = 1, 0
    for byte in data:
        s1 = (s1 + byte) % 65521
        s2 = (s2 + s1) % 65521
    return (s2 << 16) | s1


def le(*values: int) -> bytes:
    return b"".join(v.to_bytes(4, "little") for v in values)


def test_one_package_file_is_byte_for_byte_rpmpkg_c_layout() -> None:
    """Assembled from rpmpkg.c's defines: PKGDB_MAGIC 'RpmP', PKGDB_VERSION 0, header
    of 32 bytes (magic, version, generation, slotnpages, nextpkgidx); 4096-byte slot
    pages of 16-byte slots ('Slot', pkgidx, blkoff, blkcnt) from SLOT_START 2; blobs at
    blkoff * 16: head ('BlbS', pkgidx, timestamp, length), data, zero padding, tail
    (adler32 of all before it, length, 'BlbE')."""
    blob = rpmdb.build_header("bash", "4.4", "150400.27.3.2", "x86_64")
    blkcnt = (16 + len(blob) + 12 + 15) // 16
    header = (b"RpmP" + le(0, 2, 1, 2)).ljust(32, b"\0")
    page = header + b"Slot" + le(1, 256, blkcnt) + (b"Slot" + le(0, 0, 0)) * 253
    head = b"BlbS" + le(1, 1_700_000_000, len(blob))
    body = head + blob + b"\0" * (blkcnt * 16 - 28 - len(blob))
    want = page + body + le(adler32_rfc1950(body), len(blob)) + b"BlbE"
    assert len(page) == 4096
    assert rpmdb.ndb_image([blob]) == want
    assert ndb_blobs(want) == [blob]


def test_round_trip_gives_the_packages_back(tmp_path: Path) -> None:
    rpmdb.write_ndb(str(tmp_path / "Packages.db"), PACKAGES)
    blobs = ndb_blobs((tmp_path / "Packages.db").read_bytes())
    assert as_tuples(blobs) == PACKAGES


def test_many_packages_need_several_slot_pages_and_limit_bounds_them() -> None:
    many = [(f"pkg{i}", i % 3 or None, f"1.{i}", "1.1", "x86_64") for i in range(600)]
    data = db(many)
    assert struct.unpack_from("<I", data, 12)[0] == 3  # (600 + 2) slots / 256 a page
    assert as_tuples(ndb_blobs(bytes(data))) == many
    assert as_tuples(ndb_blobs(bytes(data), limit=10)) == many[:10]


def test_free_slots_are_skipped() -> None:
    """rpm frees a package by zeroing its slot's offset (and its blob's blocks)."""
    data = db()
    first_blob = struct.unpack_from("<4I", data, 32)
    struct.pack_into("<4I", data, 32, 0x746F6C53, 77, 0, 0)  # a free slot
    start = first_blob[2] * 16
    data[start:start + first_blob[3] * 16] = bytes(first_blob[3] * 16)
    assert as_tuples(ndb_blobs(bytes(data))) == PACKAGES[1:]


# -- hostile files ------------------------------------------------------------------------

SLOT2 = 32  # the first slot (SLOT_START 2), right after the 32-byte header


def slot(data: bytearray, n: int = 0) -> tuple[int, int, int, int]:
    magic, pkgidx, blkoff, blkcnt = struct.unpack_from("<4I", data, SLOT2 + 16 * n)
    return magic, pkgidx, blkoff, blkcnt


def set_slot(data: bytearray, n: int, pkgidx: int, blkoff: int, blkcnt: int) -> None:
    struct.pack_into("<4I", data, SLOT2 + 16 * n, 0x746F6C53, pkgidx, blkoff, blkcnt)


def rejects(data: bytes | bytearray, match: str | None = None, **kwargs: int) -> None:
    started = time.monotonic()
    with pytest.raises(NDBError, match=match):
        ndb_blobs(bytes(data), **kwargs)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("keep", [0, 31, 100, 4095, 4096, 4100, -1, -12, -16])
def test_truncated_file(keep: int) -> None:
    data = db()
    rejects(data[:keep] if keep >= 0 else data[:len(data) + keep])


def magic_offset(data: bytearray, which: str) -> int:
    _, _, blkoff, blkcnt = slot(data)
    return {"header": 0, "slot": SLOT2 + 16 * 3, "blob head": blkoff * 16,
            "blob tail": (blkoff + blkcnt) * 16 - 4}[which]


@pytest.mark.parametrize("which, match", [("header", "bad magic"), ("slot", "slot magic"),
                                          ("blob head", "blob head"),
                                          ("blob tail", "blob tail")])
def test_bad_magic_in_header_slot_blob_head_and_tail(which: str, match: str) -> None:
    data = db()
    at = magic_offset(data, which)
    data[at:at + 4] = b"XXXX"
    rejects(data, match)


def test_unknown_version() -> None:
    data = db()
    struct.pack_into("<I", data, 4, 1)
    rejects(data, "version")


def test_slot_pointing_past_the_end_of_the_file() -> None:
    data = db()
    _, pkgidx, _, blkcnt = slot(data)
    set_slot(data, 0, pkgidx, len(data) // 16 - 1, blkcnt)
    rejects(data, "past the end")
    set_slot(data, 0, pkgidx, 0xFFFFFFF0, 0xFFFF)
    rejects(data, "past the end")


def test_slot_pointing_into_the_slot_pages() -> None:
    data = db()
    _, pkgidx, _, blkcnt = slot(data)
    set_slot(data, 0, pkgidx, 1, blkcnt)  # the header and slots as a blob
    rejects(data, "slot pages")


def test_huge_blob_length() -> None:
    data = db()
    blob_at = slot(data)[2] * 16
    struct.pack_into("<I", data, blob_at + 12, 0xFFFFFFF0)
    rejects(data, "bytes")


def test_blob_over_max_value() -> None:
    big = rpmdb.build_header("kernel-default", "5.14.21", "x" * 5000, "x86_64")
    data = rpmdb.ndb_image([big])
    assert ndb_blobs(data) == [big]
    rejects(data, "over 4096", max_value=4096)


def test_blob_length_disagrees_with_its_blocks() -> None:
    data = db()
    blob_at = slot(data)[2] * 16
    length = struct.unpack_from("<I", data, blob_at + 12)[0]
    struct.pack_into("<I", data, blob_at + 12, length + 64)
    rejects(data, "blocks")


def test_checksum_mismatch() -> None:
    data = db()
    blob_at = slot(data, 1)[2] * 16
    data[blob_at + 40] ^= 0x01  # one bit of the second package's header bytes
    rejects(data, "adler32")


def test_blob_of_another_package() -> None:
    data = db()
    _, _, blkoff, blkcnt = slot(data)
    set_slot(data, 0, 9, blkoff, blkcnt)
    rejects(data, "package 1")


def test_slot_without_package_index_or_blocks() -> None:
    data = db()
    _, _, blkoff, blkcnt = slot(data)
    set_slot(data, 0, 1, len(data) // 16, 0)  # no blocks, at the very end
    rejects(data, "no blocks")
    data = db()
    set_slot(data, 0, 0, blkoff, blkcnt)
    struct.pack_into("<I", data, blkoff * 16 + 4, 0)  # the blob agrees: package 0
    rejects(data, "no package index")


def test_two_slots_for_one_package() -> None:
    """Two good blobs that both say package 1: rpm refuses that on its next write."""
    data = db()
    _, _, blkoff, blkcnt = slot(data, 1)
    set_slot(data, 1, 1, blkoff, blkcnt)
    start, end = blkoff * 16, (blkoff + blkcnt) * 16
    struct.pack_into("<I", data, start + 4, 1)
    struct.pack_into("<I", data, end - 12, adler32_rfc1950(bytes(data[start:end - 12])))
    rejects(data, "two slots for package 1")


def test_overlapping_slots() -> None:
    data = db()
    _, _, blkoff, blkcnt = slot(data)
    set_slot(data, 1, 2, blkoff + 1, blkcnt)  # starts inside the first blob
    rejects(data, "overlap")


def test_two_slots_share_one_blob() -> None:
    data = db()
    set_slot(data, 1, *slot(data)[1:])
    rejects(data, "overlap")


def test_a_million_slots_at_one_blob_is_not_a_million_copies() -> None:
    blob = rpmdb.build_header("bash", "4.4", "1.1", "x86_64")
    one = rpmdb.ndb_image([blob])
    n, npages = 1_000_000, (1_000_000 + 2 + 255) // 256
    blkoff = npages * 256
    table = bytearray((b"Slot" + le(0, 0, 0)) * (npages * 256))
    table[:32] = one[:32]
    struct.pack_into("<I", table, 12, npages)
    table[32:32 + 16 * n] = (b"Slot" + le(1, blkoff, slot(bytearray(one))[3])) * n
    data = bytes(table) + one[4096:]
    rejects(data)
    rejects(data, limit=10)


@pytest.mark.parametrize("npages", [0, 2, 0xFFFFFFFF])
def test_slot_page_count_zero_or_past_the_file(npages: int) -> None:
    data = db()
    struct.pack_into("<I", data, 12, npages)
    rejects(data, "slot page")


def test_file_size_not_whole_blocks() -> None:
    rejects(db() + b"\0" * 5, "multiple of 16")


def test_lzo_compressed_blob_is_refused_not_dropped() -> None:
    """rpm built with RPMPKG_LZO stores 'LZOB' + length + LZO data: not a header."""
    data = rpmdb.ndb_image([b"LZOB" + le(100) + b"\0" * 40])
    rejects(data, "LZO")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4096 + 600), st.integers(0, 255)), max_size=8))
def test_random_damage_gives_ndberror_or_bounded_blobs(edits: list[tuple[int, int]]) -> None:
    data = db()
    for at, value in edits:
        if at < len(data):
            data[at] = value
    try:
        blobs = ndb_blobs(bytes(data))
    except NDBError:
        return
    assert sum(len(b) for b in blobs) <= len(data)


# -- the packages inspector ---------------------------------------------------------------

def sqlite_db(tmp_path: Path) -> bytes:
    rpmdb.write_sqlite(str(tmp_path / "rpmdb.sqlite"), [("sqlite-pkg", "1", "1", "x86_64")])
    return (tmp_path / "rpmdb.sqlite").read_bytes()


def names(files: dict[str, bytes]) -> list[str]:
    found = PackagesInspector._rpm(mounted_guest(files), 128 * 1024 * 1024, 20_000)
    assert found is not None
    return [p["name"] for p in found]


def test_packages_inspector_reads_packages_db_when_there_is_no_sqlite(tmp_path: Path) -> None:
    ndb = bytes(db())
    garbage_bdb = b"\0" * 4096  # Packages (bdb) comes after Packages.db: never read
    assert names({"/usr/lib/sysimage/rpm/Packages.db": ndb,
                  "/usr/lib/sysimage/rpm/Packages": garbage_bdb}) == [p[0] for p in PACKAGES]
    assert names({"/var/lib/rpm/Packages.db": ndb}) == [p[0] for p in PACKAGES]
    assert names({"/var/lib/rpm/rpmdb.sqlite": sqlite_db(tmp_path),
                  "/var/lib/rpm/Packages.db": ndb}) == ["sqlite-pkg"]
    result = PackagesInspector().run(mounted_guest({"/usr/lib/sysimage/rpm/Packages.db": ndb}),
                                     PackagesInspector.Options())
    assert result["format"] == "rpm" and result["count"] == len(PACKAGES)
    timezone = next(p for p in result["packages"] if p["name"] == "timezone")
    assert (timezone["epoch"], timezone["version"], timezone["arch"]) == (2, "2024a", "noarch")


def test_a_broken_packages_db_is_an_inspector_error_naming_it() -> None:
    data = db()
    data[4200] ^= 0xFF
    with pytest.raises(InspectorError, match=r"^/usr/lib/sysimage/rpm/Packages\.db: "):
        names({"/usr/lib/sysimage/rpm/Packages.db": bytes(data)})
