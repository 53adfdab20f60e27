"""The Berkeley DB hash reader (CentOS/RHEL 7 rpm databases): real files from
db_load, and hostile ones that must end the walk, not loop or read out of bounds."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guestpool.inspectors._bdb import BDBError, hash_values


def db_load(tmp_path: Path, values: list[bytes]) -> bytes:
    if shutil.which("db_load") is None:
        pytest.fail("db_load missing: run `bash pool/bootstrap.sh --dev` (db5.3-util)")
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "HEADER=END"]
    for i, v in enumerate(values, 1):
        lines += [" " + i.to_bytes(4, "little").hex(), " " + v.hex()]
    (tmp_path / "in.txt").write_text("\n".join([*lines, "DATA=END"]) + "\n")
    subprocess.run(["db_load", "-f", str(tmp_path / "in.txt"), str(tmp_path / "Packages")],
                   check=True)
    return (tmp_path / "Packages").read_bytes()


def test_values_small_and_on_overflow_pages(tmp_path: Path) -> None:
    values = [os.urandom(n) for n in (10, 3000, 9000, 50_000, 100)]
    assert sorted(hash_values(db_load(tmp_path, values))) == sorted(values)


def test_a_chain_that_loops_or_runs_off_the_file_is_dropped(tmp_path: Path) -> None:
    data = bytearray(db_load(tmp_path, [os.urandom(9000)]))
    pagesize = struct.unpack_from("<I", data, 20)[0]
    for pgno in range(1, len(data) // pagesize):
        page = pgno * pagesize
        if data[page + 25] == 7:  # an overflow page: point it at itself
            struct.pack_into("<I", data, page + 16, pgno)
            struct.pack_into("<H", data, page + 22, 1)  # too few bytes to finish
    assert hash_values(bytes(data)) == []
    with pytest.raises(BDBError):
        hash_values(b"\0" * 4096)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=512, max_size=8192), st.sampled_from([512, 1024, 4096]))
def test_random_pages_never_crash(noise: bytes, pagesize: int) -> None:
    data = bytearray(noise.ljust(pagesize * 2, b"\0"))
    struct.pack_into("<III", data, 12, 0x061561, 9, pagesize)
    data[pagesize + 25] = 13  # a hash page of noise
    for value in hash_values(bytes(data)):
        assert len(value) <= len(data)
