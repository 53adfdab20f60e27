"""Bench: one coordinator and many hosts on a real nats-server.

SIMULATION of the appliances only — they sleep for the measured costs, at real
time (no virtual clock: NATS, the agents and the coordinator are real). The
agents run in a few processes (many agent objects each), the coordinator in
this one, so its CPU time and peak RSS are measured alone.

    python -m guestpool.bench.hosts --hosts 100 --pool 20 --vms 40 --budget 60
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from guestpool import VM, Appliance, Disk, Pool, RoundOptions, SafetyPolicy, Store, run_round
from guestpool.nats import (
    Coordinator,
    HostsRoundReport,
    HostsTarget,
    NatsSettings,
    open_coordinator,
    write_config,
)
from guestpool.nats._agent import Agent
from guestpool.nats._config import COORDINATOR_USER, agent_user
from guestpool.nats._connect import connected
from guestpool.rounds._plan import DEFAULT_COSTS

from .simulate import Costs, SimAppliance

LABEL = "SIMULATION (appliances only)"


def sim_pool(size: int, costs: Costs, seed: int, safety: SafetyPolicy | None = None) -> Pool:
    """A pool of the simulator's appliances, at real time; no safety checks (the
    disks do not exist) unless ``safety`` (disks that do: checked and
    fingerprinted as a real pool does)."""
    rng = random.Random(seed)

    async def spawn() -> Appliance:
        return SimAppliance(costs, rng)

    return Pool(size, accel="tcg", max_jobs=10**9, safety=safety, spawn=spawn)


def settings(url: str, passwords: Path, host: str | None) -> NatsSettings:
    user = agent_user(host) if host else COORDINATOR_USER
    return NatsSettings(url, user=user,
                        password=(passwords / f"{user}.password").read_text().strip())


async def run_sim_agents(url: str, passwords: Path, fleets: dict[str, list[VM]], pool: int,
                         costs: Costs, state: Path, heartbeat: float = 1.0,
                         safety: SafetyPolicy | None = None) -> None:
    """One agent per host of ``fleets``, all in this process, each with its own
    connection and a pool of ``pool`` simulated appliances; until cancelled."""
    async def one(i: int, host: str, vms: list[VM]) -> None:
        async with connected(settings(url, passwords, host), f"sim-agent-{host}", host) as nc:
            agent = Agent(nc, host, None, sim_pool(pool, costs, i, safety), vms=vms,
                          state_dir=state, heartbeat=heartbeat)
            await agent.run()

    async with anyio.create_task_group() as tg:
        for i, (host, vms) in enumerate(sorted(fleets.items())):
            tg.start_soon(one, i, host, vms)


def sim_fleet(host: str, count: int, disks: Path | None = None) -> list[VM]:
    """``host``'s VMs; with ``disks``, each with a real (tiny) disk file there, so
    agents check and fingerprint it as a real pool does."""
    if disks is None:
        return [VM(f"{host}-{i}", (Disk(f"/simulated/{host}/{i}.raw", "raw"),))
                for i in range(count)]
    (disks / host).mkdir(parents=True, exist_ok=True)
    vms = []
    for i in range(count):
        path = disks / host / f"{i}.raw"
        if not path.exists():
            path.write_bytes(b"\0" * 4096)
        vms.append(VM(f"{host}-{i}", (Disk(str(path), "raw"),)))
    return vms


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _coordinate(url: str, passwords: Path, db: Path, hosts: int, budget: float,
                      disks: Path | None = None, change: float = 0.01) -> dict[str, Any]:
    """One round, as the agents are warm; with ``disks`` (real files the agents
    fingerprint) a second one after ``change`` of the disks were written."""
    store = Store(db)
    async with open_coordinator(settings(url, passwords, None), store) as coordinator:
        t = time.monotonic()
        with anyio.fail_after(300):
            while sum(i.ready and i.alive(time.time())
                      for i in (await coordinator.hosts()).values()) < hosts:
                await anyio.sleep(0.5)
        warm = time.monotonic() - t
        out = {"hosts": hosts, "budget_s": budget, "agents_warm_s": round(warm, 1),
               **await _one_round(coordinator, store, budget)}
        if disks is not None:
            await anyio.sleep(2.5)  # a heartbeat: the agents' digests of what they inspected
            files = sorted(disks.rglob("*.raw"))
            changed = random.Random(7).sample(files, round(change * len(files)))
            for path in changed:
                with open(path, "r+b") as f:
                    f.write(b"written")
            await anyio.sleep(2.5)
            second = await _one_round(coordinator, store, budget)
            out["round2"] = {**second, "disks_written": len(changed)}
    out["store_mb"] = round(sum(f.stat().st_size for f in db.parent.glob(db.name + "*"))
                            / 2**20, 1)  # with its write-ahead log
    store.close()
    return out


async def _one_round(coordinator: Coordinator, store: Store, budget: float) -> dict[str, Any]:
    cpu0, refused0 = time.process_time(), coordinator.refused["round-closed"]
    report = await run_round(HostsTarget(coordinator),
                             RoundOptions(budget=budget, inspectors=["hostname"]), store=store)
    assert isinstance(report, HostsRoundReport)
    cpu = time.process_time() - cpu0
    await anyio.sleep(3)  # late results: refused, the round is closed
    s = report.summary()
    done = len(report.inspected) + len(report.failed)
    return {"elapsed_s": round(report.elapsed, 2), "lateness_s": round(report.elapsed - budget, 2),
            "covered": s["covered"], "inspected": s["inspected"], "unchanged": s["unchanged"],
            "failed": s["failed"], "not_reached": s["not_reached"],
            "reinspect": s.get("reinspect", {}),
            "verify_unchanged_s": round(sum(r.timings.get("verify", 0.0) for r in report.unchanged),
                                        3),
            "jobs_queued": sum(t.jobs for t in report.hosts.values()),
            "predicted": s["predicted"], "hosts_missing": len(s["hosts_missing"]),
            "results_per_s": round(done / report.elapsed, 1),
            "coordinator_cpu_s": round(cpu, 2),
            "coordinator_cpu_share": round(cpu / report.elapsed, 3),
            "coordinator_cpu_ms_per_vm": round(1000 * cpu / max(1, len(report.results)), 2),
            "load_average_1m": round(os.getloadavg()[0], 1),
            "coordinator_max_rss_mb": round(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "refused_after_round_end": coordinator.refused["round-closed"] - refused0}


async def _drain(url: str, passwords: Path, db: Path, count: int) -> dict[str, Any]:
    """The coordinator's own ceiling: ``count`` results already waiting in the
    stream (as after a coordinator restart), stored as fast as it can."""
    from guestpool.nats._messages import HostInfo, JobResult, encode
    from guestpool.nats._subjects import HOSTS_BUCKET, result_id, results_subject

    store = Store(db)
    round_id = store.start_round(60, "pooled", 0, None)
    async with connected(settings(url, passwords, None), "bench-publisher") as nc:
        js = nc.jetstream()
        from guestpool.nats._connect import ensure_streams

        await ensure_streams(js)
        # a result counts only for a VM its host announced
        kv = await js.key_value(HOSTS_BUCKET)
        await kv.put("h000", encode(HostInfo(
            "h000", time.time(), 2.0, 1, "pooled", {},
            [VM(f"drain-{i}", (Disk(f"/simulated/drain-{i}.raw", "raw"),)) for i in range(count)])))
        for i in range(count):
            result = {"vm": f"drain-{i}", "ok": True, "results": {"hostname": {
                "inspector": "hostname", "version": "1", "ok": True, "value": f"vm{i}",
                "seconds": 0.01}}, "timings": {"attach": 0.1, "inspect": 1.2, "detach": 0.1}}
            await js.publish(results_subject("h000"), encode(JobResult(round_id, "h000", result)),
                             headers={"Nats-Msg-Id": result_id(round_id, "h000", f"drain-{i}", "")})
    cpu0, t0 = time.process_time(), time.monotonic()
    async with open_coordinator(settings(url, passwords, None), store) as coordinator:
        while coordinator.stored < count:
            await anyio.sleep(0.05)
        seconds = time.monotonic() - t0
    cpu = time.process_time() - cpu0
    store.close()
    return {"drain_results": count, "drain_s": round(seconds, 2),
            "drain_results_per_s": round(count / seconds, 1),
            "drain_cpu_ms_per_result": round(1000 * cpu / count, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hosts", type=int, default=100)
    p.add_argument("--pool", type=int, default=20, help="simulated appliances per host")
    p.add_argument("--vms", type=int, default=40, help="VMs per host")
    p.add_argument("--budget", type=float, default=60.0)
    p.add_argument("--job", type=float, default=DEFAULT_COSTS["job"],
                   help="mean seconds of one VM's inspection (attach+inspect+detach)")
    p.add_argument("--procs", type=int, default=4, help="processes the agents share")
    p.add_argument("--change-aware", type=float, default=None, metavar="SHARE",
                   help="real disk files, and a second round after SHARE of them were "
                        "written (0.01: 1%%)")
    p.add_argument("--disks", type=Path, default=None, help=argparse.SUPPRESS)  # internal
    p.add_argument("--drain", type=int, default=0, metavar="N",
                   help="then time the coordinator storing N results waiting in the stream")
    p.add_argument("--agents", nargs=4, metavar=("URL", "PASSWORDS", "FIRST", "COUNT"),
                   help=argparse.SUPPRESS)  # internal: one agents process
    a = p.parse_args()
    costs = Costs(boot=(2.0, 0.2), attach=(a.job * 0.1, 0.01), inspect=(a.job * 0.8, 0.2),
                  detach=(a.job * 0.1, 0.01))
    names = [f"h{i:03d}" for i in range(a.hosts)]
    if a.agents:
        url, passwords, first, count = a.agents
        chosen = names[int(first):int(first) + int(count)]
        state = Path(passwords).parent / "state"
        safety = SafetyPolicy(disk_roots=[str(a.disks)]) if a.disks else None
        anyio.run(run_sim_agents, url, Path(passwords),
                  {h: sim_fleet(h, a.vms, a.disks) for h in chosen}, a.pool, costs, state, 1.0,
                  safety, backend="asyncio")
        return
    folder = Path(tempfile.mkdtemp(prefix="guestpool-bench-hosts-"))
    port = _free_port()
    write_config(folder / "conf", names, port=port, store_dir=str(folder / "js"))
    url = f"nats://127.0.0.1:{port}"
    server = subprocess.Popen(["nats-server", "-c", str(folder / "conf" / "nats-server.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = []
    disks = folder / "disks" if a.change_aware is not None else None
    if disks is not None:
        for name in names:
            sim_fleet(name, a.vms, disks)
    try:
        time.sleep(1)
        share = -(-a.hosts // a.procs)
        for first in range(0, a.hosts, share):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "guestpool.bench.hosts", "--hosts", str(a.hosts),
                 "--pool", str(a.pool), "--vms", str(a.vms), "--job", str(a.job),
                 "--agents", url, str(folder / "conf"), str(first), str(share),
                 *(["--disks", str(disks)] if disks else [])]))
        out = anyio.run(_coordinate, url, folder / "conf", folder / "r.db", a.hosts, a.budget,
                        disks, a.change_aware or 0.0, backend="asyncio")
        out.update(label=LABEL, pool_per_host=a.pool, vms_per_host=a.vms, job_s=a.job,
                   agent_processes=len(procs))
        for proc in procs:
            proc.kill()
        if a.drain:
            out.update(anyio.run(_drain, url, folder / "conf", folder / "drain.db", a.drain,
                                 backend="asyncio"))
        print(json.dumps(out, indent=1))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
