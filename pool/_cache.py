"""Build a cached thing once, however many guestpool processes want it at once.

Two `fleet demo` runs, or a test run beside a demo, share the cache folder: a
builder that deleted and rebuilt a folder in place corrupted the other's.
Here a builder takes an exclusive file lock, looks again (another process may
have finished meanwhile), builds into a private temporary sibling and
publishes it with one rename: readers see nothing or the whole thing.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: the marker a published folder carries (a folder without it is a leftover)
DONE = ".done"


@contextmanager
def build_lock(target: Path) -> Iterator[None]:
    """Hold ``target``'s build lock (a ``.lock`` file beside it) until the block ends."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def folder_once(target: Path, build: Callable[[Path], None]) -> bool:
    """Make sure folder ``target`` is built: ``build(tmp)`` fills a new folder that
    then becomes ``target``. Returns whether this call built it."""
    if (target / DONE).exists():
        return False
    with build_lock(target):
        if (target / DONE).exists():
            return False
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            build(tmp)
            (tmp / DONE).write_text("")
            if target.exists():  # a leftover of a build killed before this design
                shutil.rmtree(target)
            tmp.rename(target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return True


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename, through a file of this process's
    own (two writers never share a temporary name)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
