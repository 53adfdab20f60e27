"""Offline vulnerability matching at fleet scale: synthetic VMs' stored
package lists (Debian 12, Ubuntu 22.04, Alpine 3.20, RHEL 9) against a
generated OSV folder, timed as load (read + index) and match.

SYNTHETIC — no appliance boots; the OSV folder is written here, shaped like
the real exports (one all.zip per ecosystem). ``versions_per_package`` sets
how much VMs share: real fleets are clones and share most versions; a large
value approaches every VM having its own versions (memoisation never hits).

    python -m guestpool.bench.vulns --vms 1000 --packages 400 --advisories 3000
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestpool.supply import _matching as _vulns

LABEL = "SYNTHETIC"


@dataclass(frozen=True)
class _Distro:
    os_id: str
    version: str
    fmt: str
    ecosystem: str  # as OSV spells it in the export
    folder: str


DISTROS = (
    _Distro("debian", "12", "deb", "Debian:12", "Debian"),
    _Distro("ubuntu", "22.04", "deb", "Ubuntu:22.04:LTS", "Ubuntu"),
    _Distro("alpine", "3.20.1", "apk", "Alpine:v3.20", "Alpine"),
    _Distro("rhel", "9.4", "rpm", "Red Hat:enterprise_linux:9::baseos", "Red Hat"),
)


def _upload(d: _Distro, base: str, k: int) -> tuple[int | None, str, str]:
    """The k-th upload of a package (ascending): (epoch, version, release)."""
    if d.os_id == "debian":
        return None, base, ["1", "1+deb12u1", "1+deb12u2", "2~deb12u1", "2", "2+deb12u1"][k % 6] \
            + ("" if k < 6 else f"+b{k}")
    if d.os_id == "ubuntu":
        return None, base, f"0ubuntu0.22.04.{k}"
    if d.os_id == "alpine":
        return None, base, f"r{k}"
    return (1 if k >= 3 else None), base, f"{k + 1}.el9"


def _full(epoch: int | None, version: str, release: str) -> str:
    return (f"{epoch}:" if epoch else "") + f"{version}-{release}"


def _universe(rng: random.Random, size: int) -> list[tuple[str, str]]:
    return [(f"pkg{i:05d}", f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 99)}")
            for i in range(size)]


def write_fixture(folder: Path, advisories: int, universe: list[tuple[str, str]],
                  versions_per_package: int, seed: int) -> None:
    """OSV exports, one all.zip per ecosystem, with ``advisories`` entries."""
    rng = random.Random(seed)
    per: dict[str, list[dict[str, Any]]] = {d.folder: [] for d in DISTROS}
    for i in range(advisories):
        d = DISTROS[i % len(DISTROS)]
        name, base = rng.choice(universe)
        fixed_k = rng.randint(1, max(1, versions_per_package - 1))
        events: list[dict[str, str]] = [{"introduced": "0"}]
        if rng.random() < 0.9:  # one in ten has no fix yet
            events.append({"fixed": _full(*_upload(d, base, fixed_k))})
        doc: dict[str, Any] = {
            "id": f"SYN-{d.folder.replace(' ', '')}-{i:06d}", "modified": "2026-01-01T00:00:00Z",
            "aliases": [f"CVE-2026-{i:05d}"], "summary": f"{name} synthetic advisory",
            "affected": [{"package": {"ecosystem": d.ecosystem, "name": name},
                          "ranges": [{"type": "ECOSYSTEM", "events": events}]}]}
        if rng.random() < 0.5:
            doc["severity"] = [{"type": "CVSS_V3", "score": rng.choice([
                "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
                "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N",
                "CVSS:3.1/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N"])}]
        per[d.folder].append(doc)
    for sub, docs in per.items():
        (folder / sub).mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(folder / sub / "all.zip", "w", zipfile.ZIP_DEFLATED) as zf:
            for doc in docs:
                zf.writestr(f"{doc['id']}.json", json.dumps(doc))


def synthetic_fleet(vms: int, packages: int, universe: list[tuple[str, str]],
                    versions_per_package: int, seed: int) -> list[dict[str, Any]]:
    """``vms`` results in ``Store.latest`` shape, a mix of the four distributions."""
    rng = random.Random(seed)
    fleet = []
    for i in range(vms):
        d = DISTROS[i % len(DISTROS)]
        pkgs = []
        for name, base in rng.sample(universe, packages):
            epoch, version, release = _upload(d, base, rng.randrange(versions_per_package))
            row: dict[str, Any] = {"name": name, "version": version, "release": release,
                                   "epoch": epoch, "arch": "x86_64"}
            if d.fmt != "rpm" and rng.random() < 0.2:  # a binary of that source package
                row = {**row, "name": f"lib{name}", "source": name}
            pkgs.append(row)
        os_value = {"type": "linux", "distro": {"alpine": "alpinelinux"}.get(d.os_id, d.os_id),
                    "version": d.version, "product_name": "", "arch": "x86_64",
                    "package_format": d.fmt}
        fleet.append({"vm": f"syn{i:05d}-{d.os_id}", "at": 1.7e9, "results": {
            "os": {"ok": True, "value": os_value},
            "packages": {"ok": True, "value": {"format": d.fmt, "count": len(pkgs),
                                               "packages": pkgs}}}})
    return fleet


def run(vms: int = 1000, packages: int = 400, advisories: int = 3000,
        versions_per_package: int = 6, universe_size: int = 2000, seed: int = 7
        ) -> dict[str, Any]:
    """Generate, load, match; the figures as a JSON-able dict."""
    rng = random.Random(seed)
    universe = _universe(rng, universe_size)
    fleet = synthetic_fleet(vms, packages, universe, versions_per_package, seed)
    with tempfile.TemporaryDirectory(prefix="guestpool-osv-") as tmp:
        write_fixture(Path(tmp), advisories, universe, versions_per_package, seed)
        t0 = time.perf_counter()
        index = _vulns.load_osv(tmp)
        t1 = time.perf_counter()
        reports = _vulns.match_fleet(index, fleet)
        t2 = time.perf_counter()
        table = _vulns.fleet_table(reports)
        t3 = time.perf_counter()
    findings = sum(len(r["findings"]) for r in reports)
    return {
        "label": LABEL, "vms": vms, "packages_per_vm": packages, "advisories": advisories,
        "versions_per_package": versions_per_package, "universe": universe_size,
        "load_seconds": round(t1 - t0, 3), "match_seconds": round(t2 - t1, 3),
        "table_seconds": round(t3 - t2, 3), "findings": findings,
        "vms_with_findings": sum(1 for r in reports if r["findings"]),
        "advisories_hit": len(table), "skipped_vms": sum(1 for r in reports if r["skipped"]),
        "distinct_lookups": len(index._memo), "severity": _vulns.severity_counts(reports),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m guestpool.bench.vulns", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--vms", type=int, default=1000)
    p.add_argument("--packages", type=int, default=400)
    p.add_argument("--advisories", type=int, default=3000)
    p.add_argument("--versions-per-package", type=int, default=6,
                   help="uploads per package VMs choose from (large: little sharing)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args(argv)
    figures = run(args.vms, args.packages, args.advisories, args.versions_per_package,
                  seed=args.seed)
    text = json.dumps(figures, indent=2)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print(f"{LABEL}: {figures['vms']} VMs x {figures['packages_per_vm']} packages against "
          f"{figures['advisories']} advisories: load {figures['load_seconds']} s, "
          f"match {figures['match_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
