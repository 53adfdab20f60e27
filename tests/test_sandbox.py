"""Guest databases parsed in a sandboxed child: hostile ones fail fast, one line."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from guestpool import InspectorError
from guestpool.inspectors._rpmdb import build_header, parse_header
from guestpool.inspectors._sandbox import sqlite_blobs


def _database(tmp_path: Path, *statements: str) -> bytes:
    path = tmp_path / "rpmdb.sqlite"
    con = sqlite3.connect(path)
    for sql in statements:
        con.execute(sql)
    con.commit()
    con.close()
    return path.read_bytes()


def test_a_real_rpmdb_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ok.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)")
    con.executemany("INSERT INTO Packages (blob) VALUES (?)",
                    [(build_header(f"pkg{i}", "1.0", "1.fc40", "x86_64"),) for i in range(50)])
    con.commit()
    con.close()
    blobs = sqlite_blobs(path.read_bytes(), limit=20, deadline=30)
    assert len(blobs) == 20
    assert parse_header(blobs[3]) == {"name": "pkg3", "version": "1.0", "release": "1.fc40",
                                      "arch": "x86_64"}


def test_a_recursive_view_is_refused_within_the_deadline(tmp_path: Path) -> None:
    data = _database(tmp_path, "CREATE VIEW Packages AS WITH RECURSIVE r(x) AS "
                               "(SELECT 1 UNION ALL SELECT x + 1 FROM r) "
                               "SELECT randomblob(100000) AS blob FROM r")
    assert len(data) < 16 * 1024
    t = time.monotonic()
    with pytest.raises(InspectorError, match="Packages is not a table"):
        sqlite_blobs(data, limit=10**9, deadline=20)
    assert time.monotonic() - t < 15


def test_row_count_and_blob_size_are_bounded(tmp_path: Path) -> None:
    data = _database(
        tmp_path, "CREATE TABLE Packages (blob BLOB)",
        "INSERT INTO Packages WITH RECURSIVE r(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM r "
        "LIMIT 300000) SELECT x'00' FROM r",
        "INSERT INTO Packages VALUES (zeroblob(2000000))")
    assert len(sqlite_blobs(data, limit=1000, deadline=30)) == 1000
    blobs = sqlite_blobs(data, limit=10**6, deadline=30, max_blob=1_000_000)
    assert len(blobs) == 300000  # the 2 MB blob is left out


def test_garbage_is_a_clean_error() -> None:
    with pytest.raises(InspectorError, match="cannot be read safely"):
        sqlite_blobs(b"SQLite format 3\x00" + b"\xff" * 5000, limit=10, deadline=20)
