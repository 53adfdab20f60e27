"""Offline OSV matching: a small OSV folder written here, shaped like real
Debian, Alpine, Ubuntu and Red Hat advisories, and exact expectations."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers.osv import (
    ALPINE_BUSYBOX,
    ALPINE_OPENSSH,
    DEBIAN_11,
    DLA_TILDE,
    DSA_INTRODUCED,
    DSA_OPENSSH,
    DSA_OPENSSL,
    LISTED,
    PYPI,
    RHSA,
    USN,
    advisory,
    expected_demo_findings,
    write_zip,
)
from helpers.stored_results import deb, demo_vm, latest, os_value, packages_value

from guestpool import GuestpoolError
from guestpool.supply import _matching as _vulns
from guestpool.supply import _osv

DEBIAN_12 = os_value("debian", "12", "deb", "Debian GNU/Linux 12 (bookworm)")
ALPINE_320 = os_value("alpine", "3.20.1", "apk", "Alpine Linux v3.20")


@pytest.fixture(scope="module")
def osv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every accepted layout at once: DIR/Debian/all.zip, DIR/Alpine-all.zip,
    and an unzipped DIR/Ubuntu/*.json; plus hostile and malformed entries."""
    d = tmp_path_factory.mktemp("osv")
    bad_event = advisory("DSA-0000-1", "Debian:12", "sudo",
                         [{"introduced": "0", "fixed": "1.0"}])  # two keys in one event
    bad_version = advisory("DSA-0000-2", "Debian:12", "sudo", [{"introduced": "0"},
                                                               {"fixed": "!!not a version"}])
    write_zip(d / "Debian" / "all.zip", {
        "DSA-5532-1.json": DSA_OPENSSL, "DSA-5586-1.json": DSA_OPENSSH,
        "DLA-9999-1.json": DLA_TILDE, "DSA-9998-1.json": DSA_INTRODUCED,
        "DSA-9997-1.json": DEBIAN_11, "DEBIAN-CVE-2024-0001.json": LISTED,
        "broken.json": b"{not json", "list.json": b"[1, 2, 3]",
        "noid.json": {"affected": []}, "huge.json": b" " * (_osv.Limits().max_advisory_bytes + 1),
        "DSA-0000-1.json": bad_event, "DSA-0000-2.json": bad_version,
        "withdrawn.json": {**DSA_OPENSSL, "id": "DSA-0000-3", "withdrawn": "2024-01-01T00:00Z"},
        "README.txt": b"not an advisory",
    })
    write_zip(d / "Alpine-all.zip", {"a.json": ALPINE_OPENSSH, "b.json": ALPINE_BUSYBOX})
    (d / "Ubuntu").mkdir()
    (d / "Ubuntu" / "USN-6663-1.json").write_text(json.dumps(USN))
    (d / "Red Hat").mkdir()
    (d / "Red Hat" / "RHSA-2024-1234.json").write_text(json.dumps(RHSA))
    (d / "PyPI-all.zip").write_bytes(b"PK\x03\x04 this is not a zip")
    write_zip(d / "PyPI" / "all.zip", {"p.json": PYPI})
    return d


@pytest.fixture(scope="module")
def index(osv_dir: Path) -> _vulns.OsvIndex:
    return _vulns.load_osv(osv_dir)


def findings(index: _vulns.OsvIndex, os: dict[str, Any], fmt: str,
             pkgs: list[dict[str, Any]]) -> dict[tuple[str, str], _vulns.Finding]:
    report = _vulns.match_vm(index, latest("vm", os, packages_value(fmt, pkgs)))
    assert report["skipped"] is None, report["skipped"]
    return {(f["id"], f["package"]): f for f in report["findings"]}


def test_index_reads_every_layout_and_counts_bad_entries(index: _vulns.OsvIndex) -> None:
    # 6 Debian, 2 broken Debian (found broken when first matched), 2 Alpine, Ubuntu, Red Hat
    assert index.advisories == 12
    assert set(index.ecosystems) == {"Debian:12", "Debian:11", "Alpine:v3.20", "Ubuntu:22.04",
                                     "Red Hat:9"}
    w = index.warnings
    assert w["not valid JSON"] == 1
    assert w["not an OSV advisory (no id or affected list)"] == 2  # a list, no id
    assert w["advisory over 4 MiB skipped"] == 1
    assert w["withdrawn advisory ignored"] == 1
    assert w["unreadable zip (BadZipFile)"] == 1
    assert index.newest == datetime(2024, 7, 2, 10, tzinfo=UTC)


def test_exact_match_with_fixed_version_and_aliases(index: _vulns.OsvIndex) -> None:
    got = findings(index, DEBIAN_12, "deb", [deb("openssl", "3.0.11-1~deb12u1")])
    f = got[("DSA-5532-1", "openssl")]
    assert f == {"id": "DSA-5532-1", "aliases": ["CVE-2023-5363"],
                 "summary": "openssl security update", "package": "openssl", "source": None,
                 "ecosystem": "Debian:12", "installed": "3.0.11-1~deb12u1",
                 "fixed": "3.0.11-1~deb12u2", "severity": "unknown", "score": None,
                 "cvss": None}
    assert len(got) == 1


@pytest.mark.parametrize("version", ["3.0.11-1~deb12u2", "3.0.11-1", "3.0.13-1~deb12u1",
                                     "1:1.0-1"])
def test_no_match_at_or_past_the_fixed_version(index: _vulns.OsvIndex, version: str) -> None:
    assert findings(index, DEBIAN_12, "deb", [deb("openssl", version)]) == {}


def test_tilde_sorts_before_the_release(index: _vulns.OsvIndex) -> None:
    # As strings "7.88.1-10+deb12u5" > "7.88.1-10" and "~" > "-"; Debian's
    # rules say the ~ upload is older than 7.88.1-10, the + upload newer.
    hit = findings(index, DEBIAN_12, "deb", [deb("curl", "7.88.1-10~deb12u1")])
    assert hit[("DLA-9999-1", "curl")]["fixed"] == "7.88.1-10"
    assert findings(index, DEBIAN_12, "deb", [deb("curl", "7.88.1-10+deb12u5")]) == {}
    assert findings(index, DEBIAN_12, "deb", [deb("curl", "7.88.1-10")]) == {}
    assert findings(index, DEBIAN_12, "deb", [deb("curl", "7.88.1-9")])  # 9 < 10, not "9" > "1"


def test_epochs(index: _vulns.OsvIndex) -> None:
    ssh = "openssh-server"
    # epoch 1 beats any epoch-0 version, however large its upstream part
    hit = findings(index, DEBIAN_12, "deb", [deb(ssh, "9.9p1-1", source="openssh")])
    assert hit[("DSA-5586-1", ssh)]["fixed"] == "1:9.2p1-2+deb12u2"
    assert hit[("DSA-5586-1", ssh)]["installed"] == "9.9p1-1"
    assert findings(index, DEBIAN_12, "deb", [deb(ssh, "1:9.2p1-2+deb12u1", source="openssh")])
    assert findings(index, DEBIAN_12, "deb", [deb(ssh, "1:9.2p1-2+deb12u2",
                                                  source="openssh")]) == {}
    assert findings(index, DEBIAN_12, "deb", [deb(ssh, "2:1.0-1", source="openssh")]) == {}


def test_rpm_epoch_and_red_hat_repository_names(index: _vulns.OsvIndex) -> None:
    rhel = os_value("rhel", "9.3", "rpm", "Red Hat Enterprise Linux 9.3 (Plow)")

    def rpm(version: str, release: str, epoch: int | None) -> list[dict[str, Any]]:
        return [{"name": "openssl", "version": version, "release": release, "epoch": epoch,
                 "arch": "x86_64"}]

    hit = findings(index, rhel, "rpm", rpm("3.0.7", "24.el9", 1))
    f = hit[("RHSA-2024:1234", "openssl")]
    assert (f["installed"], f["fixed"], f["severity"]) == ("1:3.0.7-24.el9", "1:3.0.7-25.el9_3",
                                                           "high")
    assert findings(index, rhel, "rpm", rpm("3.0.9", "1.el9", None))  # epoch 0 < 1
    assert findings(index, rhel, "rpm", rpm("3.0.7", "25.el9_3", 1)) == {}
    assert findings(index, rhel, "rpm", rpm("3.0.7", "27.el9", 1)) == {}


def test_source_package_matching(index: _vulns.OsvIndex) -> None:
    # Debian names advisories by source package; binaries carry it as "source"
    pkgs = [deb("openssh-server", "1:9.2p1-2+deb12u1", source="openssh"),
            deb("openssh-client", "1:9.2p1-2+deb12u1", source="openssh"),
            deb("libssl3", "3.0.11-1~deb12u1", source="openssl")]
    got = findings(index, DEBIAN_12, "deb", pkgs)
    assert sorted(got) == [("DSA-5532-1", "libssl3"), ("DSA-5586-1", "openssh-client"),
                           ("DSA-5586-1", "openssh-server")]
    assert got[("DSA-5532-1", "libssl3")]["source"] == "openssl"
    # without a source name the binary cannot be tied to the advisory
    assert findings(index, DEBIAN_12, "deb", [deb("libssl3", "3.0.11-1~deb12u1")]) == {}
    # a binNMU's source version is what the advisory's versions are about
    rebuilt = deb("libssl3", "3.0.11-1~deb12u2+b1", source="openssl")
    rebuilt["source_version"] = "3.0.11-1~deb12u1"
    assert findings(index, DEBIAN_12, "deb", [rebuilt])[("DSA-5532-1", "libssl3")]["installed"] \
        == "3.0.11-1~deb12u1"


def test_introduced_last_affected_and_listed_versions(index: _vulns.OsvIndex) -> None:
    assert findings(index, DEBIAN_12, "deb", [deb("nginx", "1.22.1-8")]) == {}  # before it
    assert findings(index, DEBIAN_12, "deb", [deb("nginx", "1.22.1-9")])
    assert findings(index, DEBIAN_12, "deb", [deb("nginx", "1.22.1-9+deb12u1")]) == {}
    hit = findings(index, DEBIAN_12, "deb", [deb("cron", "3.0pl1-162")])
    assert hit[("DEBIAN-CVE-2024-0001", "cron")]["fixed"] is None
    assert findings(index, DEBIAN_12, "deb", [deb("cron", "3.0pl1-163")]) == {}
    apk = [{"name": "busybox", "version": "1.36.1", "release": "r29", "epoch": None,
            "arch": "x86_64"}]
    assert findings(index, ALPINE_320, "apk", apk)[("ALPINE-CVE-2023-42363", "busybox")][
        "fixed"] is None  # last_affected: no fix yet
    apk[0]["release"] = "r30"
    assert findings(index, ALPINE_320, "apk", apk) == {}


def test_malformed_entries_do_not_hide_good_ones(index: _vulns.OsvIndex) -> None:
    # "sudo" has two broken advisories; matching them warns and finds nothing
    assert findings(index, DEBIAN_12, "deb", [deb("sudo", "1.9.13p3-1+deb12u1")]) == {}
    assert index.warnings["malformed affected entry ignored"] == 1
    assert index.warnings["unparseable deb version in a range ignored"] == 1
    assert findings(index, DEBIAN_12, "deb", [deb("openssl", "3.0.11-1~deb12u1")])


def test_other_releases_and_ecosystems_do_not_match(index: _vulns.OsvIndex) -> None:
    assert findings(index, DEBIAN_12, "deb", [deb("bash", "5.2.15-2+b2")]) == {}  # Debian:11 only
    bookworm_ubuntu = os_value("ubuntu", "22.04", "deb", "Ubuntu 22.04.4 LTS")
    hit = findings(index, bookworm_ubuntu, "deb", [deb("openssl", "3.0.2-0ubuntu1.14")])
    assert hit[("USN-6663-1", "openssl")]["severity"] == "medium"
    assert findings(index, bookworm_ubuntu, "deb", [deb("openssl", "3.0.2-0ubuntu1.15")]) == {}


@pytest.mark.parametrize("kind", ["debian", "alpine", "fedora"])
def test_demo_fleet_results(index: _vulns.OsvIndex, tmp_path: Path, kind: str) -> None:
    """The demo fleet's package databases (planted vulnerable versions in about
    half the VMs), parsed by the real inspector parsers: exactly the planted
    advisories with their fixed versions; VMs at the fixed version have none."""
    seen_vulnerable = seen_fixed = 0
    for seed in range(1000, 1016):  # the demo's first 16 VMs' seeds
        latest_, versions = demo_vm(kind, tmp_path, seed)
        report = _vulns.match_vm(index, latest_)
        got = {(f["id"], f["package"]): f["fixed"] for f in report["findings"]}
        assert got == expected_demo_findings(kind, versions), (seed, versions)
        if kind == "fedora":
            assert "no advisories for fedora 40" in str(report["skipped"])
            continue
        planted = versions["openssh-server"] in ("9.7_p1-r3", "1:9.2p1-2+deb12u1")
        seen_vulnerable += planted
        seen_fixed += not planted
    if kind == "alpine":
        f = _vulns.match_vm(index, demo_vm(kind, tmp_path / "again", 1003)[0])["findings"][0]
        assert (f["id"], f["source"], f["installed"], f["severity"], f["score"]) == (
            "ALPINE-CVE-2024-6387", "openssh", "9.7_p1-r3", "high", 8.1)  # through apk's o:
    if kind != "fedora":
        assert seen_vulnerable >= 3 and seen_fixed >= 3


def test_fleet_table_counts_and_diff(index: _vulns.OsvIndex) -> None:
    old = latest("a", DEBIAN_12, packages_value("deb", [deb("openssl", "3.0.11-1~deb12u1"),
                                                       deb("curl", "7.88.1-10~deb12u1")]))
    new = latest("a", DEBIAN_12, packages_value("deb", [deb("openssl", "3.0.11-1~deb12u2"),
                                                       deb("curl", "7.88.1-10~deb12u1"),
                                                       deb("nginx", "1.22.1-9")]))
    other = latest("b", ALPINE_320, packages_value("apk", [
        {"name": "openssh", "version": "9.7_p1", "release": "r3", "epoch": None, "arch": "x"}]))
    empty = latest("c", DEBIAN_12, None)
    reports = _vulns.match_fleet(index, [old, other, empty, None])
    assert [r["vm"] for r in reports] == ["a", "b", "c"]
    assert "no successful `packages` result" in str(reports[2]["skipped"])
    table = _vulns.fleet_table(reports)
    assert [r["id"] for r in table] == ["ALPINE-CVE-2024-6387", "DLA-9999-1", "DSA-5532-1"]
    assert table[0]["vms"] == ["b"] and table[0]["fixed"] == ["9.7_p1-r4"]
    assert _vulns.severity_counts(reports) == {"critical": 0, "high": 1, "medium": 0, "low": 0,
                                               "unknown": 2}
    before = _vulns.match_vm(index, old)["findings"]
    after = _vulns.match_vm(index, new)["findings"]
    changes = _vulns.diff_findings(before, after)
    assert [(c["kind"], c["key"]) for c in changes] == [
        ("finding-fixed", "DSA-5532-1:openssl"), ("finding-new", "DSA-9998-1:nginx")]
    assert changes[0]["before"]["fixed"] == "3.0.11-1~deb12u2" and changes[0]["after"] is None
    assert set(changes[0]) == {"inspector", "kind", "key", "before", "after"}


def test_missing_or_empty_folder_says_how_to_fill_it(tmp_path: Path) -> None:
    for folder in (tmp_path / "absent", tmp_path):
        with pytest.raises(GuestpoolError) as e:
            _vulns.load_osv(folder)
        msg = str(e.value)
        assert "\n" not in msg
        assert "/Debian/all.zip" in msg and "curl" in msg
    write_zip(tmp_path / "PyPI" / "all.zip", {"p.json": PYPI})  # no distribution advisories
    with pytest.raises(GuestpoolError, match="no Linux distribution advisories"):
        _vulns.load_osv(tmp_path)


def test_bounds_on_hostile_folders(tmp_path: Path) -> None:
    members = {f"DSA-{i}.json": {**DSA_OPENSSL, "id": f"DSA-{i}"} for i in range(50)}
    write_zip(tmp_path / "Debian" / "all.zip", members)
    idx = _vulns.load_osv(tmp_path, _osv.Limits(max_advisories=10))
    assert idx.advisories == 10
    assert idx.warnings["advisory count or total size bound reached; rest ignored"] == 1
    # a member whose header understates its size is read only up to the bound
    bomb = tmp_path / "bomb"
    write_zip(bomb / "Debian" / "all.zip", {"x.json": DSA_OPENSSL,
                                            "y.json": b"[" * 2_000_000})
    idx = _vulns.load_osv(bomb, _osv.Limits(max_advisory_bytes=1_000_000))
    assert idx.advisories == 1 and idx.warnings["advisory over 0 MiB skipped"] == 1


def test_staleness(index: _vulns.OsvIndex) -> None:
    assert _vulns.staleness(index, now=datetime(2024, 7, 5, tzinfo=UTC)) is None
    msg = _vulns.staleness(index, now=datetime(2024, 9, 1, tzinfo=UTC))
    assert msg is not None and "61 days old" in msg and "curl" in msg


@pytest.mark.parametrize(("distro", "version", "expected"), [
    ("debian", "12", "Debian:12"), ("debian", "12.0", "Debian:12"),
    ("ubuntu", "22.04", "Ubuntu:22.04"), ("ubuntu", "22.4", "Ubuntu:22.04"),
    ("alpine", "3.20.1", "Alpine:v3.20"), ("rhel", "9.3", "Red Hat:9"),
    ("almalinux", "9.4", "AlmaLinux:9"), ("rocky", "8.10", "Rocky Linux:8"),
    ("sles", "15.5", "SUSE:Linux Enterprise Server 15 SP5"),
    ("opensuse-leap", "15.5", "openSUSE:Leap 15.5"), ("fedora", "40", None),
    ("debian", "", None),
])
def test_ecosystem_of_a_distribution(distro: str, version: str, expected: str | None) -> None:
    from guestpool.supply._distro import distro as distro_of
    product = {"almalinux": "AlmaLinux 9.4 (Seafoam Ocelot)"}.get(distro, "")
    dist = distro_of(latest("v", os_value(distro, version, "deb", product), None))
    assert _vulns.ecosystem(dist) == expected


TRICKY_DEB = ["1.0", "1.0-1", "1.0-1~bpo1", "1.0~rc1-1", "1.0+dfsg-1", "1:0.9-1", "1.0-1+b1",
              "1.0-10", "1.0-9", "1.0.1-1", "1.0a-1", "2:0", "1.0-1~deb12u1", "1.0-1+deb12u1",
              "0.9~~a", "0.9~", "0.9", "1.0-1build1", "1.0-0ubuntu0.22.04.1"]


@pytest.mark.skipif(shutil.which("dpkg") is None, reason="needs dpkg as the reference")
@pytest.mark.parametrize("fixed", TRICKY_DEB)
def test_debian_ranges_agree_with_dpkg(tmp_path: Path, fixed: str) -> None:
    """dpkg itself decides: installed is affected iff it sorts below fixed."""
    write_zip(tmp_path / "Debian" / "all.zip", {"a.json": advisory(
        "DSA-1", "Debian:12", "p", [{"introduced": "0"}, {"fixed": fixed}])})
    idx = _vulns.load_osv(tmp_path)
    for installed in TRICKY_DEB:
        lower = subprocess.run(["dpkg", "--compare-versions", installed, "lt", fixed]).returncode
        got = findings(idx, DEBIAN_12, "deb", [deb("p", installed)])
        assert bool(got) == (lower == 0), (installed, fixed)


def test_the_bench_matches_a_small_synthetic_fleet() -> None:
    from guestpool.bench import vulns as bench
    figures = bench.run(vms=8, packages=60, advisories=400, universe_size=200)
    assert figures["skipped_vms"] == 0 and figures["findings"] > 0
    assert figures["vms_with_findings"] == 8


def test_source_packages_from_the_package_databases(index: _vulns.OsvIndex) -> None:
    """dpkg's ``Source:`` (with a binNMU's source version) and apk's ``o:``
    origin, parsed by the packages inspector, tie binaries to advisories."""
    from guestpool.inspectors._inventory import PackagesInspector
    status = (
        "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\n"
        "Source: openssl\nVersion: 3.0.11-1~deb12u1\n\n"
        "Package: openssh-server\nStatus: install ok installed\nArchitecture: amd64\n"
        "Source: openssh (1:9.2p1-2+deb12u1)\nVersion: 1:9.2p1-2+deb12u1+b1\n\n"
        "Package: libssl-doc\nStatus: deinstall ok config-files\nArchitecture: all\n"
        "Source: openssl\nVersion: 3.0.11-1~deb12u1\n")
    pkgs = PackagesInspector._dpkg(status)
    assert [p.get("source") for p in pkgs] == ["openssl", "openssh"]
    assert pkgs[1]["source_version"] == "1:9.2p1-2+deb12u1"
    got = findings(index, DEBIAN_12, "deb", pkgs)
    assert got[("DSA-5586-1", "openssh-server")]["installed"] == "1:9.2p1-2+deb12u1"
    assert sorted(got) == [("DSA-5532-1", "libssl3"), ("DSA-5586-1", "openssh-server")]
    apk = PackagesInspector._apk("C:Q1x=\nP:openssh-server\nV:9.7_p1-r3\nA:x86_64\n"
                                 "o:openssh\n\nC:Q1y=\nP:musl\nV:1.2.5-r0\nA:x86_64\no:musl\n")
    assert [p["source"] for p in apk] == ["openssh", "musl"]
    assert ("ALPINE-CVE-2024-6387", "openssh-server") in findings(index, ALPINE_320, "apk", apk)


def test_a_vm_without_an_os_result_says_what_to_scan(index: _vulns.OsvIndex) -> None:
    report = _vulns.match_vm(index, latest("v", None, packages_value("deb", [deb("a", "1")])))
    assert report["skipped"] == (
        "no `os` result tells its distribution: scan it with the os inspector")
