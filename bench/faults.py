"""Bench: a round on a bad day, with real appliances.

One `guestpool scan` of a demo fleet runs with a fresh store; ``--lock-at``
seconds in, another process takes the store's write lock (``BEGIN
EXCLUSIVE``) and holds it ``--lock-for`` seconds. What it reports: whether
the round ended on time (its wall time against the budget), how many VMs it
covered, how many of those have their result in the store afterwards (the
promise: all of them, straight away or through the journal replayed at the
next start), and what the round said about the store.

    guestpool fleet demo FLEET --count 200
    python -m guestpool.bench.faults FLEET/fleet.json --budget 150 --lock-at 45 --lock-for 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from guestpool import Store
from guestpool.store._journal import journal_paths, replay

from ._options import results_dir

LOCKER = ("import sqlite3, sys, time\n"
          "db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=60)\n"
          "db.execute('BEGIN EXCLUSIVE'); print(time.time(), flush=True)\n"
          "time.sleep(float(sys.argv[2])); db.execute('COMMIT'); print(time.time(), flush=True)")


def hold_lock(store: Path, at: float, seconds: float, started: float,
              times: dict[str, float]) -> None:
    """From ``at`` seconds after ``started``, hold the store's write lock ``seconds``."""
    time.sleep(max(0.0, started + at - time.monotonic()))
    proc = subprocess.run([sys.executable, "-c", LOCKER, str(store), str(seconds)],
                          capture_output=True, text=True, check=True)
    taken, lifted = (float(x) for x in proc.stdout.split())
    times["taken"], times["lifted"] = taken, lifted


def run(manifest: Path, budget: float, lock_at: float, lock_for: float,
        store: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "guestpool", "scan", str(manifest), "--budget", str(budget),
           "--store", str(store), "--json"]
    Store(store).close()  # the locker needs the file; the scan opens it as usual
    times: dict[str, float] = {}
    wall_started = time.time()
    started = time.monotonic()
    locker = threading.Thread(target=hold_lock, args=(store, lock_at, lock_for, started, times))
    locker.start()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - started
    locker.join()
    if proc.returncode not in (0, 3):
        raise SystemExit(f"scan failed ({proc.returncode}): {proc.stderr[-2000:]}")
    report = json.loads(proc.stdout)
    covered = {r["vm"] for r in report["vms"] if r["ok"]}
    s = Store(store)
    try:
        stored_now = _stored(s, report["round"])
        journal = [str(p) for p in journal_paths(store) if p.exists()]
        replayed = replay(s) if journal else 0  # what the next start does
        stored_after = _stored(s, report["round"])
    finally:
        s.close()
    summary = report  # `scan --json`: the round's summary, with every VM's result
    return {
        "budget_s": budget, "wall_s": round(wall, 1),
        "overrun_s": round(max(0.0, wall - budget), 1),
        "lock": {"from_s": round(times["taken"] - wall_started, 1),
                 "to_s": round(times["lifted"] - wall_started, 1)},
        "covered": len(covered), "failed": summary.get("failed"),
        "stored_at_exit": len(covered & stored_now), "journaled": summary.get("journaled", 0),
        "replayed": replayed, "stored_after_replay": len(covered & stored_after),
        "store_error": (summary.get("store_error") or "").replace(str(store), "STORE")
        or None, "job_p50_s": summary.get("job_s", {}).get("p50"),
        "exit": proc.returncode}


def _stored(store: Store, round_id: int) -> set[str]:
    return {r["vm"] for r in store.db.execute(
        "SELECT vm FROM results WHERE round_id=? AND ok=1", (round_id,))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("manifest", type=Path)
    ap.add_argument("--budget", type=float, default=150.0)
    ap.add_argument("--lock-at", type=float, default=45.0)
    ap.add_argument("--lock-for", type=float, default=60.0)
    ap.add_argument("--results", type=Path, default=None,
                    help="folder for faults-lock.json (default: bench/results)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="guestpool-faults-") as tmp:
        result = run(args.manifest, args.budget, args.lock_at, args.lock_for,
                     Path(tmp) / "results.db")
    result["date"] = time.strftime("%Y-%m-%d")
    out = results_dir(args.results) / "faults-lock.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
