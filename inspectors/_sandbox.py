"""Native parsers for guest bytes, run where a hostile file can do no harm.

SQLite is a large C parser, and a guest's rpm database is bytes the guest
chose: a 4 KiB file whose ``Packages`` is a view over a recursive query loops
or eats memory. So the database is parsed in a short-lived child process that
runs as ``nobody`` (when the worker is root), with limits on memory, CPU time
and files, a wall-clock deadline, no environment and no file of ours open: the
bytes arrive on its stdin and are opened in memory, read-only, with
``trusted_schema=OFF``; ``Packages`` must be a plain table, and a progress
handler stops any query that runs too long. Only the rows' blobs come back,
length-prefixed; they are parsed in Python with every offset checked
(:mod:`._rpmdb`).
"""

from __future__ import annotations

import os
import resource
import struct
import subprocess
import sys

from guestpool._errors import InspectorError

#: Steps of SQLite's virtual machine (in thousands) a query may take.
PROGRESS_BUDGET = 200_000
CPU_SECONDS = 10
NOBODY = 65534

_CHILD = r"""
import sqlite3, struct, sys
limit, budget, max_blob = (int(a) for a in sys.argv[1:4])
data = sys.stdin.buffer.read()
con = sqlite3.connect(":memory:")
con.deserialize(data)
con.execute("PRAGMA trusted_schema=OFF")
con.execute("PRAGMA query_only=ON")
steps = [0]
def progress():
    steps[0] += 1
    return steps[0] > budget
con.set_progress_handler(progress, 1000)
kind = con.execute("SELECT type FROM sqlite_master WHERE name='Packages'").fetchone()
if kind is None or kind[0] != "table":
    sys.stderr.write("Packages is not a table\n"); sys.exit(3)
out = sys.stdout.buffer
for (blob,) in con.execute("SELECT blob FROM Packages WHERE typeof(blob)='blob' "
                           "AND length(blob) <= ? LIMIT ?", (max_blob, limit)):
    out.write(struct.pack(">I", len(blob)) + blob)
"""


def _limits(memory: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (CPU_SECONDS, CPU_SECONDS))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def sqlite_blobs(database: bytes, *, limit: int, deadline: float,
                 max_blob: int = 1024 * 1024) -> list[bytes]:
    """The ``blob`` column of the ``Packages`` table of an SQLite database given as
    bytes, read in a sandboxed child; :class:`InspectorError` if it cannot be read
    within the limits."""
    memory = 3 * len(database) + 256 * 1024 * 1024
    root = os.geteuid() == 0
    try:
        proc = subprocess.run(
            [sys.executable, "-I", "-S", "-c", _CHILD, str(limit), str(PROGRESS_BUDGET),
             str(max_blob)],
            input=database, capture_output=True, env={}, cwd="/", timeout=max(1.0, deadline),
            preexec_fn=lambda: _limits(memory), close_fds=True,
            user=NOBODY if root else None, group=NOBODY if root else None,
            extra_groups=[] if root else None)
    except subprocess.TimeoutExpired:
        raise InspectorError(f"the rpm database took over {deadline:.0f} s to read; "
                             "refusing it (hostile or broken)") from None
    if proc.returncode != 0:
        why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [
            f"killed by signal {-proc.returncode}" if proc.returncode < 0
            else f"exit {proc.returncode}"]
        raise InspectorError(f"the rpm database cannot be read safely: {why[0][:200]}")
    return _frames(proc.stdout)


def _frames(data: bytes) -> list[bytes]:
    out, at = [], 0
    while at + 4 <= len(data):
        (n,) = struct.unpack_from(">I", data, at)
        out.append(data[at + 4:at + 4 + n])
        at += 4 + n
    return out
