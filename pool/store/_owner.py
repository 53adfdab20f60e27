"""Which process owns an open round, and whether it still runs.

A round is closed by the process that runs it; one killed (kill -9, a power
cut) leaves it open. The next process to open a round closes the open rounds
whose owner is gone, and only those: a service running a round on the same
store is alive, and its round stays open.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def _started(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22):
    with the pid, an identity a recycled pid does not repeat."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def this_process() -> str:
    """``host:pid:start`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}:{_started(os.getpid())}"


def gone(owner: str | None) -> bool:
    """Whether the owner of a round no longer runs: a process of this host that
    exited (or a round from before owners were recorded). A process of another
    host is never taken as gone."""
    if not owner:
        return True
    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # another user's live process
    now = _started(int(pid))
    # a recycled pid is another process; what cannot be read is taken as alive
    return now is not None and started not in ("", "None") and now != started
