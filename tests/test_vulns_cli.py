"""`guestpool vulns`, `export --format cyclonedx|spdx`, findings history and
drift, on the demo fleet's real package databases in a real store (no boot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from helpers.fleet import DemoFleet
from helpers.osv import expected_demo_findings, write_osv
from helpers.pool_thread import PoolThread
from helpers.stored_results import DEBIAN_12_OS, deb, demo_vm, latest, packages_value
from spdx_tools.spdx.parser.jsonlikedict.json_like_dict_parser import JsonLikeDictParser
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from guestpool import InspectResult, Store
from guestpool.rounds._report import RoundReport
from guestpool.rounds._round import _match_findings
from guestpool.supply import _findings

GP = [sys.executable, "-m", "guestpool"]
SEEDS = range(1000, 1006)


@pytest.fixture(scope="module")
def osv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_osv(tmp_path_factory.mktemp("osv"))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A store holding the demo's Debian, Alpine and Fedora VMs' results (the
    packages inspector's parsers on the demo's databases), their ground truth,
    and one VM whose packages result failed."""
    tmp = tmp_path_factory.mktemp("fleet")
    db = tmp / "r.db"
    store = Store(db)
    rid = store.start_round(60, "pooled", 1, 1)
    truth: dict[str, Any] = {}
    for kind in ("debian", "alpine", "fedora"):
        for seed in SEEDS:
            result, versions = demo_vm(kind, tmp, seed)
            store.record(rid, InspectResult(result["vm"], True, result["results"]))
            truth[result["vm"]] = (kind, versions)
    broken = latest("vm-broken", DEBIAN_12_OS, None)["results"]
    broken["packages"] = {"inspector": "packages", "version": "1", "ok": False, "value": None,
                          "error": "no package database", "seconds": 0.1}
    store.record(rid, InspectResult("vm-broken", True, broken))
    store.end_round(rid, {"covered": len(truth) + 1})
    store.close()
    return db, truth


def run(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # rich wraps at 80 columns when piped
    r = subprocess.run([*GP, *args], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == code, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    return r


def test_vulns_json_is_exact_for_the_demo_fleet(osv: Path, fleet: tuple[Path, Any]) -> None:
    db, truth = fleet
    view = json.loads(run("vulns", "--osv", str(osv), "--json", "--store", str(db)).stdout)
    assert set(view) == {"osv", "counts", "advisories", "vms"}
    by_vm = {r["vm"]: r for r in view["vms"]}
    assert set(by_vm) == {*truth, "vm-broken"}
    for vm, (kind, versions) in truth.items():
        got = {(f["id"], f["package"]): f["fixed"] for f in by_vm[vm]["findings"]}
        assert got == expected_demo_findings(kind, versions), vm
    assert "no advisories for fedora 40" in by_vm["vm-fedora-1000"]["skipped"]
    assert "packages" in by_vm["vm-broken"]["skipped"]
    total = sum(len(r["findings"]) for r in view["vms"])
    assert sum(view["counts"].values()) == total
    severities = [a["severity"] for a in view["advisories"]]
    assert severities[0] == "high" and view["advisories"][0]["id"] == "ALPINE-CVE-2024-6387"
    planted = sum(1 for _, (k, v) in truth.items() if k == "alpine"
                  and v["openssh-server"] == "9.7_p1-r3")
    assert view["advisories"][0]["vm_count"] == planted > 0
    assert view["osv"]["advisories"] == 10 and view["osv"]["stale"]  # 2024 fixture


def test_vulns_table_names_advisories_skips_and_staleness(osv: Path,
                                                          fleet: tuple[Path, Any]) -> None:
    db, _ = fleet
    r = run("vulns", "--osv", str(osv), "--store", str(db))
    assert "days old" in r.stderr and "curl -fo" in r.stderr  # stale data: how to refresh
    for text in ("ALPINE-CVE-2024-6387", "CVE-2024-6387", "DSA-5532-1", "3.0.11-1~deb12u2",
                 "no fix yet", "open findings by severity: critical: 0, high:",
                 "skipped 6 VMs (vm-fedora-1000", "OSV publishes no advisories for fedora 40",
                 "skipped 1 VMs (vm-broken)"):
        assert text in r.stdout, text
    one = run("vulns", "vm-debian-1000", "--osv", str(osv), "--store", str(db), "--json")
    assert [v["vm"] for v in json.loads(one.stdout)["vms"]] == ["vm-debian-1000"]


def test_vulns_without_osv_data_says_how_to_fill_it(tmp_path: Path,
                                                    fleet: tuple[Path, Any]) -> None:
    db, _ = fleet
    r = run("vulns", "--osv", str(tmp_path / "nope"), "--store", str(db), code=2)
    assert r.stderr.count("\n") == 1 and "does not exist" in r.stderr
    assert "/Debian/all.zip" in r.stderr
    r = run("scan", "x.json", "--osv", str(tmp_path / "nope"), code=2)  # before any boot
    assert "OSV folder" in r.stderr and r.stderr.count("\n") == 1


@pytest.mark.parametrize("spec", ["1.5", "1.6"])
def test_export_cyclonedx_to_stdout_validates(fleet: tuple[Path, Any], spec: str) -> None:
    db, truth = fleet
    r = run("export", "--format", "cyclonedx", "--spec", spec, "vm-debian-1001",
            "--store", str(db))
    version = {"1.5": SchemaVersion.V1_5, "1.6": SchemaVersion.V1_6}[spec]
    assert JsonStrictValidator(version).validate_str(r.stdout) is None
    doc = json.loads(r.stdout)
    assert doc["specVersion"] == spec
    assert doc["metadata"]["component"]["type"] == "operating-system"
    purls = {c["purl"] for c in doc["components"]}
    openssl = truth["vm-debian-1001"][1]["openssl"]
    assert f"pkg:deb/debian/openssl@{openssl}?arch=amd64&distro=debian-12" in purls


def test_export_spdx_of_several_vms_to_a_folder(tmp_path: Path, fleet: tuple[Path, Any]) -> None:
    db, _ = fleet
    out = tmp_path / "sboms"
    r = run("export", "--format", "spdx", "--out", str(out), "vm-debian-1000",
            "vm-alpine-1000", "vm-fedora-1000", "vm-broken", "--store", str(db), code=1)
    assert "VM vm-broken has no successful `packages` result" in r.stderr
    assert "wrote 3 spdx documents" in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "vm-alpine-1000.spdx.json", "vm-debian-1000.spdx.json", "vm-fedora-1000.spdx.json"]
    for path in out.iterdir():
        doc = JsonLikeDictParser().parse(json.loads(path.read_text()))
        assert validate_full_spdx_document(doc) == [], path.name
    r = run("export", "--format", "cyclonedx", "--store", str(db), code=2)
    assert "--out DIR" in r.stderr and r.stderr.count("\n") == 1
    r = run("export", "--format", "cyclonedx", "vm-nope", "--store", str(db), code=2)
    assert "no VM 'vm-nope'" in r.stderr  # an unknown VM is bad input, checked first
    lines = run("export", "vm-debian-1000", "--store", str(db)).stdout.splitlines()
    assert [json.loads(x)["vm"] for x in lines] == ["vm-debian-1000"]  # jsonl still works


def _debian(vm: str, *pkgs: dict[str, Any]) -> InspectResult:
    return InspectResult(vm, True, latest(vm, DEBIAN_12_OS, packages_value("deb", list(pkgs)))
                         ["results"])


def test_findings_history_drift_and_exposure(osv: Path, tmp_path: Path) -> None:
    """Three rounds recorded directly: a baseline, then an openssl fix and an
    nginx regression (finding-fixed, finding-new), then a round without the
    packages inspector (skipped: no drift, the baseline stays)."""
    db = tmp_path / "h.db"
    store = Store(db)
    index = _findings.index_for(osv)
    old_ssl, new_ssl = deb("openssl", "3.0.11-1~deb12u1"), deb("openssl", "3.0.11-1~deb12u2")
    cron = deb("cron", "3.0pl1-162")

    r1 = store.start_round(60, "pooled", 1, 1)
    store.record(r1, _debian("web", old_ssl, cron))
    reports, changes = _findings.record_round(store, r1, index, ["web"])
    assert changes == []  # the first match is a baseline
    assert {f["id"] for f in reports[0]["findings"]} == {"DSA-5532-1", "DEBIAN-CVE-2024-0001"}
    store.end_round(r1, {})

    r2 = store.start_round(60, "pooled", 1, 1)
    store.record(r2, _debian("web", new_ssl, cron, deb("nginx", "1.22.1-9")))
    # the round's end as run_round does it: findings, drift joined to the round's
    report = RoundReport(budget=60, round_id=r2,
                         results=[InspectResult("web", True, {})])
    anyio.run(_match_findings, store, report, str(osv))
    assert [(c["vm"], c["inspector"], c["kind"], c["key"]) for c in report.drift] == [
        ("web", "vulns", "finding-fixed", "DSA-5532-1:openssl"),
        ("web", "vulns", "finding-new", "DSA-9998-1:nginx")]
    assert report.findings == {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 2}
    assert report.summary()["findings"]["unknown"] == 2
    store.end_round(r2, report.summary())

    r3 = store.start_round(60, "pooled", 1, 1)
    store.record(r3, InspectResult("web", True, latest("web", DEBIAN_12_OS, None)["results"]))
    reports, changes = _findings.record_round(store, r3, index, ["web"])
    assert changes == [] and reports[0]["skipped"]
    store.end_round(r3, {})

    stored = [(c["inspector"], c["kind"], c["key"], c["round_id"]) for c in store.drift("web")
              if c["inspector"] == "vulns"]
    assert stored == [("vulns", "finding-fixed", "DSA-5532-1:openssl", r2),
                      ("vulns", "finding-new", "DSA-9998-1:nginx", r2)]
    assert {f["id"] for f in store.last_findings("web") or []} == {
        "DSA-9998-1", "DEBIAN-CVE-2024-0001"}  # round 2's: round 3 skipped it
    assert store.open_findings() == {"unknown": 2}
    assert [(e["round"], e["vms"], e["affected_vms"], e["severity"]) for e in
            store.exposure()] == [(r1, 1, 1, {"unknown": 2}), (r2, 1, 1, {"unknown": 2}),
                                  (r3, 1, 0, {})]
    assert [r["vm"] for r in store.round_findings(r2)] == ["web"]
    store.close()

    out = run("report", "--store", str(db)).stdout
    assert "exposure over time" in out
    rep = json.loads(run("report", "--store", str(db), "--json").stdout)
    assert [e["round"] for e in rep["exposure"]] == [r1, r2, r3]
    drift = run("drift", "web", "--format", "jsonl", "--store", str(db)).stdout
    assert "finding-new" in drift and "finding-fixed" in drift


def test_the_index_is_rebuilt_when_the_folder_changes(tmp_path: Path) -> None:
    folder = write_osv(tmp_path / "osv")
    first = _findings.index_for(folder)
    assert _findings.index_for(folder) is first  # unchanged: built once
    (folder / "Ubuntu" / "USN-6663-1.json").unlink()
    second = _findings.index_for(folder)
    assert second is not first and second.advisories == first.advisories - 1


@pytest.mark.appliance
def test_real_scan_of_two_demo_vms_then_vulns(shared_pool: PoolThread, demo_fleet: DemoFleet,
                                              osv: Path, tmp_path: Path) -> None:
    """A Debian and an Alpine demo VM read by a real appliance with the packages
    inspector (dpkg Source and apk origin as the guest holds them), then matched."""
    db = tmp_path / "real.db"
    store = Store(db)
    picked = {demo_fleet.truth[vm.name]["kind"]: vm for vm in demo_fleet.vms
              if demo_fleet.truth[vm.name]["kind"] in ("debian", "alpine")}
    for vm in picked.values():
        result = shared_pool.inspect(vm, ["os", "packages"])
        assert result.ok, result.error
        store.record(None, result)
    store.close()
    view = json.loads(run("vulns", "--osv", str(osv), "--json", "--store", str(db)).stdout)
    for kind, vm in picked.items():
        report = next(r for r in view["vms"] if r["vm"] == vm.name)
        got = {(f["id"], f["package"]): f["fixed"] for f in report["findings"]}
        assert got == expected_demo_findings(kind, demo_fleet.truth[vm.name]["packages"]), kind
    assert ("ALPINE-CVE-2023-42363", "busybox") in {
        (f["id"], f["package"]) for r in view["vms"] for f in r["findings"]}
