"""Per-VM cost of each inspector under one appliance, and the cheap `os` path
against libguestfs's full inspect_os on the same VMs."""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from typing import Any

from guestpool import VM, InspectorSpec, Pool

DEFAULT_SET = ("os", "filesystems", "packages", "users", "files", "services")


async def measure_inspectors(vms: Sequence[VM], names: Sequence[str] = DEFAULT_SET
                             ) -> dict[str, Any]:
    fleet = [dataclasses.replace(vm, trust_group="bench") for vm in vms]
    per: dict[str, list[float]] = {n: [] for n in names}
    cheap: list[float] = []
    full: list[float] = []
    agree = 0
    compared = 0
    jobs: list[float] = []
    async with Pool(1, max_jobs=10**6) as pool:
        for vm in fleet:
            r = await pool.inspect(vm, list(names))
            if not r.ok:
                continue
            jobs.append(r.timings["attach"] + r.timings["inspect"] + r.timings["detach"])
            for n in names:
                per[n].append(r.results[n]["seconds"])
            f = await pool.inspect(vm, [InspectorSpec("os", {"full": True})])
            if f.ok and f.results["os"]["ok"] and r.results["os"]["ok"]:
                cheap.append(r.results["os"]["seconds"])
                full.append(f.results["os"]["seconds"])
                a, b = r.results["os"]["value"], f.results["os"]["value"]
                if a.get("type") == "none" and b.get("type") in ("unknown", "none"):
                    same = True
                else:
                    same = all(str(a.get(k)) == str(b.get(k)) for k in
                               ("type", "distro", "hostname", "arch", "package_format"))
                agree += same
                compared += 1
    return {
        "vms": len(jobs),
        "per_inspector_mean_s": {n: statistics.fmean(v) for n, v in per.items() if v},
        "job_mean_s": statistics.fmean(jobs) if jobs else None,
        "os_cheap_mean_s": statistics.fmean(cheap) if cheap else None,
        "os_full_inspect_os_mean_s": statistics.fmean(full) if full else None,
        "os_answers_agree": f"{agree}/{compared}",
    }
