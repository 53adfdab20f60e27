"""SBOM and vulnerability endpoints of the service. Matching and SBOM building
are CPU-bound and run in worker threads, never on the event loop; the OSV
index they match against is the service's :class:`OsvState`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from guestpool._errors import GuestpoolError
from guestpool.rounds._round import on_own_connection
from guestpool.store._database import Store
from guestpool.supply import _findings, _sbom
from guestpool.supply import _matching as _vulns

from ._responses import problem as _problem
from ._scheduler import Service

Handler = Callable[[Request], Awaitable[Response]]
MEDIA_TYPES = {"cyclonedx": "application/vnd.cyclonedx+json", "spdx": "application/spdx+json"}


def handlers(svc: Service) -> dict[str, Handler]:
    """The routes' handlers, by path (the app wraps each in its auth guard)."""

    async def vm_sbom(request: Request) -> Response:
        fmt = request.query_params.get("format", "cyclonedx")
        spec = request.query_params.get("spec", "1.6")
        if fmt not in MEDIA_TYPES:
            return _problem(422, "format must be one of " + ", ".join(MEDIA_TYPES))
        if spec not in _sbom.CYCLONEDX_VERSIONS:
            return _problem(422, "spec must be one of " + ", ".join(_sbom.CYCLONEDX_VERSIONS))
        latest = await svc.reads(Store.latest, request.path_params["name"])
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
        latest = await svc.reads(Store.latest, request.path_params["name"])
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
        # its own connection: matching a fleet takes seconds, the reads' lane goes on
        view = await on_own_connection(svc.store, lambda own: _fleet(own, index))
        return JSONResponse(view)

    return {"/vms/{name:path}/sbom": vm_sbom, "/vms/{name:path}/vulns": vm_vulns,
            "/vulns": fleet_vulns}


def _fleet(store: Store, index: _vulns.OsvIndex) -> dict[str, Any]:
    """Every VM's findings against its latest result."""
    reports = _findings.match_latest(store, index, list(_findings.all_vms(store)))
    return _findings.fleet_view(index, reports)
