"""Does serving status requests slow a scan down? The same VMs scanned twice by
a real `guestpool serve` on loopback: once quietly, once under a bounded load
of status requests (count and time are capped; loopback only)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import httpx

TOKEN = "bench-token"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _scan(c: httpx.AsyncClient, vms: Sequence[str], inspectors: Sequence[str],
                load: int, concurrency: int) -> dict[str, Any]:
    r = await c.post("/scans", json={"vms": list(vms), "budget": 600,
                                     "inspectors": list(inspectors)})
    scan_id = r.json()["id"]
    errors = sent = 0
    latencies: list[float] = []

    async def hammer() -> None:
        nonlocal errors, sent
        while sent < load:
            sent += 1
            t = time.monotonic()
            try:
                resp = await c.get(f"/scans/{scan_id}")
                errors += resp.status_code != 200
            except httpx.HTTPError:
                errors += 1
            latencies.append(time.monotonic() - t)
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        if load:
            for _ in range(concurrency):
                tg.start_soon(hammer)
        with anyio.fail_after(900):
            while (await c.get(f"/scans/{scan_id}")).json()["state"] in ("queued", "running"):
                await anyio.sleep(0.5)
        tg.cancel_scope.cancel()
    scan = (await c.get(f"/scans/{scan_id}")).json()
    jobs = []
    for name in vms:
        v = (await c.get(f"/vms/{name}")).json()
        if v.get("round") is not None:
            t = v["timings"]
            jobs.append(t.get("attach", 0) + t.get("inspect", 0) + t.get("detach", 0))
    return {"state": scan["state"], "covered": scan["summary"]["covered"],
            "elapsed_s": scan["summary"]["elapsed_s"],
            "job_mean_s": statistics.fmean(jobs) if jobs else None,
            "requests": sent, "errors": errors,
            "p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "max_ms": 1000 * max(latencies) if latencies else None}


def wait_serving(url: str, proc: subprocess.Popen[Any], seconds: float = 30.0) -> None:
    """Until a `guestpool serve` at ``url`` answers /healthz; RuntimeError (with
    its stderr, when captured) if it exits or does not answer in time."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.TransportError:
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
                raise RuntimeError(f"guestpool serve did not start: {err!s:.2000}") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running_server(store: Path, *args: str) -> Iterator[str]:
    """A real `guestpool serve` on a free loopback port (token TOKEN) until the
    block ends; yields its base URL once /healthz answers."""
    port = _port()
    env = dict(os.environ, GUESTPOOL_TOKEN=TOKEN)
    proc = subprocess.Popen([sys.executable, "-m", "guestpool", "serve", *args,
                             "--bind", f"127.0.0.1:{port}", "--store", str(store)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_serving(url, proc)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def run_load_bench(manifest: Path, vms: Sequence[str], store: Path, load: int = 1000,
                   concurrency: int = 4, inspectors: Sequence[str] = ("os",)
                   ) -> dict[str, Any]:
    with running_server(store, str(manifest), "--pool", "1") as url:
        async def main() -> dict[str, Any]:
            async with httpx.AsyncClient(base_url=url, timeout=30,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as c:
                quiet = await _scan(c, vms, inspectors, 0, concurrency)
                loaded = await _scan(c, vms, inspectors, load, concurrency)
                return {"quiet": quiet, "loaded": loaded}

        result: dict[str, Any] = anyio.run(main, backend="trio")
    q, ld = result["quiet"]["job_mean_s"], result["loaded"]["job_mean_s"]
    result["slowdown"] = (ld - q) / q if q and ld else None
    return result
