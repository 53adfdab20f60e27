"""A small OSV folder shaped like real Debian, Alpine, Ubuntu and Red Hat
advisories (written by the tests: nothing is fetched), matching the demo
fleet's planted package versions."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any


def ecosystem_range(*events: dict[str, str]) -> list[dict[str, Any]]:
    return [{"type": "ECOSYSTEM", "events": list(events)}]


def advisory(id: str, ecosystem: str, name: str, events: list[dict[str, str]], *,
             aliases: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"schema_version": "1.6.0", "id": id, "modified": "2024-07-02T10:00:00Z",
            "published": "2024-07-01T00:00:00Z", "aliases": aliases or [],
            "summary": f"{name} security update",
            "affected": [{"package": {"ecosystem": ecosystem, "name": name,
                                      "purl": f"pkg:deb/debian/{name}?arch=source"},
                          "ranges": ecosystem_range(*events)}], **extra}


# Shapes of real advisories: Debian's are per source package, ECOSYSTEM ranges.
DSA_OPENSSL = advisory("DSA-5532-1", "Debian:12", "openssl",
                       [{"introduced": "0"}, {"fixed": "3.0.11-1~deb12u2"}],
                       aliases=["CVE-2023-5363"])
DSA_OPENSSH = advisory("DSA-5586-1", "Debian:12", "openssh",  # the source of openssh-server
                       [{"introduced": "0"}, {"fixed": "1:9.2p1-2+deb12u2"}],
                       aliases=["CVE-2023-48795", "CVE-2023-51385"])
DLA_TILDE = advisory("DLA-9999-1", "Debian:12", "curl",  # fixed in the unsuffixed upload
                     [{"introduced": "0"}, {"fixed": "7.88.1-10"}], aliases=["CVE-2099-0001"])
DSA_INTRODUCED = advisory("DSA-9998-1", "Debian:12", "nginx",  # a regression and its fix
                          [{"introduced": "1.22.1-9"}, {"fixed": "1.22.1-9+deb12u1"}])
DEBIAN_11 = advisory("DSA-9997-1", "Debian:11", "bash", [{"introduced": "0"},
                                                         {"fixed": "9:9.9-9"}])
ALPINE_OPENSSH = advisory(
    "ALPINE-CVE-2024-6387", "Alpine:v3.20", "openssh",
    [{"introduced": "0"}, {"fixed": "9.7_p1-r4"}], aliases=["CVE-2024-6387"],
    severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:H/A:H"}])
ALPINE_BUSYBOX = advisory("ALPINE-CVE-2023-42363", "Alpine:v3.20", "busybox",
                          [{"introduced": "0"}, {"last_affected": "1.36.1-r29"}])
USN = advisory("USN-6663-1", "Ubuntu:22.04:LTS", "openssl",
               [{"introduced": "0"}, {"fixed": "3.0.2-0ubuntu1.15"}],
               severity=[{"type": "Ubuntu", "score": "medium"}])
RHSA = {"id": "RHSA-2024:1234", "modified": "2024-06-01T00:00:00Z", "aliases": ["CVE-2024-0727"],
        "summary": "openssl security update", "database_specific": {"severity": "Important"},
        "affected": [{"package": {"ecosystem": "Red Hat:enterprise_linux:9::baseos",
                                  "name": "openssl"},
                      "ranges": ecosystem_range({"introduced": "0"},
                                                {"fixed": "1:3.0.7-25.el9_3"})}]}
LISTED = {"id": "DEBIAN-CVE-2024-0001", "modified": "2024-01-01T00:00:00Z",  # versions only
          "affected": [{"package": {"ecosystem": "Debian:12", "name": "cron"},
                        "versions": ["3.0pl1-162"]}]}
PYPI = advisory("PYSEC-2024-1", "PyPI", "requests", [{"introduced": "0"}, {"fixed": "2.32.0"}])


def write_zip(path: Path, members: dict[str, bytes | dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, body in members.items():
            zf.writestr(name, body if isinstance(body, bytes) else json.dumps(body))


def write_osv(folder: Path) -> Path:
    """The good advisories in every accepted layout: DIR/Debian/all.zip,
    DIR/Alpine-all.zip, DIR/Ubuntu/*.json, DIR/Red Hat/*.json."""
    write_zip(folder / "Debian" / "all.zip", {
        f"{a['id']}.json": a for a in (DSA_OPENSSL, DSA_OPENSSH, DLA_TILDE, DSA_INTRODUCED,
                                       DEBIAN_11, LISTED)})
    write_zip(folder / "Alpine-all.zip", {"a.json": ALPINE_OPENSSH, "b.json": ALPINE_BUSYBOX})
    (folder / "Ubuntu").mkdir(parents=True, exist_ok=True)
    (folder / "Ubuntu" / "USN-6663-1.json").write_text(json.dumps(USN))
    (folder / "Red Hat").mkdir(parents=True, exist_ok=True)
    (folder / "Red Hat" / "RHSA-2024-1234.json").write_text(json.dumps(RHSA))
    return folder


def expected_demo_findings(kind: str, versions: dict[str, str]
                           ) -> dict[tuple[str, str], str | None]:
    """(advisory, package) -> fixed version a demo VM must be reported with,
    from the package versions pool/demo/_fleet.py wrote for it (its ground truth)."""
    want: dict[tuple[str, str], str | None] = {}
    if kind == "alpine":
        want[("ALPINE-CVE-2023-42363", "busybox")] = None  # at last_affected: no fix yet
        if versions["openssh-server"] == "9.7_p1-r3":
            want[("ALPINE-CVE-2024-6387", "openssh-server")] = "9.7_p1-r4"
        return want
    if kind == "fedora":
        return want
    want[("DEBIAN-CVE-2024-0001", "cron")] = None  # a listed version
    if versions["openssl"] == "3.0.11-1~deb12u1":
        want[("DSA-5532-1", "openssl")] = want[("DSA-5532-1", "libssl3")] = "3.0.11-1~deb12u2"
    if versions["openssh-server"] == "1:9.2p1-2+deb12u1":
        want[("DSA-5586-1", "openssh-server")] = "1:9.2p1-2+deb12u2"
    if versions["nginx"] == "1.22.1-9":
        want[("DSA-9998-1", "nginx")] = "1.22.1-9+deb12u1"
    return want
