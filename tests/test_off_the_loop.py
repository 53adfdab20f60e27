"""No SQL on the event loop: a 10,000-VM store's reads take milliseconds to
seconds, and the loop also serves every other request and runs the round's
jobs. Every statement SQLite runs is traced with the thread that ran it
(``sqlite3.connect`` wrapped); a request's or a round's statement on the loop's
thread fails the test. Real Starlette app, real store, real round (its
appliances simulated through the Pool's ``spawn`` seam)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from guestpool import VM, Disk, InspectResult, RoundOptions, Store, run_round


class Trace:
    """(thread, statement) of every statement run on connections made meanwhile."""

    def __init__(self) -> None:
        self.on: int | None = None  # the thread whose statements count
        self.found: list[str] = []

    def __call__(self, statement: str) -> None:
        if threading.get_ident() == self.on:
            self.found.append(statement)


@pytest.fixture
def trace(monkeypatch: pytest.MonkeyPatch) -> Iterator[Trace]:
    seen = Trace()
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = connect(*args, **kwargs)
        db.set_trace_callback(seen)
        return db

    monkeypatch.setattr(sqlite3, "connect", traced)
    yield seen


def _stored(path: Path) -> Store:
    store = Store(path)
    vm = VM("vm0", (Disk("/nowhere/vm0.raw", "raw"),))
    store.sync_fleet([vm])
    rid = store.start_round(60, "pooled", 1, 1)
    store.record(rid, InspectResult("vm0", True, {}, timings={"job": 0.4}))
    return store


async def test_no_request_runs_sql_on_the_event_loop(tmp_path: Path, trace: Trace) -> None:
    from guestpool.service import Service, build_app
    from guestpool.service._queue import ScanQueue

    store = _stored(tmp_path / "s.db")
    (tmp_path / "fleet.json").write_text('{"vms": []}')
    svc = Service(store, ScanQueue(store.path), {"f": str(tmp_path / "fleet.json")}, None,
                  paused=True)
    transport = httpx.ASGITransport(app=build_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        trace.on = threading.get_ident()
        created = await c.post("/scans", json={"budget": 30})
        assert created.status_code == 202
        scan = created.json()["id"]
        for path in ("/", "/scans", f"/scans/{scan}", "/vms", "/vms/vm0", "/vms/vm0/drift",
                     "/vms/vm0/sbom", "/vms/nope", "/pool", "/hosts", "/metrics", "/healthz",
                     "/fleet", "/fleet?format=json", "/fleet/vm0", "/fleet/nope"):
            r = await c.get(path)
            assert r.status_code in (200, 404, 409), (path, r.text)
        assert (await c.delete(f"/scans/{scan}")).status_code == 202
        trace.on = None
    assert trace.found == []
    svc.reads.close()
    svc.queue.close()
    store.close()


async def test_a_round_runs_its_sql_off_the_event_loop(tmp_path: Path, trace: Trace) -> None:
    """Preparing (the fleet synced, unchanged VMs carried, the round opened), the
    writer and the finish (costs, the round closed) all run on worker threads."""
    from guestpool.bench.hosts import sim_pool
    from guestpool.bench.simulate import Costs

    costs = Costs(boot=(0.05, 0.0), attach=(0.01, 0.0), inspect=(0.02, 0.0),
                  detach=(0.01, 0.0))
    store = _stored(tmp_path / "r.db")
    vms = [VM(f"vm{i}", (Disk(f"/nowhere/{i}.raw", "raw"),)) for i in range(6)]
    trace.on = threading.get_ident()
    report = await run_round(vms, RoundOptions(budget=30, pool_size=2), store=store,
                             pool=sim_pool(2, costs, seed=1))  # type: ignore[arg-type]
    trace.on = None
    assert len(report.covered) == 6
    assert trace.found == []
    assert {r["vm"] for r in store.results(round_id=report.round_id)} == {v.name for v in vms}
    store.close()


def test_the_trace_sees_sql_on_the_loop(tmp_path: Path, trace: Trace) -> None:
    """The two tests above could not fail if the trace missed statements."""
    store = _stored(tmp_path / "t.db")

    async def on_the_loop() -> None:
        trace.on = threading.get_ident()
        store.latest("vm0")
        trace.on = None

    anyio.run(on_the_loop)
    assert any("SELECT" in s for s in trace.found)
    store.close()


async def test_a_store_that_refuses_a_read_gets_an_answer_not_a_traceback(
        tmp_path: Path) -> None:
    """A read the store refuses (locked: 503 with Retry-After; anything else: 500
    with its cause) is answered, and the service goes on."""
    from guestpool.service import Service, build_app
    from guestpool.service._queue import ScanQueue
    from guestpool.store._transactions import StoreError

    store = _stored(tmp_path / "s.db")
    svc = Service(store, ScanQueue(store.path), {}, None, paused=True)
    transport = httpx.ASGITransport(app=build_app(svc))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        for error, status in ((StoreError("results store s.db is locked by another process",
                                          busy=True), 503),
                              (StoreError("results store s.db: file is not a database"), 500)):
            async def refuse(*args: Any, error: StoreError = error) -> Any:
                raise error
            svc.reads = refuse  # type: ignore[assignment]
            for path in ("/vms", "/vms/vm0", "/fleet", "/metrics"):
                r = await c.get(path)
                assert r.status_code == status, (path, r.text)
                assert str(error) in r.json()["error"]
                assert (r.headers.get("Retry-After") == "5") == (status == 503)
            assert (await c.get("/healthz")).status_code == 200
    svc.queue.close()
    store.close()
