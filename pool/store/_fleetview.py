"""The fleet as an operator looks at it: one row per VM, summaries, per-round series.

One code path for `guestpool vms`/`report`/`show` and the console. Reading a
10,000-VM fleet must not parse 100,000 stored results at every page, so this
module keeps two read models beside the store's tables, brought up to date
from the results recorded since the last read (``refresh``): ``fleet_index``
(each VM's last attempt and last good inspection, with the facts the fleet
table filters and sorts on, all indexed) and ``round_stats`` (the figures of
a finished round, which never change). Both are derived: dropping them loses
nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from guestpool.inspectors._osfacts import distro_of_os_release_id

from ._database import Store, facts_id, inspected_at, row_state
from ._results import own_seconds, percentiles, ran_job
from ._transactions import StoreError, transaction

SCHEMA = """
CREATE TABLE IF NOT EXISTS fleet_index (
    vm TEXT PRIMARY KEY, last_id INTEGER, last_at REAL, round_id INTEGER, state TEXT,
    error_kind TEXT, error TEXT, ok_id INTEGER, facts_id INTEGER, inspected_at REAL,
    verified_at REAL, first_ok_at REAL,
    distro TEXT, version TEXT, product TEXT, hostname TEXT, packages INTEGER);
CREATE INDEX IF NOT EXISTS fleet_index_distro ON fleet_index (distro, version);
CREATE INDEX IF NOT EXISTS fleet_index_verified ON fleet_index (verified_at);
CREATE INDEX IF NOT EXISTS fleet_index_inspected ON fleet_index (inspected_at);
CREATE INDEX IF NOT EXISTS fleet_index_first_ok ON fleet_index (first_ok_at);
CREATE INDEX IF NOT EXISTS fleet_index_state ON fleet_index (state, error_kind);
CREATE TABLE IF NOT EXISTS fleet_index_mark (one INTEGER PRIMARY KEY CHECK (one = 1),
    result_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS round_stats (
    round_id INTEGER PRIMARY KEY, jobs INTEGER, ok INTEGER, job_p50_s REAL, job_p95_s REAL,
    wait_p50_s REAL, wait_p95_s REAL, fleet INTEGER, fresh_1h INTEGER, ever INTEGER);
CREATE INDEX IF NOT EXISTS vms_live ON vms (removed, name);
"""

#: A VM's state, from its latest recorded attempt (``row_state``); "unchanged":
#: its disks were verified unchanged and its last inspection carried forward.
STATES = ("inspected", "unchanged", "failed", "never")
#: A column the index gained after stores already had one: an index without it
#: is dropped and rebuilt from the results (it is derived, nothing is lost).
_INDEX_VERSION_COLUMN = "verified_at"
#: sort key -> ORDER BY terms, ascending (``desc`` reverses every term)
SORTS = {
    "name": ("v.name",),
    "age": ("COALESCE(f.verified_at, 0)", "v.name"),  # stalest first
    "distro": ("f.distro IS NULL", "f.distro", "f.version", "v.name"),
    "packages": ("COALESCE(f.packages, -1)", "v.name"),
    "state": ("COALESCE(f.state, 'never')", "v.name"),
}
FRESH_S = 3600.0
_SCHEMA_NAMES = re.findall(r"CREATE (?:TABLE|INDEX) IF NOT EXISTS (\w+)", SCHEMA)


def _ready(store: Store) -> sqlite3.Connection:
    db = store.db
    if not getattr(store, "_fleetview_schema", False):
        columns = {r[1] for r in db.execute("PRAGMA table_info(fleet_index)")}
        if columns and _INDEX_VERSION_COLUMN not in columns:
            db.executescript("DROP TABLE IF EXISTS fleet_index;"
                             " DROP TABLE IF EXISTS fleet_index_mark;")
        stats = {r[1] for r in db.execute("PRAGMA table_info(round_stats)")}
        if stats and "job_p50_s" not in stats:
            db.executescript("DROP TABLE IF EXISTS round_stats;")
        have = {r[0] for r in db.execute("SELECT name FROM sqlite_master")}
        if not set(_SCHEMA_NAMES) <= have:  # creating takes the write lock: only if needed
            db.executescript(SCHEMA)
        store._fleetview_schema = True  # type: ignore[attr-defined]
    return db


def refresh(store: Store) -> int:
    """Bring the read models up to date with results recorded since the last
    call (by any process); returns how many VMs were updated. A reader does not
    wait on another process's lock: the views then stay as they were and catch
    up at the next read."""
    db = _ready(store)
    row = db.execute("SELECT result_id FROM fleet_index_mark").fetchone()
    start = row[0] if row else 0
    top = db.execute("SELECT MAX(id) FROM results").fetchone()[0] or 0
    groups = [] if top <= start else db.execute(
        "SELECT vm, MAX(id) AS last_id, MAX(CASE WHEN ok=1 THEN id END) AS ok_id,"
        " MIN(CASE WHEN ok=1 THEN at END) AS first_ok FROM results WHERE id > ? AND id <= ?"
        " GROUP BY vm", (start, top)).fetchall()
    try:
        with store.brief_waits(0.1):
            if groups:
                with transaction(db, store.path):
                    for g in groups:
                        _index_vm(db, g)
                    db.execute("INSERT INTO fleet_index_mark VALUES (1, ?) ON CONFLICT(one)"
                               " DO UPDATE SET result_id=excluded.result_id", (top,))
            with transaction(db, store.path):
                _round_stats(db)
    except StoreError as e:
        if not e.busy:
            raise
        return 0
    return len(groups)


def _index_vm(db: sqlite3.Connection, g: sqlite3.Row) -> None:
    last = db.execute("SELECT * FROM results WHERE id=?", (g["last_id"],)).fetchone()
    error = json.loads(last["error"] or "null") or {}
    db.execute(
        "INSERT INTO fleet_index (vm, last_id, last_at, round_id, state, error_kind, error)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(vm) DO UPDATE SET last_id=excluded.last_id,"
        " last_at=excluded.last_at, round_id=excluded.round_id, state=excluded.state,"
        " error_kind=excluded.error_kind, error=excluded.error",
        (g["vm"], last["id"], last["at"], last["round_id"], row_state(last),
         error.get("kind") if not last["ok"] else None,
         str(error.get("message", ""))[:500] if not last["ok"] else None))
    if g["ok_id"] is None:
        return
    good = db.execute("SELECT * FROM results WHERE id=?", (g["ok_id"],)).fetchone()
    facts: dict[str, Any] = {}
    for r in db.execute(
            "SELECT inspector, json_extract(value, '$.distro') AS distro,"
            " json_extract(value, '$.version') AS version,"
            " json_extract(value, '$.product_name') AS product,"
            " json_extract(value, '$.hostname') AS hostname,"
            " json_extract(value, '$.count') AS count FROM inspector_results"
            " WHERE result_id=? AND inspector IN ('os', 'packages') AND ok=1"
            " AND json_type(value) = 'object'", (facts_id(good),)):
        if r["inspector"] == "os":
            facts.update(distro=r["distro"], version=_text(r["version"]),
                         product=r["product"], hostname=r["hostname"])
        else:
            facts["packages"] = r["count"]
    db.execute(
        "UPDATE fleet_index SET ok_id=?, facts_id=?, inspected_at=?, verified_at=?,"
        " first_ok_at=COALESCE(first_ok_at, ?), distro=?, version=?, product=?, hostname=?,"
        " packages=? WHERE vm=?",
        (good["id"], facts_id(good), inspected_at(good), good["at"], g["first_ok"],
         facts.get("distro"), facts.get("version"), facts.get("product"), facts.get("hostname"),
         facts.get("packages"), g["vm"]))


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _round_stats(db: sqlite3.Connection) -> None:
    """Figures of finished rounds not summed yet (a finished round never changes)."""
    todo = db.execute("SELECT r.id, r.ended FROM rounds r LEFT JOIN round_stats s"
                      " ON s.round_id = r.id WHERE r.ended IS NOT NULL AND s.round_id IS NULL"
                      " ORDER BY r.id").fetchall()
    for r in todo:
        db.execute("INSERT OR REPLACE INTO round_stats VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (r["id"], *_round_figures(db, r["id"], r["ended"])))


def _round_figures(db: sqlite3.Connection, round_id: int, at: float) -> tuple[Any, ...]:
    rows = db.execute("SELECT ok, state, strategy, timings FROM results WHERE round_id=?",
                      (round_id,)).fetchall()
    timings = [(json.loads(r["timings"] or "{}"), r["strategy"] or "pooled") for r in rows]
    ran = [(t, strategy) for t, strategy in timings if ran_job(t)]
    job = percentiles([t.get("job", own_seconds(t, strategy)) for t, strategy in ran])
    wait = percentiles([t.get("wait", 0.0) for t, _ in ran])
    fleet = db.execute("SELECT COUNT(*) FROM vms WHERE first_seen <= ? AND"
                       " (removed IS NULL OR removed > ?)", (at, at)).fetchone()[0]
    fresh = db.execute("SELECT COUNT(DISTINCT vm) FROM results WHERE at > ? AND at <= ?"
                       " AND ok=1", (at - FRESH_S, at)).fetchone()[0]
    ever = db.execute("SELECT COUNT(*) FROM fleet_index WHERE first_ok_at <= ?",
                      (at,)).fetchone()[0]
    return (len(rows), sum(r["ok"] for r in rows), job and job["p50"], job and job["p95"],
            wait and wait["p50"], wait and wait["p95"], fleet, fresh, ever)


# -- the fleet table -----------------------------------------------------------------------

@dataclass(frozen=True)
class FleetQuery:
    """What the fleet table shows: filters, order and one page."""

    search: str = ""  # in VM name, hostname or OS product name
    distro: str = ""
    version: str = ""
    state: str = ""  # one of STATES
    stale_s: float | None = None  # facts not known current for this long (or never)
    failed: bool = False  # shorthand for state="failed"
    sort: str = "name"
    desc: bool = False
    limit: int = 50
    offset: int = 0


_COLUMNS = ("v.name AS vm, v.trust_group, COALESCE(f.state, 'never') AS state, f.distro,"
            " f.version, f.product, f.hostname, f.packages, f.inspected_at, f.verified_at,"
            " f.last_at, f.round_id, f.error_kind, f.error")


def _where(q: FleetQuery, now: float) -> tuple[str, list[Any]]:
    sql, args = ["v.removed IS NULL"], list[Any]()
    if q.search:
        like = "%" + q.search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        sql.append("(v.name LIKE ? ESCAPE '\\' OR f.hostname LIKE ? ESCAPE '\\'"
                   " OR f.product LIKE ? ESCAPE '\\')")
        args += [like, like, like]
    if q.distro:
        names = distro_names(q.distro)
        sql.append(f"f.distro IN ({', '.join('?' * len(names))})")
        args += names
    if q.version:
        sql.append("f.version = ?")
        args.append(q.version)
    state = "failed" if q.failed else q.state
    if state:
        sql.append("COALESCE(f.state, 'never') = ?")
        args.append(state)
    if q.stale_s is not None:
        sql.append("COALESCE(f.verified_at, 0) < ?")
        args.append(now - q.stale_s)
    return " AND ".join(sql), args


#: names operators use for a family of distros libguestfs names apart
DISTRO_FAMILIES = {"suse": ("opensuse", "sles"), "redhat": ("rhel",), "red hat": ("rhel",),
                   "mint": ("linuxmint",)}


def distro_names(text: str) -> list[str]:
    """The stored distro names (libguestfs's) a filter means: the name in any case,
    an os-release ID (``alpine`` is ``alpinelinux``) or a family (``suse``)."""
    name = text.strip().lower()
    found = [name, distro_of_os_release_id(name) or name, *DISTRO_FAMILIES.get(name, ())]
    return list(dict.fromkeys(found))


def fleet_page(store: Store, q: FleetQuery, now: float | None = None
               ) -> tuple[list[dict[str, Any]], int]:
    """One page of the fleet table and how many VMs match in all."""
    now = time.time() if now is None else now
    refresh(store)
    db = store.db
    if q.sort not in SORTS:
        raise ValueError(f"sort must be one of {', '.join(SORTS)}")
    where, args = _where(q, now)
    frm = " FROM vms v LEFT JOIN fleet_index f ON f.vm = v.name WHERE " + where
    total = db.execute("SELECT COUNT(*)" + frm, args).fetchone()[0]
    order = ", ".join(f"{term} DESC" if q.desc else term for term in SORTS[q.sort])
    rows = db.execute(f"SELECT {_COLUMNS}{frm} ORDER BY {order} LIMIT ? OFFSET ?",
                      [*args, q.limit, q.offset]).fetchall()
    return [dict(r) for r in rows], total


def distros(store: Store) -> list[dict[str, Any]]:
    """Distro and version pairs of the live fleet with their VM counts, largest first."""
    refresh(store)
    return [dict(r) for r in store.db.execute(
        "SELECT f.distro, f.version, COUNT(*) AS vms FROM vms v LEFT JOIN fleet_index f"
        " ON f.vm = v.name WHERE v.removed IS NULL GROUP BY f.distro, f.version"
        " ORDER BY vms DESC, f.distro, f.version")]


# -- the fleet report ----------------------------------------------------------------------

def freshness(store: Store, now: float | None = None, refreshed: bool = False
              ) -> dict[str, Any]:
    """Live VMs by how recently their facts were known current (inspected or
    verified unchanged in the last round, in the hour before, longer ago,
    never) and by state."""
    now = time.time() if now is None else now
    if not refreshed:
        refresh(store)
    db = store.db
    last = db.execute("SELECT started FROM rounds ORDER BY id DESC LIMIT 1").fetchone()
    since_round = last["started"] if last else now
    fresh = db.execute(
        "SELECT COUNT(*) AS total,"
        " SUM(f.verified_at >= ?) AS last_round,"
        " SUM(f.verified_at < ? AND f.verified_at >= ?) AS last_hour,"
        " SUM(f.verified_at < ? AND f.verified_at < ?) AS older,"
        " SUM(f.verified_at IS NULL) AS never"
        " FROM vms v LEFT JOIN fleet_index f ON f.vm = v.name WHERE v.removed IS NULL",
        (since_round, since_round, now - FRESH_S, since_round, now - FRESH_S)).fetchone()
    states = {r["state"]: r["n"] for r in db.execute(
        "SELECT COALESCE(f.state, 'never') AS state, COUNT(*) AS n FROM vms v LEFT JOIN"
        " fleet_index f ON f.vm = v.name WHERE v.removed IS NULL GROUP BY 1")}
    return {"vms": fresh["total"],
            "freshness": {k: fresh[k] or 0 for k in ("last_round", "last_hour", "older",
                                                     "never")},
            "states": {s: states.get(s, 0) for s in STATES}}


def fleet_report(store: Store, now: float | None = None, drift_rounds: int = 10
                 ) -> dict[str, Any]:
    """VMs by distro/version, freshness buckets, failures by reason and the VMs
    with the most drift over the last ``drift_rounds`` rounds."""
    now = time.time() if now is None else now
    refresh(store)
    db = store.db
    last = db.execute("SELECT id, started FROM rounds ORDER BY id DESC LIMIT 1").fetchone()
    fresh = freshness(store, now, refreshed=True)
    failures = [dict(r) for r in db.execute(
        "SELECT COALESCE(f.error_kind, 'unknown') AS reason, COUNT(*) AS vms,"
        " MIN(f.vm) AS example, MAX(f.error) AS message FROM fleet_index f JOIN vms v"
        " ON v.name = f.vm WHERE v.removed IS NULL AND f.state = 'failed'"
        " GROUP BY 1 ORDER BY vms DESC")]
    first = (last["id"] - drift_rounds + 1) if last else 0
    drift = [dict(r) for r in db.execute(
        "SELECT vm, COUNT(*) AS changes, MAX(at) AS last_at FROM changes WHERE round_id >= ?"
        " GROUP BY vm ORDER BY changes DESC, vm LIMIT 10", (first,))]
    return {
        "vms": fresh["vms"],
        "states": fresh["states"],
        "by_distro": distros(store),
        "freshness": fresh["freshness"],
        "failures": failures,
        "most_drift": {"rounds": drift_rounds, "vms": drift},
        "at": now,
    }


def round_series(store: Store, limit: int = 20) -> list[dict[str, Any]]:
    """The latest ``limit`` finished rounds, oldest first, with what the charts
    plot: coverage, freshness at the round's end, mean boot, and p50/p95 of each
    VM's own job and of its wait for an appliance."""
    refresh(store)
    rows = store.db.execute(
        "SELECT r.id, r.started, r.ended, r.summary, s.* FROM rounds r"
        " JOIN round_stats s ON s.round_id = r.id"
        " ORDER BY r.id DESC LIMIT ?", (limit,)).fetchall()
    out = []
    for r in reversed(rows):
        summary = json.loads(r["summary"]) if r["summary"] else {}
        asked = sum(int(summary.get(k) or 0) for k in ("covered", "failed", "not_reached"))
        fleet = r["fleet"] or 0
        out.append({
            "round": r["id"], "started": r["started"], "ended": r["ended"],
            "covered": summary.get("covered"), "failed": summary.get("failed"),
            "not_reached": summary.get("not_reached"),
            "coverage": (summary.get("covered") or 0) / asked if asked else None,
            "boots": summary.get("boots"), "boot_mean_s": summary.get("boot_mean_s"),
            "job_p50_s": r["job_p50_s"], "job_p95_s": r["job_p95_s"],
            "wait_p50_s": r["wait_p50_s"], "wait_p95_s": r["wait_p95_s"], "jobs": r["jobs"],
            "fleet": fleet, "fresh_1h": r["fresh_1h"],
            "older": max(0, (r["ever"] or 0) - (r["fresh_1h"] or 0)),
            "never": max(0, fleet - (r["ever"] or 0))})
    return out


# -- one VM --------------------------------------------------------------------------------

def users_with_findings(users: Any) -> list[dict[str, Any]]:
    """Accounts the users inspector flagged: extra uid 0, empty password, no
    shadow entry, authorized SSH keys."""
    if not isinstance(users, dict):
        return []
    found: dict[str, list[str]] = {}
    for key, label in (("uid0_not_root", "uid 0"), ("empty_password", "empty password"),
                       ("no_shadow_entry", "no shadow entry")):
        for name in users.get(key) or []:
            found.setdefault(str(name), []).append(label)
    for name, keys in (users.get("authorized_keys") or {}).items():
        if keys:
            found.setdefault(str(name), []).append(f"{len(keys)} authorized key(s)")
    return [{"user": u, "findings": f} for u, f in sorted(found.items())]


def vm_detail(store: Store, name: str, history: int = 20) -> dict[str, Any] | None:
    """Everything `show` and the VM page print about one VM, or None if unknown."""
    refresh(store)
    db = store.db
    vm = db.execute("SELECT * FROM vms WHERE name=?", (name,)).fetchone()
    if vm is None:
        return None
    index = db.execute("SELECT * FROM fleet_index WHERE vm=?", (name,)).fetchone()
    latest = store.latest(name)
    results = (latest or {}).get("results", {})

    def value(inspector: str) -> Any:
        entry = results.get(inspector) or {}
        return entry.get("value") if entry.get("ok") else None

    packages = value("packages")
    attempts = [{"id": r["id"], "round": r["round_id"], "at": r["at"], "ok": bool(r["ok"]),
                 "state": row_state(r), "inspected_at": inspected_at(r),
                 "error": json.loads(r["error"] or "null"),
                 "timings": json.loads(r["timings"] or "{}")}
                for r in db.execute("SELECT * FROM results WHERE vm=? ORDER BY at DESC, id DESC"
                                    " LIMIT ?", (name, history))]
    timeline = [dict(r) for r in db.execute(
        "SELECT round_id AS round, MAX(at) AS at, COUNT(*) AS changes,"
        " group_concat(DISTINCT kind) AS kinds FROM changes WHERE vm=? GROUP BY round_id"
        " ORDER BY MAX(at) DESC LIMIT ?", (name, history))]
    last_drift = [{**dict(r), "before": json.loads(r["before"]), "after": json.loads(r["after"])}
                  for r in db.execute("SELECT * FROM changes WHERE vm=? ORDER BY id DESC"
                                      " LIMIT 50", (name,))]
    return {
        "vm": name, "trust_group": vm["trust_group"],
        "disks": [{"path": d[0], "format": d[1]} for d in json.loads(vm["disks"] or "[]")],
        "first_seen": vm["first_seen"], "removed": vm["removed"],
        "state": index["state"] if index else "never",
        "last_attempt_at": index["last_at"] if index else None,
        "last_error": ({"kind": index["error_kind"], "message": index["error"]}
                       if index and index["state"] == "failed" else None),
        "inspected_at": latest["inspected_at"] if latest else None,
        "verified_at": latest["at"] if latest else None,
        "round": latest["round"] if latest else None,
        "os": value("os"),
        "filesystems": value("filesystems"),
        "packages": {"count": packages.get("count"), "format": packages.get("format")}
        if isinstance(packages, dict) else None,
        "users_with_findings": users_with_findings(value("users")),
        "timings": _inspection_timings(db, index),
        "results": results,  # every inspector's stored entry, as `Store.latest` gives it
        "history": attempts,
        "drift_timeline": timeline,
        "last_drift": last_drift,
    }


def _inspection_timings(db: sqlite3.Connection, index: sqlite3.Row | None) -> dict[str, Any]:
    """The job steps of the inspection behind a VM's facts (for a VM verified
    unchanged, the inspection it carries, not the verification)."""
    if index is None or index["facts_id"] is None:
        return {}
    row = db.execute("SELECT timings FROM results WHERE id=?", (index["facts_id"],)).fetchone()
    return dict(json.loads(row["timings"] or "{}")) if row else {}


# -- how times read ------------------------------------------------------------------------

def iso(at: float | None) -> str:
    if at is None:
        return "-"
    return dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def ago(at: float | None, now: float | None = None) -> str:
    """"4 min ago", "2 h ago", "never"."""
    if at is None:
        return "never"
    s = max(0.0, (time.time() if now is None else now) - at)
    if s < 60:
        return f"{s:.0f} s ago"
    if s < 3600:
        return f"{s / 60:.0f} min ago"
    if s < 86400 * 2:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} days ago"


def parse_age(value: str) -> float:
    """"90s", "30m", "1h", "2d" -> seconds; ValueError with the accepted forms."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    number = value[:-1]
    if value[-1:] in units and number.replace(".", "", 1).isdigit():
        return float(number) * units[value[-1]]
    raise ValueError(f"{value!r}: use an age like 90s, 30m, 1h or 2d")


def human_bytes(n: Any) -> str:
    """1536 -> "1.5 KiB"; "" for what is not a number."""
    if not isinstance(n, int | float) or isinstance(n, bool):
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def os_label(row: Any) -> str:
    """"debian 12" from a fleet row or an os value; "" when unknown."""
    return " ".join(str(row[k]) for k in ("distro", "version") if row.get(k))
