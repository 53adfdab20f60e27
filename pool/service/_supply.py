"""SBOM and vulnerability endpoints of the service, and the OSV index it keeps.

The index is built in a worker thread when the service starts and rebuilt
when the folder's files change (checked every ``RECHECK_S``); requests are
served from the last good index meanwhile. Matching and SBOM building are
CPU-bound and run in worker threads, never on the event loop.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from guestpool._errors import GuestpoolError
from guestpool.store._database import Store
from guestpool.supply import _findings, _sbom
from guestpool.supply import _matching as _vulns
from guestpool.supply._osv import how_to_fill

if TYPE_CHECKING:
    from ._scheduler import Service

Handler = Callable[[Request], Awaitable[Response]]
RECHECK_S = 30.0
MEDIA_TYPES = {"cyclonedx": "application/vnd.cyclonedx+json", "spdx": "application/spdx+json"}


@dataclass
class OsvState:
    """The service's OSV folder and its current index (None until read)."""

    folder: str | None = None
    index: _vulns.OsvIndex | None = None
    error: str | None = None

    async def keep_loaded(self, recheck: float = RECHECK_S) -> None:
        """Build the index now, then rebuild it whenever the folder changes."""
        if self.folder is None:
            return
        folder = self.folder
        while True:
            try:
                self.index = await anyio.to_thread.run_sync(_findings.index_for, folder)
                self.error = None
            except GuestpoolError as e:
                self.error = str(e)
            await anyio.sleep(recheck)

    def unavailable(self) -> Response | None:
        """503 saying what to do while there is no index to match with."""
        if self.folder is None:
            return _problem(503, "no OSV folder configured: start the service with --osv DIR; "
                                 + how_to_fill("DIR"))
        if self.index is None:
            if self.error is not None:
                return _problem(503, self.error)
            return JSONResponse({"error": f"reading OSV advisories in {self.folder}; "
                                          "try again shortly"}, 503, {"Retry-After": "10"})
        return None


def _problem(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def handlers(svc: Service) -> dict[str, Handler]:
    """The routes' handlers, by path (the app wraps each in its auth guard)."""

    async def vm_sbom(request: Request) -> Response:
        fmt = request.query_params.get("format", "cyclonedx")
        spec = request.query_params.get("spec", "1.6")
        if fmt not in MEDIA_TYPES:
            return _problem(422, "format must be one of " + ", ".join(MEDIA_TYPES))
        if spec not in _sbom.CYCLONEDX_VERSIONS:
            return _problem(422, "spec must be one of " + ", ".join(_sbom.CYCLONEDX_VERSIONS))
        latest = svc.store.latest(request.path_params["name"])
        if latest is None:
            return _problem(404, "no result for that VM")
        try:
            doc = await anyio.to_thread.run_sync(
                lambda: _sbom.sbom(latest, fmt, cyclonedx_version=spec))  # type: ignore[arg-type]
        except GuestpoolError as e:
            return _problem(409, str(e))
        return Response(json.dumps(doc), media_type=MEDIA_TYPES[fmt])

    async def vm_vulns(request: Request) -> Response:
        if (refused := svc.vulns.unavailable()) is not None:
            return refused
        index = svc.vulns.index
        assert index is not None
        latest = svc.store.latest(request.path_params["name"])
        if latest is None:
            return _problem(404, "no result for that VM")
        try:
            report = await anyio.to_thread.run_sync(_vulns.match_vm, index, latest)
        except GuestpoolError as e:
            return _problem(409, str(e))
        return JSONResponse(report)

    async def fleet_vulns(request: Request) -> Response:
        if (refused := svc.vulns.unavailable()) is not None:
            return refused
        index = svc.vulns.index
        assert index is not None
        view = await anyio.to_thread.run_sync(_fleet, str(svc.store.path), index)
        return JSONResponse(view)

    return {"/vms/{name}/sbom": vm_sbom, "/vms/{name}/vulns": vm_vulns, "/vulns": fleet_vulns}


def _fleet(store_path: str, index: _vulns.OsvIndex) -> dict[str, Any]:
    """Every VM's findings, read on this thread's own connection to the store."""
    store = Store(store_path)
    try:
        reports = _findings.match_latest(store, index, list(_findings.all_vms(store)))
    finally:
        store.close()
    return _findings.fleet_view(index, reports)
