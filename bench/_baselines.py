"""Saved boot runs: every event of every pass plus host facts, in the results store.

A run lives in its own table (``boot_runs``) of the same SQLite file as scan
results, so a CI job keeps one file. Events are stored raw (zlib-compressed
JSON) and re-analysed on load: a better parser later reads old runs too.
A summary (phase means and sds) is kept beside them for a fast history.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool import GuestpoolError

from .boot import Pass, _map_phases

SCHEMA = """
CREATE TABLE IF NOT EXISTS boot_runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    saved_at REAL NOT NULL,
    config TEXT NOT NULL,
    host TEXT NOT NULL,
    summary TEXT NOT NULL,
    passes BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS boot_runs_name ON boot_runs (name, saved_at);
"""


@dataclass
class SavedRun:
    """One saved ``bench boot`` run; ``passes`` is empty when only headers were read."""

    id: int
    name: str
    saved_at: float
    config: dict[str, Any]
    host: dict[str, Any]
    summary: dict[str, dict[str, float]]
    passes: list[Pass] = field(default_factory=list)


def summary_of(passes: list[Pass]) -> dict[str, dict[str, float]]:
    """Phase name (and TOTAL) -> mean, sd, n: what history plots need."""
    series: dict[str, list[float]] = {}
    for p in passes:
        for name, (_start, dur) in p.phases.items():
            series.setdefault(name, []).append(dur)
        series.setdefault("TOTAL", []).append(p.total)
    return {name: {"mean": statistics.fmean(v),
                   "sd": statistics.stdev(v) if len(v) > 1 else 0.0, "n": len(v)}
            for name, v in series.items()}


class BootRuns:
    """Save, find and list boot runs in the results store's SQLite file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(SCHEMA)
        except (OSError, sqlite3.Error) as e:
            raise GuestpoolError(f"cannot open results store {path}: {e}") from None

    def close(self) -> None:
        self._db.close()

    def save(self, name: str, config: dict[str, Any], host: dict[str, Any],
             passes: list[Pass], saved_at: float | None = None) -> int:
        if not name or not name.strip():
            raise GuestpoolError("--save needs a name, e.g. --save base")
        blob = zlib.compress(json.dumps([{"variant": p.variant, "events": p.events}
                                         for p in passes]).encode(), 6)
        with self._db:
            cur = self._db.execute(
                "INSERT INTO boot_runs (name, saved_at, config, host, summary, passes)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, time.time() if saved_at is None else saved_at, json.dumps(config),
                 json.dumps(host), json.dumps(summary_of(passes)), blob))
        return int(cur.lastrowid or 0)

    def latest(self, name: str) -> SavedRun:
        """The newest run saved under ``name``, with its passes re-analysed."""
        row = self._db.execute(
            "SELECT id, name, saved_at, config, host, summary, passes FROM boot_runs"
            " WHERE name = ? ORDER BY saved_at DESC, id DESC LIMIT 1", (name,)).fetchone()
        if row is None:
            known = ", ".join(sorted({r.name for r in self.history()})) or "none yet"
            raise GuestpoolError(f"no saved boot run named {name!r} in {self.path} "
                                 f"(saved: {known}); save one with --save {name}")
        run = _header(row)
        for item in json.loads(zlib.decompress(row[6])):
            p = Pass(item["variant"], events=[tuple(e) for e in item["events"]])
            _map_phases(p)
            run.passes.append(p)
        return run

    def history(self, name: str | None = None) -> list[SavedRun]:
        """Headers and summaries of saved runs, oldest first (no events)."""
        sql = "SELECT id, name, saved_at, config, host, summary FROM boot_runs"
        rows = (self._db.execute(sql + " WHERE name = ? ORDER BY saved_at, id", (name,))
                if name else self._db.execute(sql + " ORDER BY saved_at, id"))
        return [_header(r) for r in rows]


def _header(row: tuple[Any, ...]) -> SavedRun:
    return SavedRun(int(row[0]), row[1], float(row[2]), json.loads(row[3]),
                    json.loads(row[4]), json.loads(row[5]))
