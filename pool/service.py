"""`guestpool serve`: the monitor loop and an HTTP API in one process.

Starlette (anyio-native, so it runs on trio) served by hypercorn's trio worker.
A POST is persisted, answered 202 with the scan's id at once, and run by the
scheduler in order; callers poll. Nothing holds a caller while appliances boot.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PCounter
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .dispatch import RoundReport, run_round
from .errors import GuestpoolError, SetupError
from .pool import Pool
from .scans import FINAL, STATES, ScanQueue
from .sources import open_source, safety_policy
from .store import Store

MAX_BUDGET = 3600.0


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.pool_size = Gauge("guestpool_pool_size", "Appliances the pool keeps", registry=r)
        self.appliances = Gauge("guestpool_appliances", "Appliances by state", ["state"],
                                registry=r)
        self.boots = PCounter("guestpool_boots", "Appliance boots", registry=r)
        self.boot_seconds = Histogram("guestpool_boot_seconds", "Appliance boot time",
                                      buckets=(1, 2, 5, 10, 15, 20, 30, 45, 60, 120), registry=r)
        self.job_seconds = Histogram("guestpool_job_seconds", "Per-VM job time", ["strategy"],
                                     buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120), registry=r)
        self.failures = PCounter("guestpool_failures", "Failed jobs and boots", ["kind"],
                                 registry=r)
        self.coverage = Gauge("guestpool_round_coverage_ratio",
                              "Share of the fleet the last round covered", registry=r)
        self.overrun = Gauge("guestpool_round_overrun_seconds",
                             "Seconds the last round ran past its budget", registry=r)

    def on_event(self, name: str, data: dict[str, Any]) -> None:
        if name == "boot_done":
            self.boots.inc()
            self.boot_seconds.observe(data["seconds"])
        elif name == "boot_failed":
            self.failures.labels("boot").inc()
        elif name == "job_done":
            if "seconds" in data:
                self.job_seconds.labels(data.get("strategy", "pooled")).observe(data["seconds"])
            if not data.get("ok"):
                self.failures.labels((data.get("error") or {}).get("kind", "unknown")).inc()


@dataclass
class Service:
    """State shared by the HTTP handlers and the scheduler."""

    store: Store
    queue: ScanQueue
    default_fleet: str | None
    token: str | None
    open_reads: bool = False
    paused: bool = False
    pool_size: int | None = None
    metrics: Metrics = field(default_factory=Metrics)
    pool: Pool | None = None
    running: str | None = None
    cancel: anyio.Event | None = None
    progress: dict[str, Any] = field(default_factory=dict)
    wake: anyio.Event = field(default_factory=anyio.Event)

    # -- auth --------------------------------------------------------------------

    def authorised(self, request: Request, mutating: bool) -> bool:
        if not mutating and self.open_reads:
            return True
        if self.token is None:
            return True  # only possible on a loopback bind
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.encode(),
                                                                  self.token.encode())

    # -- scheduling ----------------------------------------------------------------

    def estimate_start(self, scan_id: str) -> float:
        """Seconds from now until this scan can start (budgets of those ahead)."""
        wait = 0.0
        for s in self.queue.queued_ahead(scan_id):
            budget = float(s["request"].get("budget", 300))
            if s["state"] == "running" and s["started"]:
                wait += max(0.0, budget - (time.time() - s["started"]))
            else:
                wait += budget
        return wait

    async def scheduler(self) -> None:
        while True:
            scan = None if self.paused else self.queue.next_queued()
            if scan is None:
                with anyio.move_on_after(1.0):
                    await self.wake.wait()
                self.wake = anyio.Event()
                continue
            await self._run(scan)

    def kick(self) -> None:
        self.wake.set()

    async def _run(self, scan: dict[str, Any]) -> None:
        req = scan["request"]
        self.running, self.cancel = scan["id"], anyio.Event()
        self.queue.update(scan["id"], state="running", started=time.time())
        try:
            source = open_source(req.get("fleet") or self.default_fleet or "")
            vms = await anyio.to_thread.run_sync(source.load)
            if req.get("vms"):
                wanted = set(req["vms"])
                vms = [v for v in vms if v.name in wanted]
            self.progress = {"total": len(vms), "done": 0, "covered": 0, "failed": 0}
            self.queue.update(scan["id"], progress=self.progress)
            errors: list[dict[str, Any]] = []

            def on_result(r: Any) -> None:
                self.progress["done"] += 1
                self.progress["covered" if r.ok else "failed"] += 1
                if not r.ok:
                    errors.append({"vm": r.vm, **(r.error or {})})
                self.queue.update(scan["id"], progress=self.progress, errors=errors[-100:])

            pool = Pool(self.pool_size, on_event=self.metrics.on_event)
            self.pool = pool
            self.metrics.pool_size.set(pool.size)
            report: RoundReport = await run_round(
                vms, budget=float(req.get("budget", 300)), inspectors=req.get("inspectors"),
                store=self.store, pool=pool, safety=safety_policy(source),
                stop=self.cancel, on_result=on_result)
            summary = report.summary()
            cancelled = self.cancel.is_set()
            self.queue.update(scan["id"], state="cancelled" if cancelled else "done",
                              finished=time.time(), summary=summary, progress=self.progress)
            self.metrics.coverage.set(len(report.covered) / len(vms) if vms else 1.0)
            self.metrics.overrun.set(report.overrun)
        except GuestpoolError as e:
            self.queue.update(scan["id"], state="failed", finished=time.time(),
                              errors=[{"kind": "scan", "message": str(e)}])
        finally:
            self.pool, self.running, self.cancel = None, None, None


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(data, status_code=status, headers=headers)


def _problem(status: int, message: str) -> JSONResponse:
    return _json({"error": message}, status)


def _scan_view(svc: Service, scan: dict[str, Any]) -> dict[str, Any]:
    out = {k: scan[k] for k in ("id", "state", "request", "created", "started", "finished",
                                "progress", "summary", "errors")}
    if scan["state"] == "queued":
        out["estimated_start_s"] = round(svc.estimate_start(scan["id"]), 1)
    return out


def validate_scan_request(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = set(body) - {"fleet", "vms", "inspectors", "budget"}
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    if "fleet" in body:
        if not isinstance(body["fleet"], str) or not body["fleet"]:
            raise ValueError("fleet must be a non-empty string")
        out["fleet"] = body["fleet"]
    for key in ("vms", "inspectors"):
        if key in body:
            v = body[key]
            if not isinstance(v, list) or not all(isinstance(x, str) and x for x in v) \
                    or len(v) > 100_000:
                raise ValueError(f"{key} must be a list of non-empty strings")
            out[key] = v
    if "budget" in body:
        b = body["budget"]
        if isinstance(b, bool) or not isinstance(b, int | float) or not 5 <= b <= MAX_BUDGET:
            raise ValueError(f"budget must be a number of seconds from 5 to {MAX_BUDGET:.0f}")
        out["budget"] = float(b)
    if "inspectors" in out:
        from guestpool.inspectors.registry import resolve

        for name in out["inspectors"]:
            if ":" not in name:
                resolve(name)
    return out


def build_app(svc: Service) -> Starlette:
    def guard(request: Request, mutating: bool = False) -> Response | None:
        if not svc.authorised(request, mutating):
            return _json({"error": "missing or wrong bearer token"}, 401,
                         {"WWW-Authenticate": "Bearer"})
        return None

    async def create_scan(request: Request) -> Response:
        if (denied := guard(request, True)) is not None:
            return denied
        try:
            body = await request.json()
        except ValueError:
            return _problem(422, "the body is not valid JSON")
        try:
            req = validate_scan_request(body)
        except (ValueError, GuestpoolError) as e:
            return _problem(422, str(e))
        if "fleet" not in req and svc.default_fleet is None:
            return _problem(422, "no fleet given and the service has no default fleet")
        key = request.headers.get("idempotency-key") or None
        if key is not None and len(key) > 200:
            return _problem(422, "Idempotency-Key is longer than 200 characters")
        scan, created = svc.queue.submit(req, key)
        svc.kick()
        return _json(_scan_view(svc, scan), 202 if created else 200,
                     {"Location": f"/scans/{scan['id']}"})

    async def get_scan(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        scan = svc.queue.get(request.path_params["id"])
        return _json(_scan_view(svc, scan)) if scan else _problem(404, "no such scan")

    async def list_scans(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return _json([_scan_view(svc, s) for s in svc.queue.recent()])

    async def cancel_scan(request: Request) -> Response:
        if (denied := guard(request, True)) is not None:
            return denied
        scan_id = request.path_params["id"]
        scan = svc.queue.get(scan_id)
        if scan is None:
            return _problem(404, "no such scan")
        if scan["state"] in FINAL:
            return _problem(409, f"scan is already {scan['state']}")
        if scan["state"] == "queued":
            svc.queue.update(scan_id, state="cancelled", finished=time.time())
        elif svc.running == scan_id and svc.cancel is not None:
            svc.cancel.set()  # in-flight jobs finish, no new ones start
        return _json(_scan_view(svc, svc.queue.get(scan_id) or scan), 202)

    async def list_vms(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return _json([{"name": n, "last_scanned": t}
                      for n, t in sorted(svc.store.last_scanned().items())])

    async def get_vm(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        latest = svc.store.latest(request.path_params["name"])
        return _json(latest) if latest else _problem(404, "no result for that VM")

    async def vm_drift(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        name = request.path_params["name"]
        if name not in svc.store.last_scanned():
            return _problem(404, "unknown VM")
        return _json(svc.store.drift(name))

    async def pool_view(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return _json(_pool_state(svc))

    async def metrics(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        counts = Counter(a["state"] for a in _pool_state(svc)["appliances"])
        for state in ("starting", "booting", "idle", "busy"):
            svc.metrics.appliances.labels(state).set(counts.get(state, 0))
        return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return _json({"ok": True, "running": svc.running})

    async def openapi(request: Request) -> Response:
        return _json(OPENAPI)

    async def status_page(request: Request) -> Response:
        if (denied := guard(request)) is not None:
            return denied
        return HTMLResponse(render_status(svc))

    return Starlette(routes=[
        Route("/", status_page, methods=["GET"]),
        Route("/scans", create_scan, methods=["POST"]),
        Route("/scans", list_scans, methods=["GET"]),
        Route("/scans/{id}", get_scan, methods=["GET"]),
        Route("/scans/{id}", cancel_scan, methods=["DELETE"]),
        Route("/vms", list_vms, methods=["GET"]),
        Route("/vms/{name}", get_vm, methods=["GET"]),
        Route("/vms/{name}/drift", vm_drift, methods=["GET"]),
        Route("/pool", pool_view, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ])


def _pool_state(svc: Service) -> dict[str, Any]:
    pool = svc.pool
    if pool is None:
        return {"size": 0, "strategy": None, "appliances": []}
    return {"size": pool.size, "strategy": pool.strategy, "appliances": [
        {"id": a.id, "state": a.state, "trust_group": a.trust_group, "jobs": a.jobs,
         "qemu_pid": a.qemu_pid, "boot_seconds": a.boot_seconds}
        for a in list(pool.appliances.values())]}


def render_status(svc: Service) -> str:
    """The status page: plain HTML, no external assets, refreshing itself."""
    e = html.escape
    pool = _pool_state(svc)
    rows = "".join(f"<tr><td>{a['id']}</td><td class='{e(a['state'])}'>{e(a['state'])}</td>"
                   f"<td>{e(str(a['trust_group']))}</td><td>{a['jobs']}</td></tr>"
                   for a in pool["appliances"]) or "<tr><td colspan=4>no pool running</td></tr>"
    current = "idle"
    if svc.running:
        scan = svc.queue.get(svc.running) or {}
        p = svc.progress
        budget = float((scan.get("request") or {}).get("budget", 300))
        elapsed = time.time() - (scan.get("started") or time.time())
        pct = 100 * min(1.0, elapsed / budget)
        current = (f"scan {e(svc.running[:8])}: {p.get('done', 0)}/{p.get('total', 0)} VMs, "
                   f"{p.get('failed', 0)} failed; {elapsed:.0f} of {budget:.0f} s"
                   f"<div class='bar'><div style='width:{pct:.0f}%'></div></div>")
    rounds = "".join(f"<tr><td>{r['id']}</td><td>{r['summary']['covered']}</td>"
                     f"<td>{r['summary']['failed']}</td><td>{r['summary']['not_reached']}</td>"
                     f"<td>{r['summary']['elapsed_s']}</td></tr>"
                     for r in svc.store.recent_rounds(10) if r["summary"]) or \
        "<tr><td colspan=5>no round yet</td></tr>"
    drift = "".join(f"<tr><td>{e(c['vm'])}</td><td>{e(c['kind'])}</td><td>{e(str(c['key']))}"
                    f"</td></tr>" for c in svc.store.drift()[-15:][::-1]) or \
        "<tr><td colspan=3>no drift recorded</td></tr>"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>guestpool status</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;
margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:4px 10px}}th{{background:#eee}}
.bar{{width:320px;height:14px;border:1px solid #888;margin-top:6px}}.bar div{{height:100%;
background:#3a7}}.busy{{color:#a60}}.idle{{color:#070}}.booting{{color:#06a}}</style></head>
<body><h1>guestpool</h1>
<h2 id="round">Current round</h2><p>{current}</p>
<h2 id="pool">Appliances</h2><table><tr><th>id</th><th>state</th><th>trust group</th>
<th>jobs</th></tr>{rows}</table>
<h2 id="rounds">Last rounds</h2><table><tr><th>round</th><th>covered</th><th>failed</th>
<th>not reached</th><th>seconds</th></tr>{rounds}</table>
<h2 id="drift">Recent drift</h2><table><tr><th>VM</th><th>change</th><th>what</th></tr>
{drift}</table></body></html>"""


def check_bind(host: str, token: str | None) -> None:
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback and not token:
        raise SetupError(f"refusing to listen on {host} without a token: set GUESTPOOL_TOKEN "
                         "(or --token-file), or bind to 127.0.0.1")


async def serve(*, host: str, port: int, store_path: Path | None, fleet: str | None,
                token: str | None, open_reads: bool, paused: bool, pool_size: int | None,
                interval: float | None, budget: float) -> None:
    """Run the API and the scheduler until SIGINT/SIGTERM."""
    import signal

    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    check_bind(host, token)
    store = Store(store_path)
    svc = Service(store, ScanQueue(store.path), fleet, token, open_reads, paused, pool_size)
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.accesslog = None
    shutdown = anyio.Event()

    async def periodic() -> None:
        assert interval is not None and fleet is not None
        while True:
            svc.queue.submit({"fleet": fleet, "budget": min(budget, interval)},
                             f"monitor-{int(time.time() // interval)}")
            svc.kick()
            await anyio.sleep(interval)

    async def signals() -> None:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
            async for _ in received:
                shutdown.set()
                return

    async with anyio.create_task_group() as tg:
        tg.start_soon(signals)
        tg.start_soon(svc.scheduler)
        if interval is not None and fleet is not None:
            tg.start_soon(periodic)
        await hypercorn_serve(build_app(svc), config,  # type: ignore[arg-type]
                              shutdown_trigger=shutdown.wait)
        if svc.cancel is not None:
            svc.cancel.set()
        tg.cancel_scope.cancel()
    svc.queue.close()
    store.close()


def _schema_scan() -> dict[str, Any]:
    return {"type": "object", "properties": {
        "id": {"type": "string"}, "state": {"type": "string", "enum": list(STATES)},
        "request": {"type": "object"}, "created": {"type": "number"},
        "started": {"type": ["number", "null"]}, "finished": {"type": ["number", "null"]},
        "progress": {"type": ["object", "null"]}, "summary": {"type": ["object", "null"]},
        "errors": {"type": ["array", "null"]}, "estimated_start_s": {"type": "number"}},
        "required": ["id", "state"]}


_ERR = {"description": "error", "content": {"application/json": {"schema": {
    "type": "object", "properties": {"error": {"type": "string"}}}}}}
_AUTH = {"401": {"description": "missing or wrong bearer token"}}


def _ok(schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {code: {"description": "ok", "content": {"application/json": {"schema": schema}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {"title": "guestpool", "version": "1"},
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    "security": [{"bearer": []}],
    "paths": {
        "/scans": {
            "post": {
                "summary": "Queue a scan; answers 202 with its id once persisted",
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 200}}],
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "fleet": {"type": "string", "minLength": 1},
                        "vms": {"type": "array", "items": {"type": "string", "minLength": 1}},
                        "inspectors": {"type": "array",
                                       "items": {"type": "string", "minLength": 1}},
                        "budget": {"type": "number", "minimum": 5, "maximum": MAX_BUDGET}}}}}},
                "responses": {**_ok(_schema_scan(), "202"), **_ok(_schema_scan()),
                              "422": _ERR, **_AUTH}},
            "get": {"summary": "Recent scans",
                    "responses": {**_ok({"type": "array", "items": _schema_scan()}), **_AUTH}}},
        "/scans/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A scan's state, progress, coverage and errors",
                    "responses": {**_ok(_schema_scan()), "404": _ERR, **_AUTH}},
            "delete": {"summary": "Cancel a scan",
                       "responses": {**_ok(_schema_scan(), "202"), "404": _ERR, "409": _ERR,
                                     **_AUTH}}},
        "/vms": {"get": {"summary": "Known VMs", "responses": {
            **_ok({"type": "array", "items": {"type": "object"}}), **_AUTH}}},
        "/vms/{name}": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "Latest results of a VM",
                    "responses": {**_ok({"type": "object"}), "404": _ERR, **_AUTH}}},
        "/vms/{name}/drift": {
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string"}}],
            "get": {"summary": "A VM's drift", "responses": {
                **_ok({"type": "array", "items": {"type": "object"}}), "404": _ERR, **_AUTH}}},
        "/pool": {"get": {"summary": "Appliances and their states",
                          "responses": {**_ok({"type": "object"}), **_AUTH}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
            "200": {"description": "text exposition format"}, **_AUTH}}},
        "/healthz": {"get": {"summary": "Liveness", "security": [],
                             "responses": _ok({"type": "object"})}},
    },
}
