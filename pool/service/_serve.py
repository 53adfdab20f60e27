"""Running the service: bind checks, the scheduler, periodic scans and the HTTP
server in one task group, until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import ipaddress
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup

from guestpool._errors import SetupError
from guestpool.fleet._sources import open_source
from guestpool.rounds._periodic import run_periodic, stop_on_signals
from guestpool.rounds._report import RoundOptions
from guestpool.store._database import Store

from ._app import build_app
from ._queue import ScanQueue
from ._scheduler import Service

if TYPE_CHECKING:
    from guestpool.nats import NatsSettings


def check_bind(host: str, token: str | None, open_reads: bool = False,
               public_names: tuple[str, ...] = ()) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise SetupError(f"refusing to listen on {host} without a token: set GUESTPOOL_TOKEN "
                         "(or --token-file), or bind to 127.0.0.1")
    if not loopback and open_reads and not public_names:
        raise SetupError(f"--open-reads on {host} needs --public-name NAME (the host name "
                         "clients use): reads without a token check the Host header against "
                         "it, so a web page cannot read results through DNS rebinding")


def allowed_hosts(host: str, port: int, public_names: tuple[str, ...] = ()) -> frozenset[str]:
    """Host headers that name this service (checked on requests served without a
    token): a loopback bind's names, and the names clients use."""
    names = {host, "localhost", "127.0.0.1", "[::1]"} if host in ("127.0.0.1", "localhost") \
        else {f"[{host}]" if ":" in host else host}
    given = {n if n.rpartition(":")[2].isdigit() and not n.endswith("]") else f"{n}:{port}"
             for n in public_names}
    return frozenset({f"{n}:{port}" for n in names} | given)


async def serve(*, host: str, port: int, store_path: Path | None, fleets: dict[str, str],
                token: str | None, open_reads: bool, paused: bool, options: RoundOptions,
                interval: float | None, allow_remote_libvirt: bool = False,
                nats: NatsSettings | None = None, public_names: tuple[str, ...] = ()) -> None:
    """Run the API and the scheduler until SIGINT/SIGTERM; with ``interval``, also
    queue a scan of every configured fleet every ``interval`` seconds. With
    ``nats`` (run on anyio's asyncio backend) scans run
    across the hosts whose agents announce themselves, as the fleet "hosts"."""
    from hypercorn.config import Config

    if nats is None:
        from hypercorn.trio import serve as hypercorn_serve
    else:
        from hypercorn.asyncio import serve as hypercorn_serve  # type: ignore[assignment]

    check_bind(host, token, open_reads, public_names)
    for spec in fleets.values():
        open_source(spec, allow_remote_libvirt=allow_remote_libvirt)  # refuse bad specs now
    if nats is not None:
        fleets = {"hosts": f"nats:{nats.url}"}
    store = Store(store_path)
    svc = Service(store, ScanQueue(store.path), fleets, token, open_reads, paused, options,
                  allow_remote_libvirt=allow_remote_libvirt,
                  hosts=allowed_hosts(host, port, public_names))
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    shutdown = anyio.Event()

    async def queue_rounds(n: int) -> None:
        assert interval is not None
        slot = int(time.time() // interval)
        for name in fleets:
            # "monitor:" keys live outside every client's key namespace
            svc.queue.submit({"fleet": name, "budget": min(options.budget, interval)},
                             f"monitor:{name}:{slot}")
        svc.kick()

    async def http(tg: TaskGroup) -> None:
        """The HTTP server in a task of its own: what hypercorn does to the task it
        runs in on the way out (on asyncio it cancels it) stays out of ours."""
        await hypercorn_serve(build_app(svc), config,  # type: ignore[arg-type]
                              shutdown_trigger=shutdown.wait)
        if svc.cancel is not None:
            svc.cancel.set()
        tg.cancel_scope.cancel()

    async with _coordinating(svc, nats, store), anyio.create_task_group() as tg:
        tg.start_soon(stop_on_signals, shutdown)
        tg.start_soon(svc.scheduler)
        tg.start_soon(svc.vulns.keep_loaded)
        if interval is not None:
            tg.start_soon(run_periodic, interval, queue_rounds)
        tg.start_soon(http, tg)
    svc.queue.close()
    svc.reads.close()
    store.close()


@contextlib.asynccontextmanager
async def _coordinating(svc: Service, nats: NatsSettings | None,
                       store: Store) -> AsyncIterator[None]:
    """With ``nats``: the coordinator (storing results, watching hosts) for the service."""
    if nats is None:
        yield
        return
    from guestpool.nats import open_coordinator

    async with open_coordinator(nats, store) as coordinator:
        svc.coordinator = coordinator
        yield
