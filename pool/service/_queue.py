"""The scan queue of `guestpool serve`: accepted requests, persisted before the
caller hears back, so a restart loses none of them."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS scans (
    id TEXT PRIMARY KEY, idempotency_key TEXT UNIQUE, state TEXT NOT NULL,
    request TEXT NOT NULL, created REAL NOT NULL, started REAL, finished REAL,
    progress TEXT, summary TEXT, errors TEXT, seq INTEGER);
CREATE INDEX IF NOT EXISTS scans_state ON scans (state, seq);
"""
#: A scan that was running when the service died this many times is not run again:
#: it may be what kills the service.
MAX_STARTS = 2
STATES = ("queued", "running", "done", "cancelled", "failed")
FINAL = ("done", "cancelled", "failed")
#: Longest budget a scan request may ask for, in seconds.
MAX_BUDGET = 3600.0
#: The most VM names and inspectors one scan request may list (its bytes are
#: bounded too, by ``_app.MAX_BODY``).
MAX_REQUEST_VMS = 10_000
MAX_REQUEST_INSPECTORS = 64


#: seconds a queue write waits on another process's lock of the store file: the
#: queue is written from request handlers, on the event loop
BUSY_WAIT_S = 1.0


class QueueBusy(Exception):
    """Another process holds the store's lock: the request can be sent again."""


class ScanQueue:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=BUSY_WAIT_S,
                                   check_same_thread=False)
        #: for progress, written on the event loop after each result: never waits
        self._at_once = sqlite3.connect(path, isolation_level=None, timeout=0,
                                        check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {r["name"] for r in self._db.execute("PRAGMA table_info(scans)")}
        if "starts" not in columns:  # a queue written by an older guestpool
            self._db.execute("ALTER TABLE scans ADD COLUMN starts INTEGER NOT NULL DEFAULT 0")
        # a scan that was running when the service stopped runs again, unless it
        # was already running at MAX_STARTS deaths of the service
        self._db.execute(
            "UPDATE scans SET state='failed', finished=?, errors=? WHERE state='running'"
            " AND starts >= ?", (time.time(), json.dumps([{
                "kind": "scan", "message": f"the service stopped during this scan {MAX_STARTS} "
                                           "times; not run again"}]), MAX_STARTS))
        self._db.execute("UPDATE scans SET state='queued', started=NULL WHERE state='running'")

    def submit(self, request: dict[str, Any], idempotency_key: str | None
               ) -> tuple[dict[str, Any], bool]:
        """Persist a request; (scan, created). A known key returns its scan unchanged."""
        if idempotency_key:
            row = self._db.execute("SELECT * FROM scans WHERE idempotency_key=?",
                                   (idempotency_key,)).fetchone()
            if row is not None:
                return self._row(row), False
        scan_id = uuid.uuid4().hex
        seq = (self._db.execute("SELECT MAX(seq) FROM scans").fetchone()[0] or 0) + 1
        try:
            self._db.execute(
                "INSERT INTO scans (id, idempotency_key, state, request, created, seq)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (scan_id, idempotency_key, json.dumps(request), time.time(), seq))
        except sqlite3.OperationalError as e:
            raise QueueBusy(str(e)) from e
        except sqlite3.IntegrityError:  # the same key raced in
            row = self._db.execute("SELECT * FROM scans WHERE idempotency_key=?",
                                   (idempotency_key,)).fetchone()
            return self._row(row), False
        return self.get(scan_id) or {}, True

    def get(self, scan_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM scans WHERE id=?", (scan_id,)).fetchone()
        return self._row(row) if row else None

    def recent(self, limit: int = 100) -> list[dict[str, Any]]:
        return [self._row(r) for r in self._db.execute(
            "SELECT * FROM scans ORDER BY seq DESC LIMIT ?", (limit,))]

    def next_queued(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM scans WHERE state='queued' ORDER BY seq LIMIT 1"
                               ).fetchone()
        return self._row(row) if row else None

    def queued_ahead(self, scan_id: str) -> list[dict[str, Any]]:
        scan = self.get(scan_id)
        if scan is None:
            return []
        return [self._row(r) for r in self._db.execute(
            "SELECT * FROM scans WHERE state IN ('queued', 'running') AND seq < ? ORDER BY seq",
            (scan["seq"],))]

    def start(self, scan_id: str) -> None:
        """Mark a scan running, counting its starts (see :data:`MAX_STARTS`)."""
        self._db.execute("UPDATE scans SET state='running', started=?, starts=starts+1"
                         " WHERE id=?", (time.time(), scan_id))

    def update(self, scan_id: str, **fields: Any) -> None:
        cols = ", ".join(f"{k}=?" for k in fields)
        values = [json.dumps(v) if k in ("progress", "summary", "errors") else v
                  for k, v in fields.items()]
        self._db.execute(f"UPDATE scans SET {cols} WHERE id=?", (*values, scan_id))

    def note_progress(self, scan_id: str, progress: dict[str, Any],
                      errors: list[dict[str, Any]]) -> bool:
        """Best effort and at once: False when another process holds the store's
        lock (the progress is in memory too, and the next result writes it again)."""
        try:
            self._at_once.execute("UPDATE scans SET progress=?, errors=? WHERE id=?",
                                  (json.dumps(progress), json.dumps(errors), scan_id))
        except sqlite3.OperationalError:
            return False
        return True

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for k in ("request", "progress", "summary", "errors"):
            out[k] = json.loads(out[k]) if out.get(k) else None
        return out

    def close(self) -> None:
        self._db.close()
        self._at_once.close()


def store_state(path: Path) -> str:
    """"ok", or "locked" while another process holds the store's write lock: one
    look, no wait (a lock the service itself holds lasts milliseconds)."""
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        db.execute("BEGIN IMMEDIATE")
        db.execute("ROLLBACK")
        return "ok"
    except sqlite3.OperationalError:
        return "locked"
    finally:
        db.close()
