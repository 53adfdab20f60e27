"""Test-only launcher: agents of some hosts in this process, with the
simulator's appliances (no qemu) at real time (the bench's
``run_sim_agents``, the agent's library code with a fake spawn).

    python -m helpers.nats_agent URL PASSWORD_DIR MANIFEST HOST[,HOST...] \
        --pool N --job SECONDS --boot SECONDS --state DIR

Each host's agent gets MANIFEST's VMs whose names start with ``HOST-``, and
every host those whose names start with ``any-`` (VM names are unique per host
only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import anyio

from guestpool import SafetyPolicy, load_manifest
from guestpool.bench.hosts import run_sim_agents
from guestpool.bench.simulate import Costs


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
    vms = load_manifest(a.manifest).vms
    fleets = {h: [vm for vm in vms if vm.name.startswith((f"{h}-", "any-"))]
              for h in a.hosts.split(",")}
    # disks that exist are checked and fingerprinted, as a real agent's
    disks = [Path(d.path) for vm in vms for d in vm.disks]
    safety = SafetyPolicy(disk_roots=sorted({str(p.parent) for p in disks})) \
        if disks and all(p.exists() for p in disks) else None
    anyio.run(run_sim_agents, a.url, a.passwords, fleets, a.pool, costs, a.state, 1.0, safety,
              backend="asyncio")


if __name__ == "__main__":
    main()
