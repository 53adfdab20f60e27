"""Bench: one real host at ten times the demo fleet, in steady state.

A store first covers every VM of a large demo fleet (``fill``: one `guestpool
scan` with a budget long enough for all of it); then a share of the VMs is
changed inside their disks (``/etc/hostname`` of raw debian images rewritten
with ``debugfs``, no appliance) and a normal round runs (``measure``). What it
reports per round: coverage, the time spent verifying unchanged VMs, the
round's own overhead (its prepare and finish phases), whether it ended on
time, and the supervisor's peak memory (the `guestpool scan` process alone,
sampled from /proc: appliances and their workers are other processes).

    guestpool fleet demo FLEET --count 10000
    python -m guestpool.bench.scale FLEET --store STORE --phase fill --budget 7200
    python -m guestpool.bench.scale FLEET --store STORE --phase measure --budget 300
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from guestpool import Store, load_manifest

from ._options import results_dir

#: the partition of a demo debian image (sector 2048)
DEBIAN_FS_OFFSET = 2048 * 512


def supervised_scan(manifest: Path, store: Path, budget: float) -> dict[str, Any]:
    """Run one `guestpool scan` and sample its own memory every second."""
    cmd = [sys.executable, "-m", "guestpool", "scan", str(manifest), "--budget", str(budget),
           "--store", str(store), "--json"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    peak_kib = 0
    while proc.poll() is None:
        peak_kib = max(peak_kib, _peak_rss_kib(proc.pid))
        time.sleep(1.0)
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0, 3):  # 3: the budget ended before the fleet did
        raise SystemExit(f"scan failed ({proc.returncode}): {stderr[-2000:]}")
    s = Store.existing(store)
    try:
        last = s.last_round()
    finally:
        s.close()
    assert last is not None and last["summary"], "the scan recorded no round"
    return {"wall_s": round(time.monotonic() - started, 1), "exit": proc.returncode,
            "supervisor_peak_rss_mib": round(peak_kib / 1024, 1),
            "store_mib": round(store.stat().st_size / 2**20, 1), "summary": last["summary"]}


def _peak_rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def change_disks(fleet: Path, share: float, seed: int = 7) -> list[str]:
    """Rewrite ``/etc/hostname`` inside ``share`` of the fleet's VMs (raw debian
    images only: debugfs reads ext4 at the partition's offset); their names."""
    vms = [vm for vm in load_manifest(fleet / "fleet.json").vms
           if vm.name.endswith("-debian") and len(vm.disks) == 1]
    count = max(1, round(share * len(load_manifest(fleet / "fleet.json").vms)))
    chosen = random.Random(seed).sample(vms, min(count, len(vms)))
    with tempfile.NamedTemporaryFile("w", suffix=".hostname") as f:
        for vm in chosen:
            f.seek(0)
            f.truncate()
            f.write(f"{vm.name}-changed-{int(time.time())}\n")
            f.flush()
            image = f"{vm.disks[0].path}?offset={DEBIAN_FS_OFFSET}"
            for request in ("rm /etc/hostname", f"write {f.name} /etc/hostname"):
                subprocess.run(["debugfs", "-w", "-R", request, image], check=True,
                               capture_output=True)
    return [vm.name for vm in chosen]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("fleet", type=Path, help="a demo fleet folder (fleet.json inside)")
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--phase", choices=("fill", "measure"), required=True)
    parser.add_argument("--budget", type=float, default=300.0)
    parser.add_argument("--changed", type=float, default=0.01,
                        help="share of the fleet changed before a measured round")
    parser.add_argument("--results", type=Path, default=None)
    args = parser.parse_args(argv)
    manifest = args.fleet / "fleet.json"
    out: dict[str, Any] = {"phase": args.phase, "fleet": len(load_manifest(manifest).vms),
                           "budget_s": args.budget, "at": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                        time.gmtime())}
    if args.phase == "measure":
        started = time.monotonic()
        out["changed"] = len(change_disks(args.fleet, args.changed))
        out["change_s"] = round(time.monotonic() - started, 1)
    out.update(supervised_scan(manifest, args.store, args.budget))
    folder = results_dir(args.results)
    path = folder / f"scale-{out['fleet']}-{args.phase}.json"
    path.write_text(json.dumps(out, indent=1))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
