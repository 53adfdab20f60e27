"""The operator's view from the command line: `guestpool vms`, `report`'s fleet
view and `show`, human and --json, over a store filled through Store.record
with stored-result shapes (no appliance), and the read models behind them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.stored_results import deb, latest, os_value, packages_value

from guestpool import VM, Disk, InspectResult, Store
from guestpool.store import _fleetview as fv

GP = [sys.executable, "-m", "guestpool"]
HOSTILE = "[bold red]<script>alert(1)</script>"


def _result(name: str, distro: str, version: str, pkgs: list[str], hostname: str = "h"
            ) -> InspectResult:
    os = os_value(distro, version, "deb", f"{distro} {version}")
    os["hostname"] = hostname
    res = latest(name, os, packages_value("deb", [deb(p, "1.0-1") for p in pkgs]))["results"]
    res["users"] = {"inspector": "users", "version": "1", "ok": True, "error": None,
                    "seconds": 0.1, "value": {"accounts": [], "uid0_not_root": ["toor"],
                                              "empty_password": ["toor"], "no_shadow_entry": [],
                                              "authorized_keys": {"alice": [{"type": "x"}]},
                                              "sudoers": []}}
    res["filesystems"] = {"inspector": "filesystems", "version": "1", "ok": True,
                          "error": None, "seconds": 0.1,
                          "value": [{"device": "/dev/sda1", "type": "ext4", "uuid": "u",
                                     "label": "root", "size": 2 << 30, "used": 1 << 30}]}
    return InspectResult(name, True, res, timings={"attach": 0.3, "inspect": 1.2,
                                                   "total": 1.6})


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two rounds over five VMs: debian 12 ×2, debian 11, fedora 40 (fails in
    round 2), one never inspected; web drifts between the rounds."""
    path = tmp_path_factory.mktemp("fleetview") / "r.db"
    store = Store(path)
    store.sync_fleet([VM(n, (Disk(f"/img/{n}.qcow2", "qcow2"),), trust_group=g)
                      for n, g in (("web", "dmz"), ("db", "core"), ("old", "core"),
                                   ("fed", "lab"), ("new", "lab"))])
    for rnd in (1, 2):
        rid = store.start_round(60, "pooled", 1, 4)
        store.record(rid, _result("web", "debian", "12", ["bash", f"nginx{rnd}"], HOSTILE))
        store.record(rid, _result("db", "debian", "12", ["bash", "postgresql", "zsh"]))
        store.record(rid, _result("old", "debian", "11", ["bash"]))
        if rnd == 1:
            store.record(rid, _result("fed", "fedora", "40", ["bash", "dnf"]))
        else:
            store.record(rid, InspectResult("fed", False, {}, error={
                "kind": "image", "message": "qcow2 header <b>corrupt</b>"}))
        store.end_round(rid, {"covered": 3 + (rnd == 1), "failed": int(rnd == 2),
                              "not_reached": 1, "boots": 1, "boot_mean_s": 17.5,
                              "elapsed_s": 40})
    store.close()
    return path


def run(db: Path, *args: str, code: int = 0) -> str:
    r = subprocess.run([*GP, *args, "--store", str(db)], capture_output=True, text=True,
                       env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    return r.stdout if code == 0 else r.stderr


def names(db: Path, *args: str) -> list[str]:
    return [v["vm"] for v in json.loads(run(db, "vms", "--json", *args))["vms"]]


def test_vms_lists_filters_and_sorts(db: Path) -> None:
    out = run(db, "vms")
    for vm in ("web", "db", "old", "fed", "new"):
        assert vm in out
    assert "debian 12" in out and " ago" in out
    assert "never" in out and "failed" in out
    data = json.loads(run(db, "vms", "--json"))
    assert data["total"] == 5
    web = next(v for v in data["vms"] if v["vm"] == "web")
    assert (web["trust_group"], web["distro"], web["version"], web["packages"],
            web["state"]) == ("dmz", "debian", "12", 2, "inspected")
    assert web["inspected_iso"].endswith("Z") and web["verified_iso"].endswith("Z")
    assert names(db, "--distro", "debian") == ["db", "old", "web"]
    assert names(db, "--distro", "debian", "--version", "11") == ["old"]
    assert names(db, "--failed") == ["fed"]
    assert names(db, "--state", "never") == ["new"]
    assert names(db, "--stale", "1h") == ["new"]  # never inspected counts as stale
    assert names(db, "--sort", "packages", "--desc")[0] == "db"
    assert names(db, "--sort", "age")[0] == "new"
    assert names(db, "--sort", "distro")[:3] == ["old", "db", "web"]
    assert names(db, "--search", "script") == ["web"]  # hostname search
    assert "use an age like" in run(db, "vms", "--stale", "soon", code=2)


def test_operators_filter_by_usual_names_and_see_whole_cells(db: Path) -> None:
    assert names(db, "--distro", "Debian") == names(db, "--distro", "DEBIAN") == [
        "db", "old", "web"]
    assert fv.distro_names("Alpine") == ["alpine", "alpinelinux"]
    assert {"opensuse", "sles"} <= set(fv.distro_names("suse"))
    assert "rhel" in fv.distro_names("RHEL") and "rhel" in fv.distro_names("redhat")
    # the latest failure's message and time, not only its kind
    failed = run(db, "vms", "--failed")
    assert "image: qcow2 header <b>corrupt</b> (" in failed and " ago)" in failed
    # narrow and not a terminal: nothing cut; --wide on a terminal does the same
    narrow = subprocess.run([*GP, "vms", "--store", str(db)], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "40"})
    assert narrow.returncode == 0 and "…" not in narrow.stdout
    assert "debian 12" in narrow.stdout and "failure (latest attempt)" in narrow.stdout


def test_report_has_the_fleet_view(db: Path) -> None:
    out = run(db, "report")
    for text in ("fleet: 5 VMs", "current as of the last round", "never inspected",
                 "debian 12", "fedora 40", "failures by reason", "image", "most drift"):
        assert text in out, text
    rep = json.loads(run(db, "report", "--json"))
    fleet = rep["fleet"]
    assert fleet["vms"] == 5
    assert fleet["freshness"] == {"last_round": 3, "last_hour": 1, "older": 0, "never": 1}
    assert fleet["states"] == {"inspected": 3, "unchanged": 0, "failed": 1, "never": 1}
    assert {(d["distro"], d["version"]): d["vms"] for d in fleet["by_distro"]} == {
        ("debian", "12"): 2, ("debian", "11"): 1, ("fedora", "40"): 1, (None, None): 1}
    assert fleet["failures"] == [{"reason": "image", "vms": 1, "example": "fed",
                                  "message": "qcow2 header <b>corrupt</b>"}]
    assert fleet["most_drift"]["vms"][0]["vm"] == "web"
    assert "exposure" in rep and rep["summary"]["failed"] == 1


def test_show_is_readable_and_json_for_machines(db: Path) -> None:
    out = run(db, "show", "web")
    for text in ("debian 12", "dmz", "2 (deb)", "/img/web.qcow2", "/dev/sda1", "2.0 GiB",
                 "toor", "uid 0", "alice", "package-added", "inspect 1.20 s", HOSTILE):
        assert text in out, text
    assert "{" not in out.replace(HOSTILE, "")
    d = json.loads(run(db, "show", "web", "--json"))
    assert d["os"]["distro"] == "debian" and d["packages"] == {"count": 2, "format": "deb"}
    assert d["results"]["packages"]["value"]["count"] == 2
    assert [u["user"] for u in d["users_with_findings"]] == ["alice", "toor"]
    assert len(d["history"]) == 2 and d["drift_timeline"][0]["changes"] == 2
    fed = json.loads(run(db, "show", "fed", "--json"))
    assert fed["state"] == "failed" and fed["last_error"]["kind"] == "image"
    assert fed["os"]["distro"] == "fedora"  # the last good inspection still shows
    assert "failed" in run(db, "show", "fed")
    assert json.loads(run(db, "show", "new", "--json"))["state"] == "never"
    assert "no VM 'nope'" in run(db, "show", "nope", code=2)  # bad input


def test_read_models_catch_up_incrementally(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    rid = store.start_round(60, "pooled", 1, 2)
    store.record(rid, _result("a", "debian", "12", ["x"]))
    assert fv.refresh(store) == 1 and fv.refresh(store) == 0
    store.record(rid, InspectResult("a", False, {}, error={"kind": "timeout", "message": "m"}))
    store.record(rid, _result("b", "alpine", "3.20", ["y", "z"]))
    assert fv.refresh(store) == 2
    rows, total = fv.fleet_page(store, fv.FleetQuery(sort="name"))
    by = {r["vm"]: r for r in rows}
    assert total == 2 and by["a"]["state"] == "failed" and by["a"]["distro"] == "debian"
    assert by["b"]["packages"] == 2
    # paging: one row at a time, in order, same total
    pages = [fv.fleet_page(store, fv.FleetQuery(limit=1, offset=i))[0][0]["vm"] for i in (0, 1)]
    assert pages == ["a", "b"]
    store.end_round(rid, {"covered": 1, "failed": 1, "not_reached": 0, "boot_mean_s": 9.0})
    series = fv.round_series(store)
    assert series[0]["job_p50_s"] == pytest.approx(1.5)  # attach + inspect, one job ran
    assert series[0]["boot_mean_s"] == 9.0 and series[0]["coverage"] == 0.5
    assert (series[0]["fresh_1h"], series[0]["never"]) == (2, 0)
    store.close()


def test_times_read_as_ages_and_iso() -> None:
    now = time.time()
    assert fv.ago(now - 240, now) == "4 min ago"
    assert fv.ago(now - 7200, now) == "2 h ago"
    assert fv.ago(None) == "never"
    assert fv.iso(0) == "1970-01-01T00:00:00Z"
    assert fv.parse_age("90s") == 90 and fv.parse_age("2d") == 172800
    with pytest.raises(ValueError):
        fv.parse_age("1x")
