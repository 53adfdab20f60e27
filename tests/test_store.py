"""Store, drift, staleness and capacity plan: fast tests, no appliance."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from guestpool import VM, Disk, InspectResult, Store, plan_round
from guestpool.rounds._round import order_fleet
from guestpool.store import _database as _store
from guestpool.store._drift import diff_results
from guestpool.store._export import export


def vm(name: str, group: str = "g", priority: int = 0) -> VM:
    return VM(name, (Disk(f"/x/{name}.qcow2", "qcow2"),), trust_group=group, priority=priority)


def pkgs(*versions: tuple[str, str]) -> dict[str, object]:
    return {"packages": {"inspector": "packages", "version": "1", "ok": True, "value": {
        "format": "deb", "count": len(versions),
        "packages": [{"name": n, "version": v, "release": "1", "epoch": None, "arch": "amd64"}
                     for n, v in versions]}}}


def test_results_and_drift_are_stored(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    rid = store.start_round(60, "pooled", 2, 5)
    store.record(rid, InspectResult("a", True, pkgs(("nginx", "1.0"), ("curl", "7"))))
    changes = store.record(rid, InspectResult("a", True, pkgs(("nginx", "1.1"), ("vim", "9"))))
    assert [(c["kind"], c["key"]) for c in changes] == [
        ("package-removed", "curl:amd64"), ("package-changed", "nginx:amd64"),
        ("package-added", "vim:amd64")]
    store.record(rid, InspectResult("b", False, error={"kind": "image", "message": "gone"}))
    assert store.latest("b") is None
    assert store.latest("a")["results"]["packages"]["value"]["count"] == 2
    assert len(store.drift("a")) == 3
    assert store.drift("a", since=4e9) == []
    rows = list(store.results())
    assert [r["ok"] for r in rows] == [True, True, False]
    assert export(rows, "jsonl").count("\n") == 3
    assert export(store.drift(), "csv").splitlines()[0].startswith("id,vm,")
    store.end_round(rid, {"covered": 2})
    assert store.last_round()["summary"] == {"covered": 2}
    with sqlite3.connect(tmp_path / "r.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_inspector_upgrade_is_not_reported_as_drift() -> None:
    before = pkgs(("nginx", "1.0"))
    after = pkgs(("nginx", "2.0"))
    after["packages"]["version"] = "2"  # type: ignore[index]
    assert [c["kind"] for c in diff_results(before, after)] == ["inspector-upgraded"]


def test_fleet_changes_are_tracked(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    assert store.sync_fleet([vm("a"), vm("b")])["appeared"] == ["a", "b"]
    moved = VM("a", (Disk("/y/a.raw", "raw"),))
    seen = store.sync_fleet([moved, vm("c")])
    assert seen == {"appeared": ["c"], "disappeared": ["b"], "changed": ["a"]}


def test_staleness_order_gives_successive_rounds_disjoint_vms(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    fleet = [vm(f"vm{i}", group=f"t{i % 2}") for i in range(10)]
    first = order_fleet(fleet, store.last_scanned())[:4]
    for v in first:
        store.record(1, InspectResult(v.name, True, {}))
    second = order_fleet(fleet, store.last_scanned())[:4]
    assert {v.name for v in first}.isdisjoint(v.name for v in second)
    # within one staleness class, trust groups stay together
    groups = [v.trust_group for v in order_fleet(fleet)]
    assert groups == sorted(groups)
    assert order_fleet([*fleet, vm("urgent", priority=5)])[0].name == "urgent"


def test_capacity_plan() -> None:
    plan = plan_round(1000, 300, 2, {"boot": 20, "job-pooled": 4})
    assert plan.predicted == 2 * ((298 - 20) // 4)  # whole jobs per appliance
    assert not plan.fits
    assert plan.needed_pool == pytest.approx(1000 * 4 / 278, abs=1)
    cold = plan_round(10, 300, 2, {"boot": 20, "job-cold": 5}, "cold")
    assert cold.predicted == 10 and cold.fits


def test_plan_counts_the_boots_of_trust_group_switches() -> None:
    costs = {"boot": 20, "job-pooled": 2}
    one = plan_round(300, 300, 2, costs, groups=["a"] * 300)
    assert one.predicted == 2 * 278 // 2  # no switch: as without groups
    three = plan_round(300, 300, 2, costs, groups=["a"] * 100 + ["b"] * 100 + ["c"] * 100)
    # each appliance keeps its group (a, b); when both are done both move to c: two
    # switches, one boot each (pool/rounds/_dispatch.py), not both appliances at each change
    assert three.predicted == (2 * 278 - 2 * 20) // 2 and three.group_switches == 2
    singles = plan_round(4, 300, 8, costs, groups=["a", "b", "c", "d"])
    assert singles.predicted == 4 and singles.fits  # one appliance per group, no waiting
    assert singles.needed_pool == 1  # 4 jobs + 3 reboots fit in one appliance's 278 s
    tight = plan_round(300, 60, 2, costs, groups=[str(i) for i in range(300)])
    assert tight.needed_pool > plan_round(300, 60, 2, costs).needed_pool


def test_a_store_being_created_shows_all_its_tables_or_none(tmp_path: Path) -> None:
    """A reader (``report``, a test polling a coordinator's store) that opens the file
    while another process creates it never sees half a schema."""
    db = tmp_path / "new.db"
    seen: set[int] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                c = sqlite3.connect(db, timeout=30)
            except sqlite3.Error:
                continue
            try:
                seen.add(c.execute("SELECT count(*) FROM sqlite_master "
                                   "WHERE name NOT LIKE 'sqlite_%'").fetchone()[0])
            except sqlite3.Error:
                pass
            finally:
                c.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        time.sleep(0.05)
        Store(db).close()
        time.sleep(0.05)
    finally:
        stop.set()
        watcher.join()
    complete = len(_store._SCHEMA_NAMES)
    assert seen <= {0, complete}, sorted(seen)
    assert complete in seen


def test_csv_cells_a_spreadsheet_would_run_are_quoted() -> None:
    """Guest bytes (a hostname, a package name) reach CSV cells: a leading =, +,
    -, @, tab or CR would make a spreadsheet run the cell as a formula."""
    import csv
    import io

    hostile = ["=HYPERLINK(\"http://x\")", "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]
    rows = [{"vm": v, "n": -5, "nested": {"k": "=1"}} for v in hostile]
    back = list(csv.DictReader(io.StringIO(export(rows, "csv"))))
    assert [r["vm"] for r in back] == ["'" + v for v in hostile]
    assert {r["n"] for r in back} == {"-5"}  # numbers stay numbers
    assert back[0]["nested"] == '{"k": "=1"}'
