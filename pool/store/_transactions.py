"""Write transactions whose failure says what really happened.

A failed COMMIT used to be hidden by the ROLLBACK after it ("cannot rollback -
no transaction is active", SQLite had already rolled back) and reached the
user as a traceback. Here a write is one transaction; an SQLite error becomes
a :class:`StoreError` naming the store and the cause (locked by another
process, disk full, not a database), and says whether waiting may help.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from guestpool._errors import GuestpoolError


class StoreError(GuestpoolError):
    """The results store refused a write or a read. ``busy``: another process holds
    its lock, and the same write may succeed later."""

    def __init__(self, message: str, busy: bool = False) -> None:
        super().__init__(message)
        self.busy = busy


def store_error(path: Path, e: sqlite3.Error) -> StoreError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return StoreError(f"results store {path} is locked by another process", busy=True)
    if "full" in text:
        return StoreError(f"results store {path}: the disk is full (free space, and the "
                          "results kept meanwhile are written at the next start)")
    return StoreError(f"results store {path}: {text}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any error if SQLite has not
    already; SQLite's errors raised as :class:`StoreError`."""
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException as e:
        if db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
        if isinstance(e, sqlite3.Error):
            raise store_error(path, e) from e
        raise


@contextlib.contextmanager
def reporting(path: Path) -> Iterator[None]:
    """SQLite's errors of a single statement raised as :class:`StoreError`."""
    try:
        yield
    except sqlite3.Error as e:
        raise store_error(path, e) from e
