"""The round exists once: the same options run through the local pool and through
hosts over NATS (a real nats-server, agents with simulated appliances at real
time) give reports that agree field by field wherever a field means the same."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers.nats_server import NatsServer
from helpers.osv import write_osv
from test_nats import Agents, coordinated_round

from guestpool import VM, Disk, InspectResult, RoundOptions, Store, run_round, write_manifest
from guestpool.bench.hosts import sim_pool
from guestpool.bench.simulate import Costs
from guestpool.fleet._safety import SafetyPolicy
from guestpool.inspectors import resolve_specs
from guestpool.rounds._unchanged import context

COSTS = Costs(boot=(0.5, 0.0), attach=(0.05, 0.0), inspect=(0.3, 0.0), detach=(0.05, 0.0))
#: what a round's summary says that means the same on every target (not the
#: plan's prediction: one host plans from this store's costs, hosts from their own)
SAME = ("round", "budget_s", "pool", "strategy", "accel", "covered", "inspected", "unchanged",
        "failed", "not_reached", "drift_changes", "stopped_early", "vms_appeared",
        "vms_disappeared", "vms_changed", "reinspect", "findings")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", ["A"])
    yield srv
    srv.stop()


def test_one_set_of_options_means_the_same_on_both_targets(server: NatsServer,
                                                          tmp_path: Path) -> None:
    disks = tmp_path / "disks"
    disks.mkdir()
    for i in range(6):  # real files: the local pool checks them and fingerprints them
        (disks / f"A{i}.raw").write_bytes(b"\0" * 4096)
    vms = [VM(f"A-{i}", (Disk(str(disks / f"A{i}.raw"), "raw"),)) for i in range(6)]
    options = RoundOptions(budget=20, inspectors=["hostname"], batch=2,
                           osv=str(write_osv(tmp_path / "osv")), max_age=3600)

    async def local() -> dict[str, Any]:
        store = Store(tmp_path / "local.db")
        pool = sim_pool(1, COSTS, 0)
        pool.safety = SafetyPolicy(disk_roots=[str(disks)])
        report = await run_round(vms, options, store=store, pool=pool)
        store.close()
        return report.summary()

    one_host = anyio.run(local, backend="asyncio")
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, vms)
    agents = Agents(server, manifest, tmp_path / "state")
    try:
        agents.start("A", job=0.3)
        hosts = coordinated_round(server, tmp_path / "hosts.db", options, hosts=1).summary()
    finally:
        agents.close()
    assert {k: one_host.get(k) for k in SAME} == {k: hosts.get(k) for k in SAME}, \
        (one_host, hosts)
    # OSV matching ran on both (no package results here, so no finding)
    assert one_host["covered"] == 6 and one_host["findings"] == dict.fromkeys(
        ("critical", "high", "medium", "low", "unknown"), 0)
    assert one_host["reinspect"] == {"never": 6}
    assert hosts["hosts"]["A"]["covered"] == 6 and not hosts["hosts_missing"]
    assert hosts["hosts"]["A"]["jobs"] == 3  # --batch 2 over NATS: two VMs a job


def test_a_vm_inspected_on_a_host_is_counted_remote_not_silently_changed(
        server: NatsServer, tmp_path: Path) -> None:
    """Agents do not send disk metadata yet: a second round says why each VM is
    inspected again (``remote``), rather than calling its disks changed."""
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [VM(f"A-{i}", (Disk(f"/simulated/A{i}.raw", "raw"),))
                              for i in range(3)])
    db = tmp_path / "r.db"
    store = Store(db)  # a fingerprint on record, with the context the round will have
    rid = store.start_round(10, "pooled", 1, 3)
    ctx = context(resolve_specs(["hostname"]), None)
    for i in range(3):
        result = InspectResult(f"A:A-{i}", True, {})
        result.fingerprint = [{"path": f"/simulated/A{i}.raw", "format": "raw", "role": "disk"}]
        store.record(rid, result, ctx)
    store.end_round(rid, {})
    store.close()
    agents = Agents(server, manifest, tmp_path / "state")
    try:
        agents.start("A", job=0.2)
        options = RoundOptions(budget=15, inspectors=["hostname"])
        report = coordinated_round(server, db, options, hosts=1)
    finally:
        agents.close()
    assert report.reinspect == {"remote": 3} and report.changed_disks == {}
    assert len(report.inspected) == 3


def test_rounds_across_hosts_are_change_aware(tmp_path: Path) -> None:
    """Two hosts: round 1 inspects every VM; round 2 verifies every VM unchanged
    and queues no job; a disk written on its host is inspected again in round 3,
    and only it."""
    server = NatsServer(tmp_path / "nats", ["A", "B"])
    disks = tmp_path / "disks"
    disks.mkdir()
    vms = []
    for h in "AB":
        for i in range(4):
            (disks / f"{h}{i}.raw").write_bytes(b"\0" * 4096)
            vms.append(VM(f"{h}-{i}", (Disk(str(disks / f"{h}{i}.raw"), "raw"),)))
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, vms)
    agents = Agents(server, manifest, tmp_path / "state")
    db = tmp_path / "r.db"
    options = RoundOptions(budget=15, inspectors=["hostname"])
    try:
        agents.start("A", job=0.2)
        agents.start("B", job=0.2)
        first = coordinated_round(server, db, options)
        time.sleep(2.5)  # a heartbeat after the round: the agents' disk digests
        second = coordinated_round(server, db, options)
        with open(disks / "B2.raw", "r+b") as f:  # the VM's disk written on its host
            f.write(b"changed")
        time.sleep(2.5)
        third = coordinated_round(server, db, options)
    finally:
        agents.close()
        server.stop()
    assert len(first.inspected) == 8 and first.reinspect == {"never": 8}, first.summary()
    assert len(second.unchanged) == 8 and not second.inspected, second.summary()
    assert all(t.queued == 0 for t in second.hosts.values())  # no job dispatched
    assert [r.vm for r in third.inspected] == ["B:B-2"], third.summary()
    assert third.reinspect == {"changed": 1} and len(third.unchanged) == 7


@pytest.mark.parametrize("local", [{"pool": object()}, {"safety": SafetyPolicy()},
                                   {"on_event": print}, {"whole_fleet": False}])
def test_a_target_refuses_what_only_a_local_round_uses(local: dict[str, Any]) -> None:
    """A Target brings its own pool, policy and fleet: options given beside it
    would be silently ignored, so run_round refuses them."""
    from guestpool.rounds._target import LocalTarget

    target = LocalTarget([], RoundOptions())
    with pytest.raises(TypeError, match="a Target brings its own"):
        anyio.run(lambda: run_round(target, RoundOptions(), **local))
