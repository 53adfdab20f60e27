"""`guestpool serve`: the scan queue, the scheduler and an HTTP API in one process.

Layout: ``_queue`` (persisted scan requests), ``_scheduler`` (runs them as
rounds), ``_metrics`` (Prometheus), ``_app`` (routes and auth), ``_status_page``,
``_openapi``.
"""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

import anyio

from .._errors import SetupError
from .._periodic import run_periodic, stop_on_signals
from .._round import RoundOptions
from .._store import Store
from ._app import build_app, validate_scan_request
from ._queue import ScanQueue
from ._scheduler import Service

__all__ = ["Service", "build_app", "check_bind", "serve", "validate_scan_request"]


def check_bind(host: str, token: str | None) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise SetupError(f"refusing to listen on {host} without a token: set GUESTPOOL_TOKEN "
                         "(or --token-file), or bind to 127.0.0.1")


async def serve(*, host: str, port: int, store_path: Path | None, fleet: str | None,
                token: str | None, open_reads: bool, paused: bool, options: RoundOptions,
                interval: float | None) -> None:
    """Run the API and the scheduler until SIGINT/SIGTERM; with ``interval``, also
    queue a scan of ``fleet`` every ``interval`` seconds."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    check_bind(host, token)
    store = Store(store_path)
    svc = Service(store, ScanQueue(store.path), fleet, token, open_reads, paused, options)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    shutdown = anyio.Event()

    async def queue_round(n: int) -> None:
        assert interval is not None and fleet is not None
        svc.queue.submit({"fleet": fleet, "budget": min(options.budget, interval)},
                         f"monitor-{int(time.time() // interval)}")
        svc.kick()

    async with anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, shutdown)
        tg.start_soon(svc.scheduler)
        if interval is not None and fleet is not None:
            tg.start_soon(run_periodic, interval, queue_round)
        await hypercorn_serve(build_app(svc), config,  # type: ignore[arg-type]
                              shutdown_trigger=shutdown.wait)
        if svc.cancel is not None:
            svc.cancel.set()
        tg.cancel_scope.cancel()
    svc.queue.close()
    store.close()
