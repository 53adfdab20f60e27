"""Test-only launcher: one agent (or several) in this process, with the
simulator's appliances (no qemu) at real time.

    python -m helpers.nats_agent URL PASSWORD_DIR MANIFEST HOST[,HOST...] \
        --pool N --job SECONDS --boot SECONDS --state DIR

Each host's agent reads MANIFEST's VMs whose names start with ``HOST-``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import anyio

from guestpool import Appliance, Pool, load_manifest
from guestpool._nats import NatsSettings
from guestpool._nats._agent import Agent
from guestpool._nats._config import agent_user
from guestpool._nats._connect import connected
from guestpool.bench.simulate import Costs, SimAppliance


def sim_pool(size: int, costs: Costs, seed: int) -> Pool:
    rng = random.Random(seed)

    async def spawn() -> Appliance:
        return SimAppliance(costs, rng)

    return Pool(size, accel="tcg", max_jobs=10**9, safety=None, spawn=spawn)


async def run_agents(url: str, passwords: Path, manifest: Path, hosts: list[str], pool: int,
                     costs: Costs, state: Path) -> None:
    fleet = load_manifest(manifest).vms

    async def one(i: int, host: str) -> None:
        user = agent_user(host)
        settings = NatsSettings(url, user=user,
                                password=(passwords / f"{user}.password").read_text().strip())
        vms = [vm for vm in fleet if vm.name.startswith(f"{host}-")]
        async with connected(settings, f"test-agent-{host}", host) as nc:
            agent = Agent(nc, host, None, sim_pool(pool, costs, i), vms=vms, state_dir=state,
                          heartbeat=1.0)
            await agent.run()

    async with anyio.create_task_group() as tg:
        for i, host in enumerate(hosts):
            tg.start_soon(one, i, host)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("passwords", type=Path)
    p.add_argument("manifest", type=Path)
    p.add_argument("hosts")
    p.add_argument("--pool", type=int, default=2)
    p.add_argument("--boot", type=float, default=0.5)
    p.add_argument("--job", type=float, default=1.0)
    p.add_argument("--state", type=Path, required=True)
    a = p.parse_args()
    costs = Costs(boot=(a.boot, 0.0), attach=(0.05, 0.0), inspect=(a.job, 0.0),
                  detach=(0.05, 0.0))
    print("agents starting", flush=True)
    anyio.run(run_agents, a.url, a.passwords, a.manifest, a.hosts.split(","), a.pool, costs,
              a.state, backend="asyncio")


if __name__ == "__main__":
    main()
