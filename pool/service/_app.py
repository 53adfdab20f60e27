"""The HTTP API: routes, the one auth guard, request validation.

Starlette (anyio-native, so it runs on trio) served by hypercorn's trio worker.
A POST is persisted, answered 202 with the scan's id at once, and run by the
scheduler in order; callers poll. Nothing holds a caller while appliances boot.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import anyio
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from guestpool._errors import GuestpoolError
from guestpool.store._database import Store
from guestpool.store._fleetview import FleetQuery, fleet_page, freshness, vm_detail
from guestpool.store._transactions import StoreError
from guestpool.supply._matching import SEVERITIES

from ._console import routes as console_routes
from ._nats_hosts import hosts_state, update_metrics
from ._openapi import OPENAPI
from ._queue import (
    FINAL,
    MAX_BUDGET,
    MAX_REQUEST_INSPECTORS,
    MAX_REQUEST_VMS,
    QueueBusy,
    store_state,
)
from ._responses import problem as _problem
from ._scheduler import Service
from ._status_page import pool_state, render_status
from ._supply import handlers as vuln_handlers

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")
log = logging.getLogger("guestpool")
#: Largest request body accepted, in bytes.
MAX_BODY = 1024 * 1024

#: what ``GET /vms`` lists of each VM (the fleet table's row)
VM_FIELDS = ("state", "distro", "version", "packages", "inspected_at", "verified_at", "last_at")


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def _scan_view(svc: Service, scan: dict[str, Any]) -> dict[str, Any]:
    out = {k: scan[k] for k in ("id", "state", "request", "created", "started", "finished",
                                "progress", "summary", "errors")}
    if scan["state"] == "queued":
        out["estimated_start_s"] = round(svc.estimate_start(scan["id"]), 1)
    return out


async def queue(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a worker thread: the scan queue is SQL on the store's file,
    which another process may hold locked (a write waits up to ``BUSY_WAIT_S``)."""
    return await anyio.to_thread.run_sync(fn, *args)


def vm_view(store: Store, name: str) -> dict[str, Any] | None:
    """The VM's latest result (its facts, carried or not) and the state its
    latest attempt left it in, from the one definition every view reads."""
    detail = vm_detail(store, name, history=1)
    latest = store.latest(name)
    if detail is None or latest is None:
        return None
    return {**latest, "vm_state": detail["state"], "verified_at": detail["verified_at"],
            "last_attempt_at": detail["last_attempt_at"], "last_error": detail["last_error"]}


def drift_view(store: Store, name: str) -> list[dict[str, Any]] | None:
    return store.drift(name) if store.has_vm(name) else None


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise HTTPProblem(422, f"{name} must be a whole number from {low} to {high}")
    return int(raw)


def validate_scan_request(body: Any, fleets: Collection[str]) -> dict[str, Any]:
    """A scan request checked field by field; ``fleets`` are the configured names."""
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"fleet", "vms", "inspectors", "budget"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if "fleet" in body:
        if not isinstance(body["fleet"], str) or body["fleet"] not in fleets:
            raise ValueError("fleet must name a fleet this service was configured with: "
                             f"{', '.join(sorted(fleets)) or 'none'}")
        out["fleet"] = body["fleet"]
    for key, most in (("vms", MAX_REQUEST_VMS), ("inspectors", MAX_REQUEST_INSPECTORS)):
        if key in body:
            v = body[key]
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v):
                raise ValueError(f"{key} must be a list of non-empty strings")
            if len(v) > most:
                raise ValueError(f"{key} may name at most {most:,} items, got {len(v):,} "
                                 "(scan the whole fleet by leaving it out)" if key == "vms"
                                 else f"{key} may name at most {most} items, got {len(v):,}")
            out[key] = v
    if "budget" in body:
        b = body["budget"]
        if isinstance(b, bool) or not isinstance(b, int | float) or not 5 <= b <= MAX_BUDGET:
            raise ValueError(f"budget must be a number of seconds from 5 to {MAX_BUDGET:.0f}")
        out["budget"] = float(b)
    if "inspectors" in out:
        from guestpool.inspectors._registry import resolve_specs

        resolve_specs(out["inspectors"], allow_paths=False)  # registered names only
    return out


def authorised(svc: Service, request: Request, mutating: bool) -> bool:
    """Bearer token (constant-time compare); reads may be open by configuration."""
    if not mutating and svc.open_reads:
        return True
    if svc.token is None:
        return True  # only possible on a loopback bind
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(), svc.token.encode())


def principal(svc: Service, request: Request) -> str:
    """Who is asking, for scoping idempotency keys: one namespace per token."""
    if svc.token is None:
        return "local"
    return "token-" + hashlib.sha256(svc.token.encode()).hexdigest()[:16]


def refusal(svc: Service, request: Request, mutating: bool) -> Response | None:
    """Why a request may not go on, or None: the one guard of every route but
    /healthz and /openapi.json.

    Without a token the service listens on loopback only, where any web page a
    local browser opens can reach it: the Host header must then name the bind
    address (against DNS rebinding; so must a read served without a token
    under ``--open-reads``, against the bind or ``--public-name``) and a
    change must come as JSON (a
    cross-site form or ``text/plain`` POST cannot send ``application/json``
    without a CORS preflight, which this API never grants).
    """
    tokenless = svc.token is None or (not mutating and svc.open_reads
                                      and not authorised(svc, request, True))
    if tokenless and svc.hosts and request.headers.get("host", "") not in svc.hosts:
        return _problem(421, "the Host header does not name this service's address")
    if not authorised(svc, request, mutating):
        return _json({"error": "missing or wrong bearer token"}, 401,
                     {"WWW-Authenticate": "Bearer"})
    if mutating and svc.token is None and request.method == "POST":
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return _problem(415, "send the body as Content-Type: application/json")
    return None


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The body as JSON, refused past ``limit`` bytes (413) or when malformed (422)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise HTTPProblem(413, f"the body is over {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise HTTPProblem(413, f"the body is over {limit} bytes")
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        raise HTTPProblem(422, "the body is not valid JSON (or nests too deeply)") from None


class HTTPProblem(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def build_app(svc: Service) -> Starlette:
    def guarded(handler: Handler, mutating: bool = False) -> Handler:
        async def check(request: Request) -> Response:
            if (refused := refusal(svc, request, mutating)) is not None:
                return refused
            try:
                return await handler(request)
            except HTTPProblem as e:
                return _problem(e.status, str(e))
            except StoreError as e:  # the service goes on; the caller may ask again
                if e.busy:
                    return _problem(503, f"{e}: send the request again", {"Retry-After": "5"})
                log.error("%s %s: %s", request.method, request.url.path, e)
                return _problem(500, str(e))
        return check

    async def create_scan(request: Request) -> Response:
        body = await read_json(request)
        try:
            req = validate_scan_request(body, svc.fleets)
        except (ValueError, GuestpoolError) as e:
            return _problem(422, str(e))
        if "fleet" not in req and svc.default_fleet() is None:
            return _problem(422, "name a fleet: this service scans "
                                 f"{', '.join(sorted(svc.fleets)) or 'no fleet'}")
        key = request.headers.get("idempotency-key") or None
        if key is not None and len(key) > 200:
            return _problem(422, "Idempotency-Key is longer than 200 characters")
        scoped = f"{principal(svc, request)}:{key}" if key else None
        try:
            scan, created = await queue(svc.queue.submit, req, scoped)
        except QueueBusy:
            return _problem(503, "the results store is locked by another process: send the "
                                 "request again", {"Retry-After": "5"})
        svc.kick()
        return _json(await queue(_scan_view, svc, scan), 202 if created else 200,
                     {"Location": f"/scans/{scan['id']}"})

    async def get_scan(request: Request) -> Response:
        scan = await queue(svc.queue.get, request.path_params["id"])
        return _json(await queue(_scan_view, svc, scan)) if scan else \
            _problem(404, "no such scan")

    async def list_scans(request: Request) -> Response:
        return _json(await queue(lambda: [_scan_view(svc, s) for s in svc.queue.recent()]))

    async def cancel_scan(request: Request) -> Response:
        scan_id = request.path_params["id"]
        scan = await queue(svc.queue.get, scan_id)
        if scan is None:
            return _problem(404, "no such scan")
        if scan["state"] in FINAL:
            return _problem(409, f"scan is already {scan['state']}")
        if scan["state"] == "queued":
            await queue(functools.partial(svc.queue.update, scan_id, state="cancelled",
                                          finished=time.time()))
        elif svc.running == scan_id and svc.cancel is not None:
            svc.cancel.set()  # in-flight jobs finish, no new ones start
        now = await queue(svc.queue.get, scan_id)
        return _json(await queue(_scan_view, svc, now or scan), 202)

    async def list_vms(request: Request) -> Response:
        limit = _int_param(request, "limit", 1000, 1, 10_000)
        offset = _int_param(request, "offset", 0, 0, 10**9)
        rows, _ = await svc.reads(fleet_page, FleetQuery(limit=limit, offset=offset))
        return _json([{"name": r["vm"], **{k: r[k] for k in VM_FIELDS}} for r in rows])

    async def get_vm(request: Request) -> Response:
        found = await svc.reads(vm_view, request.path_params["name"])
        return _json(found) if found is not None else _problem(404, "no result for that VM")

    async def vm_drift(request: Request) -> Response:
        changes = await svc.reads(drift_view, request.path_params["name"])
        return _json(changes) if changes is not None else _problem(404, "unknown VM")

    async def pool_view(request: Request) -> Response:
        return _json(pool_state(svc))

    async def hosts_view(request: Request) -> Response:
        return _json(hosts_state(svc))

    async def metrics(request: Request) -> Response:
        update_metrics(svc)
        counts = Counter(a["state"] for a in pool_state(svc)["appliances"])
        for state in ("starting", "booting", "idle", "busy"):
            svc.metrics.appliances.labels(state).set(counts.get(state, 0))
        findings, fleet = await svc.reads(lambda store: (store.open_findings(),
                                                         freshness(store)))
        for severity in SEVERITIES:
            svc.metrics.vuln_findings.labels(severity).set(findings.get(severity, 0))
        svc.metrics.set_fleet(fleet)
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        """Answers at once while the store is locked, and says so."""
        state = await anyio.to_thread.run_sync(store_state, svc.store.path)
        return _json({"ok": True, "running": svc.running, "store": state})

    async def openapi(request: Request) -> Response:
        return _json(OPENAPI)

    async def status_page(request: Request) -> Response:
        return HTMLResponse(await render_status(svc))

    vulns = vuln_handlers(svc)
    return Starlette(routes=[
        Route("/", guarded(status_page), methods=["GET"]),
        Route("/scans", guarded(create_scan, mutating=True), methods=["POST"]),
        Route("/scans", guarded(list_scans), methods=["GET"]),
        Route("/scans/{id}", guarded(get_scan), methods=["GET"]),
        Route("/scans/{id}", guarded(cancel_scan, mutating=True), methods=["DELETE"]),
        Route("/vms", guarded(list_vms), methods=["GET"]),
        # a VM's name may hold "/" (Nova allows it; links percent-encode it): names
        # match as paths, a VM's sub-resources before the VM itself
        Route("/vms/{name:path}/drift", guarded(vm_drift), methods=["GET"]),
        *(Route(path, guarded(handler), methods=["GET"]) for path, handler in vulns.items()),
        Route("/vms/{name:path}", guarded(get_vm), methods=["GET"]),
        Route("/pool", guarded(pool_view), methods=["GET"]),
        Route("/hosts", guarded(hosts_view), methods=["GET"]),
        Route("/metrics", guarded(metrics), methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *console_routes(svc, guarded),
    ])
