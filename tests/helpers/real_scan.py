"""One small real scan kept in a store: the demo fleet's Debian, Fedora and
Alpine VMs inspected by the shared pool (real appliances), recorded as one
round; the demo's data-disk VM is in the fleet but never inspected."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from guestpool import Store
from helpers.fleet import DemoFleet
from helpers.pool_thread import PoolThread

INSPECTORS = ["os", "packages", "filesystems", "users"]
KINDS = ("debian", "fedora", "alpine")


def scan_into(store_path: Path, fleet: DemoFleet, pool: PoolThread) -> dict[str, str]:
    """Scan one VM of each kind in KINDS into a new store; returns kind -> VM name."""
    by_kind = {fleet.truth[vm.name]["kind"]: vm for vm in fleet.one_of_each()}
    store = Store(store_path)
    store.sync_fleet([by_kind[k] for k in (*KINDS, "data")])
    rid = store.start_round(300, "pooled", 2, len(KINDS))
    start = time.monotonic()
    covered = 0
    for kind in KINDS:
        # the shared pool's appliances serve the "default" trust group
        r = pool.inspect(dataclasses.replace(by_kind[kind], trust_group="default"), INSPECTORS)
        assert r.ok, r.error
        store.record(rid, r)
        covered += 1
    store.end_round(rid, {"covered": covered, "failed": 0, "not_reached": 0, "boots": 0,
                          "elapsed_s": round(time.monotonic() - start, 2)})
    store.close()
    return {k: by_kind[k].name for k in (*KINDS, "data")}
