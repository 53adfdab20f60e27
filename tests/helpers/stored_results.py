"""Stored results (``Store.latest`` shape) without an appliance: the demo
fleet's package databases, written by pool/demo/_fleet.py and parsed by the real
packages inspector's parsers, and hand-made package lists."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from guestpool.demo import _fleet as demo
from guestpool.inspectors import _rpmdb as rpmdb
from guestpool.inspectors._inventory import PackagesInspector
from guestpool.inspectors._osfacts import distro_of_os_release_id
from guestpool.inspectors._sandbox import sqlite_blobs

PRODUCT = {"debian": "Debian GNU/Linux 12 (bookworm)", "fedora": "Fedora Linux 40 (Server Edition)",
           "alpine": "Alpine Linux v3.20"}


def os_value(distro: str, version: str, fmt: str, product: str = "") -> dict[str, Any]:
    """What the os inspector stores (its cheap path)."""
    return {"type": "linux", "distro": distro_of_os_release_id(distro) or distro,
            "version": version,
            "product_name": product, "hostname": "h", "arch": "x86_64",
            "package_format": fmt, "package_management": "?", "root": "/dev/sda1",
            "mountpoints": {"/": "/dev/sda1"}, "method": "cheap"}


def latest(vm: str, os: dict[str, Any] | None, packages: dict[str, Any] | None,
           at: float = 1_732_000_000.0) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if os is not None:
        results["os"] = {"inspector": "os", "version": "1", "ok": True, "value": os,
                         "error": None, "seconds": 0.1}
    if packages is not None:
        results["packages"] = {"inspector": "packages", "version": "1", "ok": True,
                               "value": packages, "error": None, "seconds": 0.1}
    return {"vm": vm, "at": at, "round": 1, "ok": True, "error": None, "appliance": 0,
            "strategy": "pooled", "timings": {}, "results": results}


def packages_value(fmt: str, pkgs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"format": fmt, "count": len(pkgs), "packages": pkgs}


def demo_latest(kind: str, tmp: Path, seed: int = 1) -> dict[str, Any]:
    """The result the demo fleet's ``kind`` VM gives: its package database as
    pool/demo/_fleet.py writes it, parsed by PackagesInspector's own parsers."""
    return demo_vm(kind, tmp, seed)[0]


def demo_vm(kind: str, tmp: Path, seed: int = 1) -> tuple[dict[str, Any], dict[str, str]]:
    """``demo_latest`` and the package versions the demo wrote (its ground truth).
    The demo fleet's VM number i has seed 1000 + i."""
    root = tmp / f"root-{kind}-{seed}"
    root.mkdir(parents=True)
    versions = demo._packages(root, kind, random.Random(seed))
    if kind == "debian":
        fmt = "deb"
        pkgs = PackagesInspector._dpkg((root / "var/lib/dpkg/status").read_text())
    elif kind == "alpine":
        fmt = "apk"
        pkgs = PackagesInspector._apk((root / "lib/apk/db/installed").read_text())
    else:
        fmt = "rpm"
        blobs = sqlite_blobs((root / "var/lib/rpm/rpmdb.sqlite").read_bytes(), limit=10_000,
                             deadline=30.0)
        pkgs = [{"name": p["name"], "version": p.get("version", ""),
                 "release": p.get("release", ""), "epoch": p.get("epoch"),
                 "arch": p.get("arch", "")}
                for blob in blobs if (p := rpmdb.parse_header(blob)) is not None]
    os = os_value(kind, demo._version_id(kind), fmt, PRODUCT[kind])
    return latest(f"vm-{kind}-{seed}", os, packages_value(fmt, pkgs)), versions


def deb(name: str, version: str, *, source: str | None = None, arch: str = "amd64"
        ) -> dict[str, Any]:
    """A dpkg package row, split as the packages inspector splits it."""
    epoch: int | None = None
    if ":" in version:
        e, version = version.split(":", 1)
        epoch = int(e)
    ver, _, rel = version.rpartition("-") if "-" in version else (version, "", "")
    row: dict[str, Any] = {"name": name, "version": ver, "release": rel, "epoch": epoch,
                           "arch": arch}
    if source:
        row["source"] = source
    return row


DEBIAN_12_OS = os_value("debian", "12", "deb", "Debian GNU/Linux 12 (bookworm)")
