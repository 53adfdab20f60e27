"""Identity comes from the channel, not the message: on a real nats-server with
the per-host users of ``nats-config``, a host can store results only for its
own VMs, only in an open round, and cannot make the server drop another host's
result as a duplicate, nor announce itself as another host."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from helpers.nats_server import NatsServer
from test_nats import Agents, assert_once, coordinated_round, stored

from guestpool import VM, Disk, Store, write_manifest
from guestpool.nats import HostsRoundReport, open_coordinator
from guestpool.nats._connect import connected, ensure_streams
from guestpool.nats._coordinator import Coordinator
from guestpool.nats._messages import HostInfo, JobResult, encode
from guestpool.nats._subjects import HOSTS_BUCKET, results_subject

HOSTS = ["A", "B", "C"]
SIX_EACH = [f"{h}-{i}" for h in "AB" for i in range(6)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", HOSTS)
    yield srv
    srv.stop()


def result(vm: str, hostname: str) -> dict[str, object]:
    return {"vm": vm, "ok": True, "results": {"hostname": {
        "inspector": "hostname", "version": "1", "ok": True, "value": hostname, "seconds": 0.01}},
        "timings": {"attach": 0.1, "inspect": 0.2, "detach": 0.1}}


def inventory(host: str, names: list[str]) -> bytes:
    vms = [VM(n, (Disk(f"/simulated/{n}.raw", "raw"),)) for n in names]
    return encode(HostInfo(host, time.time(), 2.0, 1, "pooled", {}, vms, ready=True))


async def announce(server: NatsServer, host: str, info: bytes) -> None:
    """Put a heartbeat under ``host``'s own key, with ``host``'s credentials."""
    async with connected(server.settings(host), f"agent-{host}", host) as nc:
        kv = await nc.jetstream().key_value(HOSTS_BUCKET)
        await kv.put(host, info)


async def send(server: NatsServer, host: str, message: JobResult, msg_id: str) -> None:
    """Publish on ``host``'s own results subject, with ``host``'s credentials."""
    async with connected(server.settings(host), f"agent-{host}", host) as nc:
        ack = await nc.jetstream().publish(results_subject(host), encode(message),
                                           headers={"Nats-Msg-Id": msg_id}, timeout=5.0)
        assert not ack.duplicate


async def settled(coordinator: Coordinator, handled: int) -> None:
    with anyio.fail_after(15):
        while coordinator.stored + coordinator.duplicates + sum(
                coordinator.refused.values()) < handled:
            await anyio.sleep(0.05)


def hostnames(db: Path, round_id: int) -> dict[str, object]:
    store = Store(db)
    try:
        return {r["vm"]: r["results"].get("hostname", {}).get("value")
                for r in store.results(round_id=round_id)}
    finally:
        store.close()


def two_hosts(server: NatsServer, tmp_path: Path, names: list[str], *stores: str
              ) -> list[HostsRoundReport]:
    """Agents of hosts A and B (simulated appliances) with the VMs ``names``
    (``A-…`` on A, ``B-…`` on B, ``any-…`` on both), and one round per store."""
    manifest = tmp_path / "fleet.json"
    write_manifest(manifest, [VM(n, (Disk(f"/simulated/{n}.raw", "raw"),)) for n in names])
    agents = Agents(server, manifest, tmp_path / "state")
    try:
        agents.start("A")
        agents.start("B")
        return [coordinated_round(server, tmp_path / db) for db in stores]
    finally:
        agents.close()


def test_a_result_counts_only_from_the_host_that_owns_the_vm(server: NatsServer,
                                                             tmp_path: Path) -> None:
    db = tmp_path / "c.db"

    async def main() -> tuple[dict[str, int], int, int]:
        setup = Store(db)
        closed = setup.start_round(30, "pooled", 1, None)
        setup.end_round(closed, {})
        open_round = setup.start_round(30, "pooled", 1, None)  # as a killed coordinator left it
        uid, closed_uid = setup.round_uid(open_round), setup.round_uid(closed)
        setup.close()
        async with connected(server.settings(), "admin") as nc:
            await ensure_streams(nc.jetstream())
        await announce(server, "A", inventory("A", ["A-0"]))
        await announce(server, "B", inventory("B", ["B-0"]))
        store = Store(db)
        async with open_coordinator(server.settings(), store) as coordinator:
            await coordinator.hosts()
            # host A, on its own permitted subject, claims host B and B's VM
            await send(server, "A", JobResult(open_round, "B", result("B-0", "forged"), uid),
                       "f1")
            # ... names itself but B's VM, then a VM nobody announced
            await send(server, "A", JobResult(open_round, "A", result("B-0", "forged"), uid),
                       "f2")
            await send(server, "A", JobResult(open_round, "A", result("ghost", "forged"), uid),
                       "f3")
            # ... its own VM, for a round that has ended, one that never began, and
            # another store's round of the same number
            await send(server, "A", JobResult(closed, "A", result("A-0", "late"), closed_uid),
                       "f4")
            await send(server, "A", JobResult(open_round + 7, "A", result("A-0", "x"), uid),
                       "f5")
            await send(server, "A", JobResult(open_round, "A", result("A-0", "x"), "other"),
                       "f6")
            await send(server, "A", JobResult(open_round, "A", {"vm": 3}, uid), "f7")
            # the owners' own results
            await send(server, "B", JobResult(open_round, "B", result("B-0", "b-real"), uid),
                       "b1")
            await send(server, "A", JobResult(open_round, "A", result("A-0", "a-real"), uid),
                       "a1")
            await settled(coordinator, 9)
            refused = dict(coordinator.refused)
            stored_count = coordinator.stored
        store.close()
        return refused, stored_count, open_round

    refused, stored_count, open_round = anyio.run(main, backend="asyncio")
    assert refused == {"wrong-host": 1, "not-announced": 2, "round-closed": 3, "malformed": 1}
    assert stored_count == 2
    assert hostnames(db, open_round) == {"A:A-0": "a-real", "B:B-0": "b-real"}


def test_no_host_can_make_the_server_drop_anothers_result(server: NatsServer,
                                                          tmp_path: Path) -> None:
    """Host A publishes, before the round, results under every id it could guess for
    B's VMs in round 1; B's real results are stored all the same."""
    async def preempt() -> None:
        async with connected(server.settings(), "admin") as nc:
            await ensure_streams(nc.jetstream())
        for i in range(6):
            forged = JobResult(1, "A", result(f"B-{i}", "forged"))
            for guess in (f"result:1:B-{i}", f"result:1:B:B-{i}:", f"result:1:A:B-{i}:"):
                await send(server, "A", forged, guess)

    anyio.run(preempt, backend="asyncio")
    (report,) = two_hosts(server, tmp_path, SIX_EACH, "r.db")
    assert report.hosts["B"].covered == 6, report.summary()
    assert_once(stored(tmp_path / "r.db", report.round_id or 0), "AB")
    assert "forged" not in hostnames(tmp_path / "r.db", report.round_id or 0).values()


def test_a_host_cannot_announce_itself_as_another(server: NatsServer, tmp_path: Path) -> None:
    async def main() -> set[str]:
        async with connected(server.settings(), "admin") as nc:
            await ensure_streams(nc.jetstream())
        await announce(server, "A", inventory("B", ["B-0", "B-1"]))  # its own key, B's name
        await announce(server, "C", inventory("C", ["C-0"]))
        store = Store(tmp_path / "h.db")
        async with open_coordinator(server.settings(), store) as coordinator:
            hosts = set(await coordinator.hosts())
        store.close()
        return hosts

    assert anyio.run(main, backend="asyncio") == {"C"}


def test_a_coordinator_given_a_new_store_covers_every_vm(server: NatsServer,
                                                         tmp_path: Path) -> None:
    """Its first round is numbered 1 again: its jobs are not the old round 1's
    duplicates, and the old round's results are not this round's."""
    first, second = two_hosts(server, tmp_path, SIX_EACH, "first.db", "second.db")
    assert first.round_id == second.round_id == 1
    for report, db in ((first, "first.db"), (second, "second.db")):
        assert len(report.covered) == 12 and not report.not_reached, report.summary()
        assert_once(stored(tmp_path / db, 1), "AB")
        assert not any(t.duplicate_jobs for t in report.hosts.values())


def test_the_same_vm_name_on_two_hosts_is_two_vms(server: NatsServer, tmp_path: Path) -> None:
    # every host's agent has them all
    (report,) = two_hosts(server, tmp_path, [f"any-{i}" for i in range(4)], "r.db")
    names = sorted(stored(tmp_path / "r.db", report.round_id or 0))
    assert names == sorted(f"{h}:any-{i}" for h in "AB" for i in range(4)), report.summary()
    assert report.hosts["A"].covered == report.hosts["B"].covered == 4
    assert not report.not_reached
