"""Disk fingerprints: has anything written a VM's disk files since its last good
inspection?

A fingerprint lists every file a VM's disks need (each disk, its backing
files, qcow2 data files: what :func:`guestpool.fleet._safety.check_vm` visited) with
its identity (st_dev, st_ino), size, mtime_ns and ctime_ns, taken before the
file is read, and for a qcow2 file a digest of its first cluster and L1 table.
A write through the file's filesystem changes mtime and ctime, and ctime cannot
be set back from userspace. The qcow2 digest is a second, content-based line for
the image's own metadata (header, header extensions, backing file name, data
file name, snapshot table offset, L1 table: new L2 tables, snapshot reverts,
rebases, resizes): it catches those even if the timestamps were restored. The
host reads nothing else of the file and never a guest byte (a raw file, a data
file and a qcow2's data clusters are not read at all).

Each file is opened (``O_NOFOLLOW | O_NONBLOCK``, never blocking on a FIFO) and
fstat'ed rather than stat'ed: on NFS, an open revalidates the attributes
(close-to-open consistency) instead of trusting the attribute cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterable
from typing import Any

from guestpool.fleet._model import VM
from guestpool.fleet._safety import ChainFile, qcow2_layout

#: One file of a fingerprint, as stored (JSON).
FileState = dict[str, Any]
Fingerprint = list[FileState]
#: The fields compared, in the order a change is reported.
COMPARED = ("dev", "ino", "size", "mtime_ns", "ctime_ns", "header")
QCOW2_MAGIC = b"QFI\xfb"
#: The most of a qcow2 L1 table digested (256 KiB covers 16 TiB at 64 KiB clusters).
L1_CAP = 4 * 1024 * 1024


def _open(path: str) -> int:
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)


def qcow2_digest(fd: int, size: int) -> str:
    """SHA-256 of a qcow2 file's first cluster (header, extensions, backing file
    name) and its L1 table (capped at ``L1_CAP``); "not-qcow2" when it is not one."""
    head = os.pread(fd, 72, 0)
    if len(head) < 72 or not head.startswith(QCOW2_MAGIC):
        return "not-qcow2"
    cluster_bits, l1_size, l1_offset = qcow2_layout(head)
    if not 9 <= cluster_bits <= 21:
        return "invalid-cluster-size"
    digest = hashlib.sha256(os.pread(fd, min(1 << cluster_bits, size), 0))
    digest.update(os.pread(fd, min(8 * l1_size, L1_CAP), l1_offset))
    return digest.hexdigest()


def file_state(path: str, fmt: str, role: str, seen: os.stat_result | None = None
               ) -> FileState:
    """One file's state now; with ``seen`` (its stat taken before it was checked),
    that earlier stat is recorded: anything written since then shows as a change.
    Raises OSError (a missing file, a symlink put in its place...). A file that
    is not a regular file is not opened (a device node could act on an open)."""
    if not stat.S_ISREG(os.lstat(path).st_mode):
        return {"path": path, "format": fmt, "role": role, "regular": False}
    fd = _open(path)
    try:
        st = os.fstat(fd)
        header = qcow2_digest(fd, st.st_size) if fmt == "qcow2" else None
    finally:
        os.close(fd)
    st = seen or st
    return {"path": path, "format": fmt, "role": role, "dev": st.st_dev, "ino": st.st_ino,
            "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
            "header": header, "regular": stat.S_ISREG(st.st_mode)}


def take_fingerprint(files: Iterable[ChainFile]) -> Fingerprint | None:
    """The fingerprint of the files a safety check visited (their stats from before
    the check read them); None when one went away meanwhile (the VM is then
    inspected again next time)."""
    try:
        return [file_state(f.path, f.format, f.role, f.stat) for f in files]
    except OSError:
        return None


def digest(files: Fingerprint) -> str:
    """One line for a fingerprint: what :func:`difference` compares of each file
    (its path, format and role, then ``COMPARED``), hashed. Equal digests mean
    :func:`difference` would find nothing; an agent on another host sends the
    digest of its VMs' files as they are now, and the coordinator compares it
    with the recorded fingerprint's."""
    rows = [[f.get("path"), f.get("format"), f.get("role"), f.get("regular", True),
             *(f.get(k) for k in COMPARED)] for f in files]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def current_digest(recorded: Fingerprint) -> str | None:
    """The digest of the files ``recorded`` names, as they are now (None: one
    cannot be opened, so the VM must be inspected again)."""
    try:
        return digest([file_state(f["path"], f["format"], f["role"]) for f in recorded])
    except OSError:
        return None


def difference(vm: VM, recorded: Fingerprint) -> str | None:
    """Why ``vm``'s disk files differ from ``recorded``, in words; None when every
    file is the same file with the same size, times and qcow2 header."""
    disks = [(f["path"], f["format"]) for f in recorded if f["role"] == "disk"]
    if disks != [(os.path.realpath(d.path), d.format) for d in vm.disks]:
        return "its disks are other files than at the last inspection"
    for was in recorded:
        try:
            now = file_state(was["path"], was["format"], was["role"])
        except OSError as e:
            return f"{was['role']} {was['path']} cannot be opened: {e.strerror}"
        if not now["regular"]:
            return f"{was['role']} {was['path']} is no longer a regular file"
        for key in COMPARED:
            if now[key] != was.get(key):
                return f"{was['role']} {was['path']}: {key} changed"
    return None
