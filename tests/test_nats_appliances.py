"""Two hosts with real appliances: `guestpool agent` twice (separate processes,
separate fleets) and `guestpool scan --nats`, on a real nats-server."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet
from helpers.nats_server import NatsServer

from guestpool import write_manifest

pytestmark = pytest.mark.appliance


@pytest.fixture
def server(tmp_path: Path) -> Iterator[NatsServer]:
    srv = NatsServer(tmp_path / "nats", ["A", "B"])
    yield srv
    srv.stop()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ", 1)[1][0] != "Z"


def test_two_hosts_with_real_appliances(demo_fleet: DemoFleet, server: NatsServer,
                                        tmp_path: Path) -> None:
    vms = [dataclasses.replace(v, trust_group="default") for v in demo_fleet.vms[:6]]
    fleets = {"A": vms[:3], "B": vms[3:]}
    agents = {}
    try:
        for host, own in fleets.items():
            manifest = tmp_path / f"{host}.json"
            write_manifest(manifest, own)
            agents[host] = subprocess.Popen(
                [sys.executable, "-m", "guestpool", "agent", str(manifest), "--host", host,
                 "--nats", server.url, "--nats-password-file",
                 str(server.password_file(f"agent-{host}")), "--pool", "1",
                 "--allow-path", str(demo_fleet.manifest.parent)],
                stdout=subprocess.DEVNULL, stderr=open(tmp_path / f"{host}.log", "w"))  # noqa: SIM115
        db = tmp_path / "r.db"
        budget = 240
        scan = subprocess.run(
            [sys.executable, "-m", "guestpool", "scan", "--nats", server.url,
             "--nats-password-file", str(server.password_file("coordinator")), "--store", str(db),
             "--budget", str(budget), "--inspectors", "hostname", "--json"],
            capture_output=True, text=True, timeout=budget + 30)
        summary = json.loads(scan.stdout)
        assert summary["covered"] == 6 and not summary["not_reached"], summary
        assert {h: t["covered"] for h, t in summary["hosts"].items()} == {"A": 3, "B": 3}
        for r in summary["vms"]:
            host, _, own_name = r["vm"].partition(":")  # named across hosts: HOST:NAME
            assert r["results"]["hostname"]["value"] == \
                demo_fleet.truth[own_name]["os"].get("hostname"), r
        with sqlite3.connect(db) as c:
            rows = sorted(v for (v,) in c.execute("SELECT vm FROM results"))
        assert rows == sorted(f"{h}:{v.name}" for h, own in fleets.items() for v in own)
        # an agent SIGKILLed leaves no qemu behind: its workers die with it
        qemus = {r["qemu_pid"] for r in summary["vms"] if r["vm"].startswith("A:")}
        assert qemus and all(alive(p) for p in qemus)
        os.kill(agents["A"].pid, signal.SIGKILL)
        agents["A"].wait()
        end = time.monotonic() + 10
        while time.monotonic() < end and any(alive(p) for p in qemus):
            time.sleep(0.2)
        assert not any(alive(p) for p in qemus), qemus
    finally:
        for proc in agents.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
