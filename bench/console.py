"""Console pages at fleet scale: a store filled with SYNTHETIC rows (VMs ×
rounds, no appliance) served by a real `guestpool serve --paused` on loopback,
and the render time of its pages measured over HTTP.

The rows follow the store's schema and the shapes the inspectors store (the
os inspector's value, a packages value with its count and list), so the
console's code path is the production one; package lists are kept short
(``packages`` entries) to keep the store small, which only flatters the
one-time catch-up, not the pages.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from guestpool import VM, Disk, Store
from guestpool.store import _fleetview as fleetview

from .service_load import TOKEN, running_server

LABEL = "SYNTHETIC"
DISTROS = (("debian", "12", "deb"), ("debian", "11", "deb"), ("ubuntu", "22.04", "deb"),
           ("ubuntu", "24.04", "deb"), ("fedora", "40", "rpm"), ("rhel", "9.4", "rpm"),
           ("alpine", "3.20", "apk"))
FAILURES = (("image", "qcow2 header is corrupt"), ("timeout", "inspection deadline exceeded"),
            ("appliance", "the appliance died during the job"))


def vm_name(i: int) -> str:
    return f"vm-{i:05d}"


def fill_store(path: Path, vms: int = 10_000, rounds: int = 10, packages: int = 40,
               seed: int = 1, fail_rate: float = 0.03, carry_rate: float = 0.8) -> None:
    """Add ``rounds`` rounds over ``vms`` synthetic VMs to the store at ``path``
    (a fresh store gets the fleet first). Each round: every VM attempted; a VM whose
    last attempt was good is verified unchanged with probability ``carry_rate`` (a
    row carrying its inspection, as monitoring's steady state writes), the others
    inspected, about ``fail_rate`` failing, a few per cent drifting; one
    transaction per round."""
    rng = random.Random(seed)
    store = Store(path)
    db = store.db
    if not store.has_vm(vm_name(0)):
        store.sync_fleet([VM(vm_name(i), (Disk(f"/srv/images/{vm_name(i)}.qcow2", "qcow2"),),
                             trust_group=f"tenant-{i % 20}") for i in range(vms)])
    base = (db.execute("SELECT MAX(id) FROM rounds").fetchone()[0] or 0)
    facts: dict[str, tuple[int, float]] = {}  # VM -> (its inspection's row, when)
    for r in range(rounds):
        rid = store.start_round(300, "pooled", 32, vms)
        t0 = time.time() - (rounds - r) * 300
        db.execute("BEGIN")
        failed = 0
        for i in range(vms):
            name = vm_name(i)
            distro, version, fmt = DISTROS[i % len(DISTROS)]
            at = t0 + i * 0.02
            if name in facts and rng.random() < carry_rate:
                db.execute(
                    "INSERT INTO results (round_id, vm, at, ok, error, strategy, attempts,"
                    " timings, state, inspected_at, carried_from) VALUES"
                    " (?, ?, ?, 1, 'null', 'pooled', 0, ?, 'unchanged', ?, ?)",
                    (rid, name, at, json.dumps({"verify": 0.0001, "total": 0.0001}),
                     facts[name][1], facts[name][0]))
                continue
            ok = rng.random() >= fail_rate
            job = {"wait": 0.0, "attach": 0.3, "inspect": rng.gauss(1.8, 0.3), "detach": 0.1}
            job["job"] = job["total"] = sum(job.values())
            error = None if ok else dict(zip(("kind", "message"), rng.choice(FAILURES),
                                             strict=True))
            failed += not ok
            cur = db.execute(
                "INSERT INTO results (round_id, vm, at, ok, error, appliance, strategy,"
                " attempts, timings, state, inspected_at) VALUES"
                " (?, ?, ?, ?, ?, ?, 'pooled', 1, ?, ?, ?)",
                (rid, name, at, int(ok), json.dumps(error), i % 32, json.dumps(job),
                 "inspected" if ok else "failed", at if ok else None))
            if not ok:
                facts.pop(name, None)  # a failed VM is inspected next time
                continue
            facts[name] = (int(cur.lastrowid or 0), at)
            os_value = {"type": "linux", "distro": distro, "version": version,
                        "product_name": f"{distro.title()} {version}", "hostname": name,
                        "arch": "x86_64", "package_format": fmt, "root": "/dev/sda1"}
            pkgs = [{"name": f"pkg{(i + k) % 2000}", "version": f"1.{base + r}",
                     "release": "1", "epoch": None, "arch": "x86_64"}
                    for k in range(packages)]
            db.executemany("INSERT INTO inspector_results VALUES (?, ?, '1', 1, ?, 'null', ?)", [
                (cur.lastrowid, "os", json.dumps(os_value), 0.4),
                (cur.lastrowid, "packages", json.dumps({"format": fmt, "count": len(pkgs),
                                                        "packages": pkgs}), 0.9)])
            if rng.random() < 0.05:
                db.executemany(
                    "INSERT INTO changes (vm, round_id, at, inspector, kind, key, before, after)"
                    " VALUES (?, ?, ?, 'packages', 'package-changed', ?, ?, ?)",
                    [(name, rid, at, f"pkg{k}", '"1.0"', '"1.1"') for k in range(3)])
        db.execute("UPDATE vms SET last_scanned=?", (t0 + vms * 0.02,))
        db.execute("COMMIT")
        store.end_round(rid, {"round": rid, "covered": vms - failed, "failed": failed,
                              "not_reached": 0, "boots": 32,
                              "boot_mean_s": round(rng.gauss(18.5, 0.5), 2),
                              "elapsed_s": 290.0})
    store.close()


PAGES = {
    "overview": "/",
    "fleet": "/fleet",
    "fleet, filtered": "/fleet?distro=ubuntu&state=inspected&sort=age",
    "fleet, search + page 3": "/fleet?q=vm-01&sort=packages&desc=1&page=3",
    "failed VMs": "/fleet?state=failed",
    "one VM": f"/fleet/{vm_name(1234)}",
}


def _timed(client: httpx.Client, path: str) -> float:
    t = time.perf_counter()
    r = client.get(path)
    elapsed = time.perf_counter() - t
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:200]}")
    return 1000 * elapsed


def measure(path: Path, repeat: int = 20, add_round: bool = True,
            vms: int = 10_000) -> dict[str, Any]:
    """Milliseconds per page (median, p95 over ``repeat`` GETs) from a paused
    server on the store; the first GET's catch-up of the read models is
    reported apart, and so is the catch-up after one more round."""
    out: dict[str, Any] = {"label": LABEL, "repeat": repeat, "pages": {}}
    t = time.perf_counter()  # what `serve` does at start: the read models from nothing
    store = Store(path)
    fleetview.refresh(store)
    store.close()
    out["build_read_models_ms"] = 1000 * (time.perf_counter() - t)
    with running_server(path, "--paused") as url, \
            httpx.Client(base_url=url, timeout=300,
                         headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        out["first_read_ms"] = _timed(c, "/fleet")
        for label, page in PAGES.items():
            if page.startswith("/fleet/") and "vm-" in page and vms <= 1234:
                page = f"/fleet/{vm_name(0)}"
            times = sorted(_timed(c, page) for _ in range(repeat))
            out["pages"][label] = {"path": page, "median_ms": statistics.median(times),
                                   "p95_ms": times[max(0, int(0.95 * len(times)) - 1)]}
        if add_round:
            fill_store(path, vms=vms, rounds=1, seed=99)
            out["after_new_round_ms"] = _timed(c, "/fleet")
    return out
