"""The results store: SQLite in WAL mode, one transaction per result.

A result reported as done is committed before the next job starts, so a scan
killed at any moment loses nothing it reported.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sqlite3
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from guestpool._errors import GuestpoolError
from guestpool._paths import data_dir
from guestpool.fleet._model import VM

from ._drift import Change, diff_results
from ._owner import gone, this_process
from ._transactions import StoreError, reporting, store_error, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS rounds (
    id INTEGER PRIMARY KEY, started REAL NOT NULL, ended REAL, budget REAL,
    strategy TEXT, pool_size INTEGER, predicted INTEGER, summary TEXT);
CREATE TABLE IF NOT EXISTS vms (
    name TEXT PRIMARY KEY, first_seen REAL, last_seen REAL, disks TEXT, trust_group TEXT,
    tags TEXT, priority INTEGER, last_scanned REAL, removed REAL);
CREATE TABLE IF NOT EXISTS results (
    id INTEGER PRIMARY KEY, round_id INTEGER, vm TEXT NOT NULL, at REAL NOT NULL,
    ok INTEGER NOT NULL, error TEXT, appliance INTEGER, strategy TEXT, attempts INTEGER,
    timings TEXT);
CREATE TABLE IF NOT EXISTS inspector_results (
    result_id INTEGER NOT NULL, inspector TEXT NOT NULL, version TEXT, ok INTEGER,
    value TEXT, error TEXT, seconds REAL);
CREATE TABLE IF NOT EXISTS changes (
    id INTEGER PRIMARY KEY, vm TEXT NOT NULL, round_id INTEGER, at REAL NOT NULL,
    inspector TEXT, kind TEXT, key TEXT, before TEXT, after TEXT);
CREATE INDEX IF NOT EXISTS results_vm ON results (vm, at);
CREATE INDEX IF NOT EXISTS changes_vm ON changes (vm, at);
CREATE TABLE IF NOT EXISTS costs (name TEXT PRIMARY KEY, value REAL, samples INTEGER);
CREATE TABLE IF NOT EXISTS vuln_matches (
    round_id INTEGER, vm TEXT NOT NULL, at REAL NOT NULL, ecosystem TEXT, packages INTEGER,
    findings INTEGER, skipped TEXT);
CREATE TABLE IF NOT EXISTS findings (
    round_id INTEGER, vm TEXT NOT NULL, at REAL NOT NULL, advisory TEXT NOT NULL,
    package TEXT NOT NULL, severity TEXT, installed TEXT, fixed TEXT, finding TEXT);
CREATE INDEX IF NOT EXISTS vuln_matches_vm ON vuln_matches (vm, at);
CREATE INDEX IF NOT EXISTS findings_vm ON findings (vm, at);
CREATE INDEX IF NOT EXISTS findings_round ON findings (round_id);
CREATE INDEX IF NOT EXISTS inspector_results_id ON inspector_results (result_id, inspector);
CREATE INDEX IF NOT EXISTS results_round ON results (round_id, ok);
CREATE INDEX IF NOT EXISTS results_at ON results (at, ok, vm);
CREATE INDEX IF NOT EXISTS changes_round ON changes (round_id, vm);
"""


# Change-aware rounds (``_unchanged``): each result row says how it came to be, and
# a VM's disk fingerprint is kept from its last good inspection.
#   results.state: "inspected", "failed" or "unchanged" (verified unchanged:
#     its inspector entries are those of result ``carried_from``, inspected at
#     ``inspected_at``; ``at`` is when it was verified). Rows written before
#     these columns existed have NULL: read as inspected (ok) or failed.
#   results.kind: the VM's kind for the capacity plan (``_plan.vm_kind``).
#   vms.state, state_at, inspected_at, kind: the same of the VM's latest result,
#     kept on its one row so a listing of every VM reads one row each (NULL
#     state: no result since these columns exist).
ADDED_COLUMNS = {"results": (("state", "TEXT"), ("inspected_at", "REAL"),
                             ("carried_from", "INTEGER"), ("kind", "TEXT"),
                             ("first_error", "TEXT")),
                 "vms": (("state", "TEXT"), ("state_at", "REAL"), ("inspected_at", "REAL"),
                         ("kind", "TEXT")),
                 "rounds": (("uid", "TEXT"), ("owner", "TEXT"))}
FINGERPRINT_SCHEMA = """
CREATE TABLE IF NOT EXISTS fingerprints (
    vm TEXT PRIMARY KEY, result_id INTEGER NOT NULL, context TEXT NOT NULL, files TEXT NOT NULL);
"""

log = logging.getLogger(__name__)
_SCHEMA_NAMES = re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)",
                           SCHEMA + FINGERPRINT_SCHEMA)


def default_path(create: bool = True) -> Path:
    return data_dir(create) / "guestpool.db"


def to_json(value: Any) -> str:
    return json.dumps(value, default=lambda b: b.hex() if isinstance(b, bytes) else str(b))


class Store:
    """Rounds, VMs, results (per inspector, with versions), drift and measured costs."""

    def __init__(self, path: str | Path | None = None, busy_timeout: float = 30.0) -> None:
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None,
                                       timeout=busy_timeout, check_same_thread=False)
        except (OSError, sqlite3.Error) as e:
            raise GuestpoolError(f"cannot open results store {self.path}: {e}") from e
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._create_schema()
            self._add_columns()
        except sqlite3.Error as e:
            self._db.close()
            raise StoreError(f"cannot open results store {self.path}: {e}",
                             busy=store_error(self.path, e).busy) from e
        self._db.row_factory = sqlite3.Row

    @classmethod
    def existing(cls, path: str | Path | None = None) -> Store:
        """The store at ``path`` (default: the data folder's) for a reader: one that
        is not there is an error, never created (nor its folder)."""
        where = Path(path) if path else default_path(create=False)
        if not where.is_file():
            raise GuestpoolError(f"no results store at {where}: run `guestpool scan` first, "
                                 "or name one with --store")
        return cls(where)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def brief_waits(self, seconds: float = 1.0) -> Iterator[None]:
        """Wait at most ``seconds`` on another process's lock inside the block (a
        round's end must not wait out the usual 30 s)."""
        before = int(self._db.execute("PRAGMA busy_timeout").fetchone()[0])
        self._db.execute(f"PRAGMA busy_timeout={int(seconds * 1000)}")
        try:
            yield
        finally:
            self._db.execute(f"PRAGMA busy_timeout={before}")

    @property
    def db(self) -> sqlite3.Connection:
        """The connection, for read models kept beside these tables (``_fleetview``)."""
        return self._db

    def _create_schema(self) -> None:
        """In one transaction, so a reader of a store being created sees every table
        or none; skipped (no write lock) when every table is there."""
        have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
        if set(_SCHEMA_NAMES) <= have:
            return
        self._db.executescript(f"BEGIN IMMEDIATE;\n{SCHEMA}{FINGERPRINT_SCHEMA}\nCOMMIT;\n")

    def _add_columns(self) -> None:
        """Columns added after a store may have been created (``ADDED_COLUMNS``)."""
        for table, columns in ADDED_COLUMNS.items():
            have = {r[1] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name in have:
                    continue
                try:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
                except sqlite3.OperationalError as e:
                    if "duplicate column" not in str(e):  # another process added it first
                        raise

    # -- writing -----------------------------------------------------------------

    def sync_fleet(self, vms: Iterable[VM], complete: bool = True) -> dict[str, list[str]]:
        """Record the fleet; report VMs that appeared, disappeared or changed disks.
        With ``complete=False`` (a subset of the fleet) no VM is taken as gone."""
        now = time.time()
        seen: dict[str, list[str]] = {"appeared": [], "disappeared": [], "changed": []}
        with reporting(self.path):
            known = {r["name"]: r for r in self._db.execute("SELECT * FROM vms")}
        names: set[str] = set()
        with transaction(self._db, self.path):
            self._sync(vms, known, names, seen, complete, now)
        return seen

    def _sync(self, vms: Iterable[VM], known: dict[str, sqlite3.Row], names: set[str],
              seen: dict[str, list[str]], complete: bool, now: float) -> None:
        for vm in vms:
            names.add(vm.name)
            disks = to_json([[d.path, d.format] for d in vm.disks])
            row = known.get(vm.name)
            if row is None or row["removed"]:
                seen["appeared"].append(vm.name)
            elif row["disks"] != disks:
                seen["changed"].append(vm.name)
            self._db.execute(
                "INSERT INTO vms (name, first_seen, last_seen, disks, trust_group, tags, priority)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_seen=?,"
                " disks=?, trust_group=?, tags=?, priority=?, removed=NULL",
                (vm.name, now, now, disks, vm.trust_group, to_json(vm.tags), vm.priority,
                 now, disks, vm.trust_group, to_json(vm.tags), vm.priority))
        for name, row in known.items():
            if complete and name not in names and not row["removed"]:
                seen["disappeared"].append(name)
                self._db.execute("UPDATE vms SET removed=? WHERE name=?", (now, name))

    def start_round(self, budget: float, strategy: str, pool_size: int,
                    predicted: int | None) -> int:
        """A new round's number. Beside it the round gets a ``uid`` unique across
        stores (:meth:`round_uid`): two coordinators, or one given a new store,
        both number their first round 1."""
        with reporting(self.path):
            cur = self._db.execute(
                "INSERT INTO rounds (started, budget, strategy, pool_size, predicted, uid,"
                " owner) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), budget, strategy, pool_size, predicted, uuid.uuid4().hex,
                 this_process()))
        return int(cur.lastrowid or 0)

    def round_uid(self, round_id: int) -> str:
        row = self._db.execute("SELECT uid FROM rounds WHERE id=?", (round_id,)).fetchone()
        return str(row[0]) if row and row[0] else ""

    def end_round(self, round_id: int, summary: dict[str, Any]) -> None:
        with reporting(self.path):
            self._db.execute("UPDATE rounds SET ended=?, summary=? WHERE id=?",
                             (time.time(), to_json(summary), round_id))

    def close_interrupted(self, round_id: int | None = None) -> list[dict[str, Any]]:
        """Close rounds left open by a process that is gone (or ``round_id``, whose
        own process is being stopped): state ``interrupted``, a summary counted
        from the results they stored, ended at their last result. Returns those
        summaries."""
        with transaction(self._db, self.path):
            return self._close_interrupted(round_id)

    def _close_interrupted(self, round_id: int | None) -> list[dict[str, Any]]:
        if round_id is None:
            rows = [r for r in self._db.execute(
                "SELECT id, started, budget, owner FROM rounds WHERE ended IS NULL")
                if gone(r["owner"])]
        else:
            rows = list(self._db.execute("SELECT id, started, budget, owner FROM rounds"
                                         " WHERE id=? AND ended IS NULL", (round_id,)))
        closed = []
        for r in rows:
            n = self._db.execute(
                "SELECT COUNT(*) AS results, SUM(ok) AS covered, SUM(state='unchanged') AS"
                " unchanged, MAX(at) AS last FROM results WHERE round_id=?", (r["id"],)).fetchone()
            ended = max(r["started"], n["last"] or r["started"])
            covered = int(n["covered"] or 0)
            summary = {"round": r["id"], "state": "interrupted", "budget_s": r["budget"],
                       "elapsed_s": round(ended - r["started"], 2), "covered": covered,
                       "inspected": covered - int(n["unchanged"] or 0),
                       "unchanged": int(n["unchanged"] or 0),
                       "failed": int(n["results"]) - covered, "not_reached": None}
            self._db.execute("UPDATE rounds SET ended=?, summary=? WHERE id=? AND ended IS NULL",
                             (ended, to_json(summary), r["id"]))
            closed.append(summary)
        return closed

    def record(self, round_id: int | None, result: Any, context: str | None = None,
               kind: str | None = None, once: bool = False,
               at: float | None = None) -> list[Change]:
        """Store one VM's result and its drift against the previous good result.

        With ``context`` (``_unchanged.context``: the inspectors and the safety
        policy), a good result whose inspectors all succeeded keeps its disk
        fingerprint, against which later rounds verify the VM unchanged; any
        other result drops the VM's fingerprint (it is inspected next time).
        ``once``: store nothing if round ``round_id`` has a result of the VM
        already (rounds write theirs so: a copy delivered again is stored once).
        ``at``: when it came, if not now (a writer that waited, a journal replay)."""
        now = time.time() if at is None else at
        previous = self.latest(result.vm) if result.ok else None
        changes = diff_results(previous["results"], result.results) if previous else []
        db = self._db
        with transaction(db, self.path):
            if once and round_id is not None and db.execute(
                    "SELECT 1 FROM results WHERE vm=? AND round_id=? LIMIT 1",
                    (result.vm, round_id)).fetchone():
                return []  # a round's copy delivered again (redelivery, journal replay)
            cur = db.execute(
                "INSERT INTO results (round_id, vm, at, ok, error, appliance, strategy, attempts,"
                " timings, state, inspected_at, kind, first_error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (round_id, result.vm, now, int(result.ok), to_json(result.error), result.appliance,
                 result.strategy, result.attempts, to_json(result.timings),
                 "inspected" if result.ok else "failed", now if result.ok else None, kind,
                 to_json(getattr(result, "first_error", None))))
            rid = cur.lastrowid
            fingerprint = getattr(result, "fingerprint", None)
            if (context is not None and result.ok and fingerprint
                    and all(e.get("ok") for e in result.results.values())):
                db.execute("INSERT OR REPLACE INTO fingerprints VALUES (?, ?, ?, ?)",
                           (result.vm, rid, context, to_json(fingerprint)))
            else:
                db.execute("DELETE FROM fingerprints WHERE vm=?", (result.vm,))
            for name, e in result.results.items():
                db.execute(
                    "INSERT INTO inspector_results VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (rid, name, e.get("version"), int(bool(e.get("ok"))), to_json(e.get("value")),
                     to_json(e.get("error")), e.get("seconds")))
            for c in changes:
                db.execute(
                    "INSERT INTO changes (vm, round_id, at, inspector, kind, key, before, after)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (result.vm, round_id, now, c["inspector"], c["kind"], c["key"],
                     to_json(c["before"]), to_json(c["after"])))
            db.execute("INSERT INTO vms (name, first_seen, last_seen, last_scanned) VALUES"
                       " (?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET last_scanned=?",
                       (result.vm, now, now, now, now))
            db.execute("UPDATE vms SET state=?, state_at=?, inspected_at=CASE WHEN ? THEN ?"
                       " ELSE inspected_at END, kind=COALESCE(?, kind) WHERE name=?",
                       ("inspected" if result.ok else "failed", now, result.ok, now,
                        kind if result.ok else None, result.vm))
        return changes

    def round_open(self, round_id: int, uid: str) -> bool:
        """Whether this store started round ``round_id`` as ``uid`` and its owner did
        not end it: still running, or closed as ``interrupted`` by another process
        (a killed coordinator's round: its hosts' results may still come, and
        are stored under it)."""
        return self._db.execute(
            "SELECT 1 FROM rounds WHERE id=? AND uid=? AND (ended IS NULL OR"
            " json_extract(summary, '$.state') = 'interrupted')",
            (round_id, uid)).fetchone() is not None

    def has_result(self, round_id: int, vm: str) -> bool:
        """Whether round ``round_id`` already stored a result of ``vm``: a result
        delivered twice (at-least-once messaging) is then stored once."""
        return self._db.execute("SELECT 1 FROM results WHERE vm=? AND round_id=? LIMIT 1",
                                (vm, round_id)).fetchone() is not None

    def record_unchanged(self, round_id: int | None, carried: Iterable[tuple[int, Any]]
                         ) -> None:
        """Store VMs verified unchanged, as (id of the result carried forward,
        ``InspectResult`` with ``inspected_at``), all in one transaction: a row each
        pointing at the result it carries. ``last_scanned`` (the staleness order)
        stays the time of the real inspection."""
        now, db = time.time(), self._db
        with transaction(db, self.path):
            for carried_from, r in carried:
                db.execute(
                    "INSERT INTO results (round_id, vm, at, ok, error, appliance, strategy,"
                    " attempts, timings, state, inspected_at, carried_from, kind)"
                    " SELECT ?, vm, ?, 1, 'null', NULL, strategy, 0, ?, 'unchanged', ?, ?, kind"
                    " FROM results WHERE id=?",
                    (round_id, now, to_json(r.timings), r.inspected_at, carried_from,
                     carried_from))
                db.execute("UPDATE vms SET state='unchanged', state_at=?, inspected_at=?"
                           " WHERE name=?", (now, r.inspected_at, r.vm))

    def record_findings(self, round_id: int | None, reports: Iterable[Mapping[str, Any]],
                        changes: Mapping[str, list[Change]] | None = None) -> None:
        """Store one round's vulnerability matches (``_vulns.VmFindings``) and the
        findings' drift per VM, in one transaction. A skipped VM is kept with its
        reason and is never the baseline of the next round's drift."""
        now, db = time.time(), self._db
        with transaction(db, self.path):
            for r in reports:
                db.execute("INSERT INTO vuln_matches VALUES (?, ?, ?, ?, ?, ?, ?)",
                           (round_id, r["vm"], now, r.get("ecosystem"), r.get("packages"),
                            len(r["findings"]), r.get("skipped")))
                db.executemany("INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                    (round_id, r["vm"], now, f["id"], f["package"], f["severity"],
                     f["installed"], f["fixed"], to_json(f)) for f in r["findings"]])
            for vm, vm_changes in (changes or {}).items():
                db.executemany(
                    "INSERT INTO changes (vm, round_id, at, inspector, kind, key, before, after)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(vm, round_id, now, c["inspector"], c["kind"], c["key"],
                      to_json(c["before"]), to_json(c["after"])) for c in vm_changes])

    def update_cost(self, name: str, value: float, weight: int = 1) -> None:
        """Keep a running mean of a measured cost (boot, per-VM job) between runs."""
        with transaction(self._db, self.path):
            row = self._db.execute("SELECT value, samples FROM costs WHERE name=?",
                                   (name,)).fetchone()
            if row is None:
                self._db.execute("INSERT INTO costs VALUES (?, ?, ?)", (name, value, weight))
            else:
                n = min(row["samples"], 50) + weight  # recent runs dominate
                mean = (row["value"] * (n - weight) + value * weight) / n
                self._db.execute("UPDATE costs SET value=?, samples=? WHERE name=?",
                                 (mean, n, name))

    # -- reading -------------------------------------------------------------------

    def fingerprints(self) -> dict[str, dict[str, Any]]:
        """Each VM's fingerprint from its last good inspection, with that result's
        id and time: ``{vm: {"result_id", "inspected_at", "context", "files"}}``
        (what ``_unchanged`` verifies a round's VMs against)."""
        return {r["vm"]: {"result_id": r["result_id"], "inspected_at": r["at"],
                          "context": r["context"], "files": json.loads(r["files"])}
                for r in self._db.execute(
                    "SELECT f.vm, f.result_id, f.context, f.files, r.at"
                    " FROM fingerprints f JOIN results r ON r.id = f.result_id")}

    def entries(self, result_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The inspector entries of several results at once, by result id."""
        out: dict[int, dict[str, Any]] = {}
        ids = list(result_ids)
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            for r in self._db.execute(
                    "SELECT * FROM inspector_results WHERE result_id IN"
                    f" ({','.join('?' * len(chunk))})", chunk):
                out.setdefault(r["result_id"], {})[r["inspector"]] = self._entry(r)
        return out

    def kinds(self) -> dict[str, str]:
        """Each VM's kind (``_plan.vm_kind``) from its latest good result."""
        return {r["name"]: r["kind"] for r in self._db.execute(
            "SELECT name, kind FROM vms WHERE kind IS NOT NULL")}

    def vm_states(self) -> dict[str, dict[str, Any]]:
        """Every VM of the fleet with its latest result's state: ``{vm: {"state", "at",
        "inspected_at", "kind"}}``, state ``inspected``, ``unchanged`` (verified at
        ``at``, its results from ``inspected_at``), ``failed`` (``inspected_at``: its
        last good inspection) or ``never`` (no result)."""
        out = {}
        for r in self._db.execute("SELECT name, state, state_at, inspected_at, kind, last_scanned"
                                  " FROM vms WHERE removed IS NULL"):
            if r["state"] is None and r["last_scanned"] is not None:  # a store from before
                out[r["name"]] = self._state_from_results(r["name"])
            else:
                out[r["name"]] = {"state": r["state"] or "never", "at": r["state_at"],
                                  "inspected_at": r["inspected_at"], "kind": r["kind"]}
        return out

    def _state_from_results(self, vm: str) -> dict[str, Any]:
        last = self._db.execute("SELECT * FROM results WHERE vm=? ORDER BY id DESC LIMIT 1",
                                (vm,)).fetchone()
        good = self.latest(vm)
        return {"state": row_state(last), "at": last["at"],
                "inspected_at": good["inspected_at"] if good else None, "kind": last["kind"]}

    def costs(self) -> dict[str, float]:
        return {r["name"]: r["value"] for r in self._db.execute("SELECT * FROM costs")}

    def last_scanned(self) -> dict[str, float | None]:
        return {r["name"]: r["last_scanned"] for r in self._db.execute(
            "SELECT name, last_scanned FROM vms")}

    def latest(self, vm: str) -> dict[str, Any] | None:
        """The VM's latest result: its latest good row (inspected, or unchanged
        with the entries it carries), every inspector's entry; None if never good."""
        row = self._db.execute("SELECT * FROM results WHERE vm=? AND ok=1 ORDER BY id DESC"
                               " LIMIT 1", (vm,)).fetchone()
        if row is None:
            return None
        return self._result(row)

    @staticmethod
    def _entry(r: sqlite3.Row) -> dict[str, Any]:
        return {"inspector": r["inspector"], "version": r["version"], "ok": bool(r["ok"]),
                "value": json.loads(r["value"]), "error": json.loads(r["error"]),
                "seconds": r["seconds"]}

    def _result(self, row: sqlite3.Row) -> dict[str, Any]:
        """One result row; a VM verified unchanged shows the entries it carries
        forward, ``inspected_at`` (when they were inspected) and ``at`` (verified)."""
        entries = {r["inspector"]: self._entry(r) for r in self._db.execute(
            "SELECT * FROM inspector_results WHERE result_id=?", (facts_id(row),))}
        return {"vm": row["vm"], "at": row["at"], "round": row["round_id"], "ok": bool(row["ok"]),
                "state": row_state(row), "inspected_at": inspected_at(row),
                "error": json.loads(row["error"]), "attempts": row["attempts"],
                "first_error": json.loads(row["first_error"] or "null"),
                "appliance": row["appliance"],
                "strategy": row["strategy"], "timings": json.loads(row["timings"]),
                "results": entries}

    def results(self, vm: str | None = None, round_id: int | None = None
                ) -> Iterator[dict[str, Any]]:
        sql, args = "SELECT * FROM results WHERE 1=1", list[Any]()
        if vm:
            sql, args = sql + " AND vm=?", [*args, vm]
        if round_id is not None:
            sql, args = sql + " AND round_id=?", [*args, round_id]
        for row in self._db.execute(sql + " ORDER BY id", args).fetchall():
            yield self._result(row)

    def last_round(self) -> dict[str, Any] | None:
        rounds = self.recent_rounds(1)
        return rounds[0] if rounds else None

    def recent_rounds(self, limit: int = 10) -> list[dict[str, Any]]:
        """The latest rounds, newest first, with their summaries (None while running)."""
        out = []
        for row in self._db.execute("SELECT * FROM rounds ORDER BY id DESC LIMIT ?", (limit,)):
            r = dict(row)
            r["summary"] = json.loads(row["summary"]) if row["summary"] else None
            out.append(r)
        return out

    def recent_drift(self, limit: int = 15) -> list[dict[str, Any]]:
        """The latest changes, newest first: a bounded read for pages that refresh."""
        return [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])}
                for r in self._db.execute("SELECT * FROM changes ORDER BY id DESC LIMIT ?",
                                          (limit,))]

    def has_vm(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM vms WHERE name=?", (name,)).fetchone() is not None

    def vms_page(self, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
        """Known VMs by name, one page at a time."""
        return [dict(r) for r in self._db.execute(
            "SELECT name, last_scanned FROM vms ORDER BY name LIMIT ? OFFSET ?",
            (limit, offset))]

    def last_findings(self, vm: str) -> list[dict[str, Any]] | None:
        """The findings of ``vm``'s latest match that was not skipped; None when
        it was never matched (its first findings are then not drift)."""
        row = self._db.execute(
            "SELECT round_id, at FROM vuln_matches WHERE vm=? AND skipped IS NULL"
            " ORDER BY at DESC, rowid DESC LIMIT 1", (vm,)).fetchone()
        if row is None:
            return None
        return [json.loads(r["finding"]) for r in self._db.execute(
            "SELECT finding FROM findings WHERE vm=? AND at=? ORDER BY rowid",
            (vm, row["at"]))]

    def round_findings(self, round_id: int | None = None) -> list[dict[str, Any]]:
        """Every VM's findings of one round (default: the latest round with
        matches), as ``_vulns.VmFindings``, skipped VMs included."""
        if round_id is None:
            row = self._db.execute("SELECT round_id FROM vuln_matches ORDER BY rowid DESC"
                                   " LIMIT 1").fetchone()
            if row is None:
                return []
            round_id = row["round_id"]
        out = []
        for m in self._db.execute("SELECT * FROM vuln_matches WHERE round_id IS ? ORDER BY vm",
                                  (round_id,)).fetchall():
            findings = [json.loads(r["finding"]) for r in self._db.execute(
                "SELECT finding FROM findings WHERE vm=? AND at=? ORDER BY rowid",
                (m["vm"], m["at"]))]
            out.append({"vm": m["vm"], "at": m["at"], "round": m["round_id"],
                        "ecosystem": m["ecosystem"], "packages": m["packages"],
                        "findings": findings, "skipped": m["skipped"]})
        return out

    def open_findings(self) -> dict[str, int]:
        """Findings by severity of each VM's latest (not skipped) match: what is
        open now, as far as the recorded rounds know."""
        return {r["severity"]: r["n"] for r in self._db.execute(
            "SELECT f.severity, COUNT(*) AS n FROM findings f JOIN"
            " (SELECT vm, MAX(at) AS at FROM vuln_matches WHERE skipped IS NULL GROUP BY vm) m"
            " ON f.vm = m.vm AND f.at = m.at GROUP BY f.severity")}

    def exposure(self, limit: int = 20) -> list[dict[str, Any]]:
        """Findings by severity per round, for the latest ``limit`` rounds with
        matches, oldest first: ``{"round", "at", "vms", "affected_vms", "severity": {...}}``."""
        rounds = self._db.execute(
            "SELECT round_id, MAX(at) AS at, COUNT(*) AS vms,"
            " SUM(skipped IS NULL AND findings > 0) AS affected FROM vuln_matches"
            " GROUP BY round_id ORDER BY MAX(at) DESC LIMIT ?", (limit,)).fetchall()
        out = []
        for r in reversed(rounds):
            counts = {row["severity"]: row["n"] for row in self._db.execute(
                "SELECT severity, COUNT(*) AS n FROM findings WHERE round_id IS ?"
                " GROUP BY severity", (r["round_id"],))}
            out.append({"round": r["round_id"], "at": r["at"], "vms": r["vms"],
                        "affected_vms": r["affected"] or 0, "severity": counts})
        return out

    def drift(self, vm: str | None = None, since: float | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM changes WHERE 1=1", list[Any]()
        if vm:
            sql, args = sql + " AND vm=?", [*args, vm]
        if since is not None:
            sql, args = sql + " AND at>=?", [*args, since]
        return [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])}
                for r in self._db.execute(sql + " ORDER BY id", args)]


# -- what a result row means: the one definition every reader uses ---------------------
# A VM's latest result is its latest good row (state inspected or unchanged). Its
# facts are the inspector entries of ``facts_id(row)``: the row itself, or for a
# VM verified unchanged the inspection it carries forward (``carried_from``),
# inspected at ``inspected_at(row)``; ``row["at"]`` is when they were last known
# current. The VM's state is ``row_state`` of its latest attempt, good or not.

def row_state(row: sqlite3.Row) -> str:
    """A result row's state: inspected, unchanged or failed (rows from before
    the column: inspected or failed)."""
    return str(row["state"]) if row["state"] else ("inspected" if row["ok"] else "failed")


def facts_id(row: sqlite3.Row) -> int:
    """The result whose inspector entries a row stands for."""
    return int(row["carried_from"] or row["id"])


def inspected_at(row: sqlite3.Row) -> float | None:
    """When a good row's facts were inspected (None for a failed row)."""
    if not row["ok"]:
        return None
    return float(row["inspected_at"] or row["at"])


