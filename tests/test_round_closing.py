"""Rounds always close: a round whose process is gone is closed as `interrupted` by
the next one (with a summary counted from what it stored), a round cancelled from
outside closes itself, and a live process's round is left alone. Simulated
appliances (the Pool's public ``spawn`` seam); kill -9 of a real scan is in
test_rounds.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import anyio

from guestpool import VM, Disk, InspectResult, RoundOptions, Store, run_round
from guestpool.bench.simulate import Costs
from guestpool.store._owner import gone, this_process


def _pool() -> object:
    from guestpool.bench.hosts import sim_pool

    return sim_pool(1, Costs(boot=(0.2, 0.0), attach=(0.01, 0.0), inspect=(0.3, 0.0),
                             detach=(0.01, 0.0)), seed=1)


def _vms(n: int) -> list[VM]:
    return [VM(f"vm{i}", (Disk(f"/nowhere/{i}.raw", "raw"),)) for i in range(n)]


def _dead_owner() -> str:
    """The owner identity of a process of this host that has exited."""
    return subprocess.run([sys.executable, "-c", "from guestpool.store._owner import "
                           "this_process; print(this_process())"], capture_output=True,
                          text=True, check=True).stdout.strip()


def test_owners_are_this_host_s_live_processes() -> None:
    assert not gone(this_process())
    assert gone(_dead_owner())  # that process exited
    host, pid, started = this_process().split(":")
    assert gone(f"{host}:{pid}:{int(started) + 1}")  # a recycled pid is another process
    assert not gone(f"another-host:{os.getpid()}:1")  # never judged from here
    assert gone(None)  # a round from before owners were kept


def test_a_round_left_by_a_dead_process_is_closed_by_the_next(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    left = store.start_round(300, "pooled", 2, 10)
    store.db.execute("UPDATE rounds SET owner=? WHERE id=?", (_dead_owner(), left))
    for name, ok in (("a", True), ("b", True), ("c", False)):
        store.record(left, InspectResult(name, ok, {}, error=None if ok else {
            "kind": "image", "message": "m"}))
    live = store.start_round(300, "pooled", 2, 10)  # this process: alive
    closed = store.close_interrupted()
    assert [c["round"] for c in closed] == [left]
    rounds = {r["id"]: r for r in store.recent_rounds()}
    summary = rounds[left]["summary"]
    assert summary["state"] == "interrupted"
    assert (summary["covered"], summary["inspected"], summary["failed"]) == (2, 2, 1)
    assert rounds[left]["ended"] is not None
    assert rounds[live]["ended"] is None and rounds[live]["summary"] is None
    assert store.close_interrupted() == []  # closed once


async def test_a_round_cancelled_from_outside_closes_itself(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    seen: list[str] = []
    with anyio.move_on_after(3):  # the service stopping mid-round
        await run_round(_vms(40), RoundOptions(budget=60, batch=1), store=store,
                        pool=_pool(), on_result=lambda r: seen.append(r.vm))  # type: ignore[arg-type]
    last = store.last_round()
    assert last is not None and last["ended"] is not None and seen
    assert last["summary"]["state"] == "interrupted"
    assert last["summary"]["covered"] == len(seen)


async def test_the_next_round_closes_what_a_killed_one_left(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    left = store.start_round(300, "pooled", 1, 4)
    store.db.execute("UPDATE rounds SET owner=? WHERE id=?", (_dead_owner(), left))
    report = await run_round(_vms(2), RoundOptions(budget=30), store=store, pool=_pool())  # type: ignore[arg-type]
    rounds = {r["id"]: r for r in store.recent_rounds()}
    assert rounds[left]["summary"]["state"] == "interrupted"
    assert rounds[report.round_id or 0]["summary"]["covered"] == 2
