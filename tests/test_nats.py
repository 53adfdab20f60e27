"""Several hosts on a real nats-server: agents with simulated appliances (no
qemu) at real time, the real coordinator, and faults that must lose nothing."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import nats
import pytest
from helpers.nats_server import NatsServer
from helpers.server import AUTH, Server
from prometheus_client.parser import text_string_to_metric_families

from guestpool import VM, Disk, RoundOptions, Store, run_round, write_manifest
from guestpool.nats import HostsRoundReport, HostsTarget, open_coordinator
from guestpool.nats._connect import connected
from guestpool.nats._subjects import JOBS_STREAM

TESTS = Path(__file__).parent
HOSTS = ["A", "B", "C"]
OPTIONS = RoundOptions(budget=20, inspectors=["hostname"])


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", HOSTS)
    yield srv
    srv.stop()


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    path = tmp_path / "fleet.json"
    write_manifest(path, [VM(f"{h}-{i}", (Disk(f"/simulated/{h}{i}.raw", "raw"),))
                          for h in HOSTS for i in range(6)])
    return path


class Agents:
    """Simulated agents in child processes, ended by pid when the test ends."""

    def __init__(self, server: NatsServer, manifest: Path, state: Path) -> None:
        self.server, self.manifest, self.state = server, manifest, state
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, hosts: str, job: float = 1.0, boot: float = 0.5, pool: int = 1
              ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "helpers.nats_agent", self.server.url,
             str(self.server.folder / "conf"), str(self.manifest), hosts, "--state",
             str(self.state), "--pool", str(pool), "--job", str(job), "--boot", str(boot)],
            cwd=TESTS, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def agents(server: NatsServer, manifest: Path, tmp_path: Path) -> Iterator[Agents]:
    a = Agents(server, manifest, tmp_path / "state")
    yield a
    a.close()


def coordinated_round(server: NatsServer, db: Path, options: RoundOptions = OPTIONS,
                      hosts: int = 2, announced: int = 0) -> HostsRoundReport:
    """Wait until ``hosts`` agents announce themselves ready (and ``announced``
    announce themselves at all), then run one round."""
    async def main() -> HostsRoundReport:
        store = Store(db)
        async with open_coordinator(server.settings(), store) as coordinator:
            with anyio.fail_after(30):
                while True:
                    known = (await coordinator.hosts()).values()
                    if sum(i.ready and i.alive(time.time()) for i in known) >= hosts \
                            and len(known) >= announced:
                        break
                    await anyio.sleep(0.2)
            report = await run_round(HostsTarget(coordinator), options, store=store)
            assert isinstance(report, HostsRoundReport)
            return report

    return anyio.run(main, backend="asyncio")


def stored(db: Path, round_id: int) -> list[str]:
    """The VMs stored for a round; none while the coordinator has only just created
    the file (its tables come a moment later)."""
    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        if not c.execute("SELECT 1 FROM sqlite_master WHERE name='results'").fetchone():
            return []
        return [r[0] for r in c.execute("SELECT vm FROM results WHERE round_id=?", (round_id,))]


def later(seconds: float, action: object) -> threading.Timer:
    timer = threading.Timer(seconds, action)  # type: ignore[arg-type]
    timer.start()
    return timer


def assert_once(names: list[str], hosts: str) -> None:
    """Each host's six VMs, each once, named across hosts as ``HOST:NAME``."""
    assert sorted(names) == sorted(f"{h}:{h}-{i}" for h in hosts for i in range(6)), names


def test_round_covers_both_hosts_once(server: NatsServer, agents: Agents,
                                      tmp_path: Path) -> None:
    agents.start("A")
    agents.start("B")
    report = coordinated_round(server, tmp_path / "r.db")
    assert len(report.covered) == 12 and not report.not_reached, report.summary()
    assert report.hosts["A"].covered == report.hosts["B"].covered == 6
    assert_once(stored(tmp_path / "r.db", report.round_id or 0), "AB")
    assert report.elapsed <= OPTIONS.budget


def test_agent_sigkilled_mid_job_loses_nothing(server: NatsServer, agents: Agents,
                                               tmp_path: Path) -> None:
    first = agents.start("A", job=1.5)
    agents.start("B", job=1.5)

    def kill_and_restart() -> None:
        os.kill(first.pid, signal.SIGKILL)  # it holds a job: appliance busy since ~1 s
        first.wait()
        agents.start("A", job=1.5)

    timer = later(4.0, kill_and_restart)
    report = coordinated_round(server, tmp_path / "r.db")
    timer.join()
    assert first.returncode == -signal.SIGKILL
    assert report.elapsed <= OPTIONS.budget + 3
    # the job the killed agent held was handed back by its successor and done
    assert len(report.covered) == 12, report.summary()
    assert_once(stored(tmp_path / "r.db", report.round_id or 0), "AB")
    # per-host figures: A's successor booted during the round, B's pool was warm
    assert report.hosts["A"].boots == 1 and report.hosts["B"].boots == 0, report.summary()
    assert report.boots == 1 and report.accel == "tcg"
    assert report.hosts["A"].job_steps_median_s["job"] > 0


def test_nats_server_restart_mid_round_loses_nothing(server: NatsServer, agents: Agents,
                                                      tmp_path: Path) -> None:
    agents.start("A,B")
    timer = later(3.0, lambda: server.restart(down=1.0))
    report = coordinated_round(server, tmp_path / "r.db")
    timer.join()
    assert report.elapsed <= OPTIONS.budget + 3
    assert len(report.covered) == 12, report.summary()
    assert_once(stored(tmp_path / "r.db", report.round_id or 0), "AB")


def scan_command(server: NatsServer, db: Path, budget: float) -> list[str]:
    return [sys.executable, "-m", "guestpool", "scan", "--nats", server.url, "--nats-password-file",
            str(server.password_file("coordinator")), "--store", str(db), "--budget",
            str(budget), "--inspectors", "hostname", "--json"]


def test_coordinator_sigkilled_mid_round_results_stored_on_restart(
        server: NatsServer, agents: Agents, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    agents.start("A,B", job=1.0)
    time.sleep(3)  # both announced and booted
    coordinator = subprocess.Popen(scan_command(server, db, 15), stdout=subprocess.DEVNULL)
    end = time.monotonic() + 20
    while time.monotonic() < end and len(stored(db, 1)) < 3:
        time.sleep(0.1)
    os.kill(coordinator.pid, signal.SIGKILL)
    coordinator.wait()
    killed_with = len(stored(db, 1))
    assert 3 <= killed_with < 12
    time.sleep(8)  # the agents finish round 1 meanwhile; its results wait in the stream
    restarted = time.time()
    again = subprocess.run(scan_command(server, db, 10), capture_output=True, text=True,
                           timeout=30)
    summary = json.loads(again.stdout)
    assert summary["round"] == 2 and summary["covered"] == 12, summary
    assert summary["elapsed_s"] <= 10 + 3
    assert_once(stored(db, 1), "AB")  # round 1: every result, each once
    assert_once(stored(db, 2), "AB")
    with sqlite3.connect(db) as c:
        last = c.execute("SELECT max(at) FROM results WHERE round_id=1").fetchone()[0]
    assert last >= restarted  # the rest of round 1 waited in the stream for the restart


def test_host_that_never_answers_is_not_reached_and_a_silent_one_missing(
        server: NatsServer, agents: Agents, tmp_path: Path) -> None:
    agents.start("A,B", job=0.3)  # 6 VMs each fit the budget even on a busy machine
    silent = agents.start("C", boot=1000)  # announces itself, never gets an appliance
    db = tmp_path / "r.db"
    options = RoundOptions(budget=10, inspectors=["hostname"])
    report = coordinated_round(server, db, options, announced=3)
    assert report.elapsed <= 10 + 3
    assert report.hosts["C"].not_reached == 6 and report.hosts["C"].queued == 6
    assert report.hosts["A"].covered == report.hosts["B"].covered == 6
    assert not report.hosts_missing
    silent.kill()
    silent.wait()
    time.sleep(4.5)  # three heartbeats and a second
    second = coordinated_round(server, db, options)
    assert second.hosts_missing == ["C"] and second.hosts["C"].queued == 0
    assert second.hosts["C"].not_reached == 6 and len(second.covered) == 12


@pytest.mark.parametrize("nkeys", [False, True], ids=["passwords", "nkeys"])
def test_host_credentials_cannot_pull_another_hosts_jobs(tmp_path: Path, nkeys: bool) -> None:
    server = NatsServer(tmp_path / "nats", ["A", "B"], nkeys=nkeys)
    try:
        _cannot_pull_another_hosts_jobs(server)
    finally:
        server.stop()


def _cannot_pull_another_hosts_jobs(server: NatsServer) -> None:
    async def main() -> tuple[list[str], bytes]:
        async with connected(server.settings(), "admin") as admin:
            js = admin.jetstream()
            from guestpool.nats._connect import ensure_host, ensure_streams

            await ensure_streams(js)
            for host in ("A", "B"):
                await ensure_host(js, host)
                await js.publish(f"guestpool.jobs.{host}", f"job of {host}".encode())
        errors: list[str] = []

        async def on_error(e: Exception) -> None:
            errors.append(str(e))

        async with connected(server.settings("A"), "agent-A", "A", on_error) as nc:
            js = nc.jetstream()
            theirs = await js.pull_subscribe_bind("host-B", JOBS_STREAM)
            with pytest.raises(nats.errors.TimeoutError):
                await theirs.fetch(1, timeout=1.5)
            await nc.publish("guestpool.results.B", b"forged")
            mine = await js.pull_subscribe_bind("host-A", JOBS_STREAM)
            (msg,) = await mine.fetch(1, timeout=3)
            await msg.ack()
            await nc.flush()
        async with connected(server.settings("B"), "agent-B", "B") as nc:
            (theirs_left,) = await (await nc.jetstream().pull_subscribe_bind(
                "host-B", JOBS_STREAM)).fetch(1, timeout=3)
        return [e.lower() for e in errors], msg.data, theirs_left.data

    errors, own, left = anyio.run(main, backend="asyncio")
    assert own == b"job of A" and left == b"job of B"  # B's job untouched by A
    assert any("permissions violation for publish to "
               "\"$js.api.consumer.msg.next.guestpool_jobs.host-b\"" in e for e in errors), errors
    assert any("publish to \"guestpool.results.b\"" in e for e in errors), errors


def test_service_scans_across_hosts_and_shows_them(server: NatsServer, agents: Agents,
                                                   tmp_path: Path) -> None:
    agents.start("A,B")
    srv = Server(tmp_path / "s.db", "--nats", server.url, "--nats-password-file",
                 str(server.password_file("coordinator")))
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=10)
        end = time.monotonic() + 20
        while sum(h["alive"] and h["ready"] for h in c.get("/hosts").json()["hosts"]) < 2:
            assert time.monotonic() < end, c.get("/hosts").json()
            time.sleep(0.3)
        r = c.post("/scans", json={"budget": 15, "inspectors": ["hostname"]})
        assert r.status_code == 202, r.text
        end = time.monotonic() + 30
        while (s := c.get(f"/scans/{r.json()['id']}").json())["state"] not in ("done", "failed"):
            assert time.monotonic() < end
            time.sleep(0.3)
        assert s["state"] == "done" and s["summary"]["covered"] == 12, s
        hosts = {h["host"]: h for h in c.get("/hosts").json()["hosts"]}
        assert {h: v["last_round"]["covered"] for h, v in hosts.items()} == {"A": 6, "B": 6}
        metrics = {f.name: f for f in text_string_to_metric_families(c.get("/metrics").text)}
        samples = {tuple(x.labels.values()): x.value for x in metrics["guestpool_host_vms"].samples}
        assert samples[("A", "covered")] == samples[("B", "covered")] == 6
        assert 'id="hosts"' in c.get("/").text
        srv.stop()
        assert srv.proc.returncode == 0  # SIGTERM: a clean stop, no CancelledError
    finally:
        srv.stop()


def test_a_job_longer_than_the_ack_wait_is_kept_by_in_progress_acks(
        server: NatsServer, agents: Agents) -> None:
    async def main() -> int:
        from guestpool.nats._connect import ensure_host, ensure_streams
        from guestpool.nats._messages import Job, encode

        async with connected(server.settings(), "admin") as nc:
            js = nc.jetstream()
            await ensure_streams(js)
            await ensure_host(js, "A", ack_wait=2.0)  # the agent reads it when it binds
            await js.publish("guestpool.jobs.A", encode(Job(1, "A", "A-0", time.time() + 30, [])))
            agents.start("A", job=6.0)
            spy = await js.pull_subscribe_bind("host-A", JOBS_STREAM)
            await anyio.sleep(6)  # boot 0.5 s, then the job holds its appliance for 6 s
            with pytest.raises(nats.errors.TimeoutError):  # not given to anyone else
                await spy.fetch(1, timeout=1.0)
            results = await js.pull_subscribe("guestpool.results.A", stream="GUESTPOOL_RESULTS")
            await results.fetch(1, timeout=10)  # the result came
            return int((await js.consumer_info(JOBS_STREAM, "host-A")).num_redelivered)

    assert anyio.run(main, backend="asyncio") == 0
