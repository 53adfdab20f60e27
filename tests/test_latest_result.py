"""One definition of a VM's latest result, read the same by every view.

Random store histories (inspected, failed, verified unchanged, an inspector
failing inside a good result, package upgrades, several rounds) are written
through the store's own writers; a model kept beside them says what each VM's
state, OS, package count and inspection time must be, and every reader is
compared with it: the fleet table (`vms`, `/fleet`), `show`/the VM page, the
store's latest result (`/vms/NAME`, SBOMs, vulnerability matching), the
report's counts and `/metrics`' fleet gauges. No appliance.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers.stored_results import deb, os_value, packages_value
from hypothesis import given, settings
from hypothesis import strategies as st

from guestpool import VM, Disk, InspectResult, Store
from guestpool.store import _fleetview as fv

VMS = ("a", "b", "c")
DISTROS = (("debian", "12"), ("alpine", "3.20"), ("fedora", "40"))
CONTEXT = "os,packages"

#: one event: (vm, what happened, distro number, package count)
Event = tuple[str, str, int, int]
events = st.lists(st.tuples(st.sampled_from(VMS),
                            st.sampled_from(("inspected", "failed", "unchanged", "os-failed",
                                             "round")),
                            st.integers(0, len(DISTROS) - 1), st.integers(0, 4)),
                  max_size=14)


@dataclass
class Expected:
    """What the model says of one VM."""

    state: str = "never"
    distro: str | None = None
    packages: int | None = None
    facts_id: int | None = None  # the result row whose entries are the VM's facts
    fingerprinted: bool = False  # its last result kept a fingerprint (can be carried)


def _entries(distro: int, packages: int, os_ok: bool) -> dict[str, Any]:
    name, version = DISTROS[distro]
    os_entry: dict[str, Any] = {"inspector": "os", "version": "1", "ok": os_ok,
                                "value": os_value(name, version, "deb") if os_ok else None,
                                "error": None if os_ok else {"kind": "timeout", "message": "t"},
                                "seconds": 0.1}
    pkgs = [deb(f"p{i}", f"1.{packages}") for i in range(packages)]
    return {"os": os_entry,
            "packages": {"inspector": "packages", "version": "1", "ok": True,
                         "value": packages_value("deb", pkgs), "error": None, "seconds": 0.1}}


def _write(store: Store, history: list[Event], model: dict[str, Expected]) -> None:
    """Replay ``history`` through the store's writers, in a new round, and on the
    model beside them."""
    rid = store.start_round(60, "pooled", 1, None)
    seen: set[str] = set()  # a round writes one result per VM (``once``): a second is dropped
    for vm, what, distro, packages in history:
        m = model[vm]
        if what == "round":
            store.end_round(rid, {"covered": 0, "failed": 0, "not_reached": 0})
            rid, seen = store.start_round(60, "pooled", 1, None), set()
            continue
        if vm in seen:
            if what != "unchanged":  # the store refuses it; the model stays as it was
                store.record(rid, InspectResult(vm, what != "failed", {}), context=CONTEXT,
                             once=True)
            continue
        if what != "unchanged" or m.fingerprinted:
            seen.add(vm)
        if what in ("inspected", "os-failed"):
            os_ok = what == "inspected"
            store.record(rid, InspectResult(
                vm, True, _entries(distro, packages, os_ok),
                timings={"attach": 0.1, "inspect": 0.5, "detach": 0.1, "job": 0.7},
                fingerprint=[{"path": f"/img/{vm}", "size": packages}]), context=CONTEXT)
            row = store.db.execute("SELECT MAX(id) FROM results").fetchone()[0]
            m.state, m.facts_id, m.fingerprinted = "inspected", row, os_ok
            m.distro = os_value(*DISTROS[distro], "deb")["distro"] if os_ok else None
            m.packages = packages
        elif what == "failed":
            store.record(rid, InspectResult(vm, False, {}, error={"kind": "image",
                                                                  "message": "bad"}),
                         context=CONTEXT)
            m.state, m.fingerprinted = "failed", False
        elif m.fingerprinted:  # "unchanged" exactly as a round verifies it
            prints = store.fingerprints()[vm]
            assert prints["result_id"] == m.facts_id
            store.record_unchanged(rid, [(prints["result_id"], InspectResult(
                vm, True, timings={"verify": 0.001}, inspected_at=prints["inspected_at"]))])
            m.state = "unchanged"
    store.end_round(rid, {"covered": 0, "failed": 0, "not_reached": 0})


def _inspected_at(store: Store, facts_id: int | None) -> float | None:
    if facts_id is None:
        return None
    return float(store.db.execute("SELECT at FROM results WHERE id=?", (facts_id,)).fetchone()[0])


def _check(store: Store, model: dict[str, Expected]) -> None:
    rows, total = fv.fleet_page(store, fv.FleetQuery(limit=100))
    assert total == len(VMS)
    table = {r["vm"]: r for r in rows}
    for vm, m in model.items():
        want_at = _inspected_at(store, m.facts_id)
        row, detail, latest = table[vm], fv.vm_detail(store, vm), store.latest(vm)
        assert detail is not None
        # the fleet table (`vms --json`, /fleet and its JSON)
        assert (row["state"], row["distro"], row["packages"], row["inspected_at"]) == (
            m.state, m.distro, m.packages, want_at), vm
        # `show --json` and the VM page
        assert detail["state"] == m.state
        assert (detail["os"] or {}).get("distro") == m.distro
        assert (detail["packages"] or {}).get("count") == m.packages
        assert detail["inspected_at"] == want_at
        assert [h["state"] for h in detail["history"]][:1] == ([] if m.state == "never"
                                                               else [m.state])
        # the store's latest result (/vms/NAME, SBOMs, vulnerability matching)
        if m.facts_id is None:
            assert latest is None
            continue
        assert latest is not None and latest["inspected_at"] == want_at
        assert latest["results"]["packages"]["value"]["count"] == m.packages
        os_entry = latest["results"]["os"]
        assert (os_entry["value"]["distro"] if os_entry["ok"] else None) == m.distro
    # the report's and /metrics' counts
    states = Counter(m.state for m in model.values())
    view = fv.freshness(store)
    assert view["states"] == {s: states.get(s, 0) for s in fv.STATES}
    assert sum(view["freshness"].values()) == len(VMS)
    assert view["freshness"]["never"] == sum(m.facts_id is None for m in model.values())
    by_distro = Counter(m.distro for m in model.values())
    assert {d["distro"]: d["vms"] for d in fv.distros(store)} == dict(by_distro)


@settings(max_examples=1000, deadline=None)
@given(history=events, split=st.integers(0, 14))
def test_every_reader_agrees_on_each_vms_latest_result(history: list[Event],
                                                       split: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "s.db")
        try:
            store.sync_fleet([VM(n, (Disk(f"/img/{n}", "raw"),)) for n in VMS])
            model = {vm: Expected() for vm in VMS}
            # read half-way too: the read models catch up from where they were
            _write(store, history[:split], model)
            _check(store, model)
            _write(store, history[split:], model)
            _check(store, model)
        finally:
            store.close()
