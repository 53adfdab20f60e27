"""Package databases as each package manager writes them (dpkg status, rpm
sqlite and Berkeley DB, pacman, apk), for guests whose package lists are
known in advance."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

from guestpool._errors import SetupError
from guestpool.inspectors import _rpmdb as rpmdb

from ._images import _write


def _evr(version: str) -> tuple[int, str, str]:
    """(epoch, version, release) of a dpkg/pacman/apk version string, as libguestfs
    splits it: epoch before ':', release after the last '-'."""
    epoch = 0
    if ":" in version:
        e, version = version.split(":", 1)
        epoch = int(e)
    ver, _, rel = version.rpartition("-")
    return (epoch, ver, rel) if ver else (epoch, version, "")


def _pkg(name: str, epoch: int, version: str, release: str, arch: str) -> dict[str, Any]:
    return {"name": name, "epoch": epoch, "version": version, "release": release, "arch": arch}


def dpkg_status(packages: list[tuple[str, str, str]], arch: str | None = "amd64") -> str:
    """A dpkg status file: (name, version, Status value) per package. Like dpkg's own,
    every stanza ends with a blank line (libguestfs drops a last stanza without one)."""
    stanzas = []
    for name, version, status in packages:
        a = f"Architecture: {arch}\n" if arch else ""
        stanzas.append(f"Package: {name}\nStatus: {status}\n{a}Version: {version}\n\n")
    return "".join(stanzas)


def _deb_packages(root: Path, packages: list[tuple[str, str, str]],
                  arch: str | None = "amd64") -> list[dict[str, Any]]:
    _write(root, "/var/lib/dpkg/status", dpkg_status(packages, arch))
    return [_pkg(n, *_evr(v), arch or "") for n, v, s in packages
            if "installed" in s.split()]


#: rpm 4.16+ sqlite index tables; rpm opening a database read-only (as libguestfs
#: does) fails with "attempt to write a readonly database" when one is missing
RPM_INDEXES = ("Name", "Basenames", "Group", "Requirename", "Providename", "Conflictname",
               "Obsoletename", "Triggername", "Dirnames", "Installtid", "Sigmd5", "Sha1header",
               "Filetriggername", "Transfiletriggername", "Recommendname", "Suggestname",
               "Supplementname", "Enhancename")


def add_rpm_indexes(path: Path) -> None:
    """Give an rpmdb.sqlite written by ``_rpmdb.write_sqlite`` the index tables real
    rpm expects (Name filled in, the rest empty), so librpm reads it read-only."""
    con = sqlite3.connect(path)
    try:
        for table in RPM_INDEXES:
            keytype = "BLOB" if table in ("Installtid", "Sigmd5", "Sha1header") else "TEXT"
            con.execute(f"CREATE TABLE '{table}' (key '{keytype}' NOT NULL, hnum INTEGER NOT "
                        "NULL, idx INTEGER NOT NULL, FOREIGN KEY (hnum) REFERENCES "
                        "'Packages'(hnum))")
            con.execute(f"CREATE INDEX '{table}_key_idx' ON '{table}'(key ASC)")
        rows = con.execute("SELECT hnum, blob FROM Packages").fetchall()
        con.executemany("INSERT INTO Name (key, hnum, idx) VALUES (?, ?, 0)",
                        [((rpmdb.parse_header(blob) or {}).get("name", ""), hnum)
                         for hnum, blob in rows])
        con.commit()
    finally:
        con.close()


def _rpm_sqlite(root: Path, packages: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    (root / "var/lib/rpm").mkdir(parents=True, exist_ok=True)
    db = root / "var/lib/rpm/rpmdb.sqlite"
    rpmdb.write_sqlite(str(db), [(n, v, r, "x86_64") for n, v, r in packages])
    add_rpm_indexes(db)
    return [_pkg(n, 0, v, r, "x86_64") for n, v, r in packages]


def bdb_dump(records: dict[int, bytes]) -> str:
    """``db_load`` input for an rpm ``Packages`` hash database: uint32 (host order,
    little-endian here) header numbers as keys; key 0 holds the next free number."""
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "db_pagesize=4096", "HEADER=END"]
    rows = {0: (max(records) + 1).to_bytes(4, "little"), **records}
    for key, value in rows.items():
        lines += [" " + key.to_bytes(4, "little").hex(), " " + value.hex()]
    return "\n".join([*lines, "DATA=END"]) + "\n"


def write_rpm_bdb(dbdir: Path, packages: list[tuple[str, int | None, str, str, str]]) -> None:
    """A Berkeley DB rpm database (CentOS/RHEL 7): ``Packages`` written by db_load."""
    if shutil.which("db_load") is None:
        raise SetupError("the corpus needs db_load: run `bash pool/bootstrap.sh` (db5.3-util)")
    dbdir.mkdir(parents=True, exist_ok=True)
    records = {i: rpmdb.build_header(n, v, r, a, e)
               for i, (n, e, v, r, a) in enumerate(packages, 1)}
    r = subprocess.run(["db_load", str(dbdir / "Packages")], input=bdb_dump(records),
                       capture_output=True, text=True)
    if r.returncode:
        raise SetupError(f"db_load failed: {r.stderr.strip()[:300]}")


def pacman_desc(name: str, version: str, arch: str = "x86_64") -> str:
    return (f"%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%BASE%\n{name}\n\n"
            f"%DESC%\n{name} package\n\n%ARCH%\n{arch}\n\n%BUILDDATE%\n1700000000\n\n"
            f"%INSTALLDATE%\n1700000001\n\n%SIZE%\n1024\n\n")


def _pacman(root: Path, packages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    local = "/var/lib/pacman/local"
    _write(root, f"{local}/ALPM_DB_VERSION", "9\n")
    for name, version in packages:
        _write(root, f"{local}/{name}-{version}/desc", pacman_desc(name, version))
        _write(root, f"{local}/{name}-{version}/files", f"%FILES%\nusr/share/doc/{name}/\n\n")
    return [_pkg(n, *_evr(v), "x86_64") for n, v in packages]


def _apk(root: Path, packages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    recs = [f"C:Q1corpus=\nP:{n}\nV:{v}\nA:x86_64\nS:1000\nI:2000\nT:{n}\no:{n}\n"
            for n, v in packages]
    _write(root, "/lib/apk/db/installed", "\n".join(recs) + "\n")
    # libguestfs splits an apk version at "-r": 1.36.1-r29 is version 1.36.1, release 29
    split = [(n, *v.rsplit("-r", 1)) for n, v in packages]
    return [_pkg(n, 0, ver, rel, "x86_64") for n, ver, rel in split]
