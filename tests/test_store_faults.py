"""Nothing lost on a bad day: a store another process locks mid-round, a store locked
to the round's end, and a store whose disk fills up. Real SQLite, a real second
process holding the lock, a real (small) tmpfs; the appliances are simulated
(the Pool's ``spawn`` seam), so the round's timing is the writer's alone."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from guestpool import VM, Disk, GuestpoolError, RoundOptions, Store, run_round
from guestpool.bench.simulate import Costs
from guestpool.store._journal import journal_paths
from guestpool.store._transactions import StoreError

COSTS = Costs(boot=(0.2, 0.0), attach=(0.01, 0.0), inspect=(0.05, 0.0), detach=(0.01, 0.0))


def _pool() -> object:
    from guestpool.bench.hosts import sim_pool

    return sim_pool(2, COSTS, seed=1)


def _vms(n: int) -> list[VM]:
    return [VM(f"vm{i:03d}", (Disk(f"/nowhere/{i}.raw", "raw"),)) for i in range(n)]


@contextlib.contextmanager
def locked(db: Path, seconds: float) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the store's write lock for ``seconds``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time\n"
         "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "db.execute('BEGIN EXCLUSIVE'); print('locked', flush=True)\n"
         "time.sleep(float(sys.argv[2])); db.execute('COMMIT')", str(db), str(seconds)],
        stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def _stored(db: Path) -> set[str]:
    store = Store(db)
    try:
        return {r["vm"] for r in store.db.execute("SELECT vm FROM results WHERE ok=1")}
    finally:
        store.close()


def _cleanup_journals(db: Path) -> None:
    for path in journal_paths(db):
        path.unlink(missing_ok=True)


async def test_a_lock_mid_round_delays_results_but_loses_none(tmp_path: Path) -> None:
    """Locked for 3 s in the middle of a 12 s round: the round goes on, ends on time,
    and every covered VM's result is in the store afterwards."""
    db = tmp_path / "r.db"
    Store(db).close()
    report = None

    async def lock_later() -> None:
        await anyio.sleep(2)
        with locked(db, 3):
            await anyio.sleep(3)

    async with anyio.create_task_group() as tg:
        tg.start_soon(lock_later)
        report = await run_round(_vms(300), RoundOptions(budget=12, batch=1), store=Store(db),
                                 pool=_pool())  # type: ignore[arg-type]
    assert report.elapsed < 12 + 1.5 and report.journaled == 0
    assert _stored(db) == {r.vm for r in report.covered} and len(report.covered) > 50
    assert "locked by another process" in (report.store_error or "")  # it waited, and says so
    store = Store(db)
    assert store.last_round()["summary"]["covered"] == len(report.covered)


async def test_a_store_locked_to_the_round_s_end_keeps_results_in_a_journal(
        tmp_path: Path) -> None:
    """Locked from 1 s into a 6 s round until after it: the round ends on time, its
    results and its end go to the journal, and the next round writes them."""
    db = tmp_path / "r.db"
    Store(db).close()
    _cleanup_journals(db)
    report = None
    with contextlib.ExitStack() as lock:

        async def lock_soon() -> None:
            await anyio.sleep(1)
            lock.enter_context(locked(db, 60))

        async with anyio.create_task_group() as tg:
            tg.start_soon(lock_soon)
            report = await run_round(_vms(40), RoundOptions(budget=6, batch=1),
                                     store=Store(db), pool=_pool())  # type: ignore[arg-type]
    assert report.elapsed < 6 + 2.5, report.elapsed
    assert 0 < report.journaled < len(report.results)
    assert report.journal == str(journal_paths(db)[0])
    covered = {r.vm for r in report.covered}
    stored_before = _stored(db)  # what made it before the lock
    assert stored_before < covered
    # the next round writes the journal first, each result once, and removes it
    round_ended = time.time()
    await run_round(_vms(0), RoundOptions(budget=5), store=Store(db), pool=_pool())  # type: ignore[arg-type]
    assert _stored(db) == covered
    # each with the time it came, not the replay's
    store = Store(db)
    assert all(store.latest(vm)["at"] <= round_ended for vm in covered)  # type: ignore[index]
    store.close()
    assert not any(p.exists() for p in journal_paths(db))
    first = Store(db).recent_rounds(5)[-1]
    assert first["summary"]["covered"] == len(covered)  # its end, from the journal


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: the store's disk, soon full."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_a_disk_that_fills_up_mid_round_loses_no_result(small_disk: Path,
                                                               tmp_path: Path) -> None:
    db = small_disk / "r.db"
    Store(db).close()
    _cleanup_journals(db)
    report = await run_round(_vms(400), RoundOptions(budget=8, batch=1), store=Store(db),
                             pool=_pool())  # type: ignore[arg-type]
    covered = {r.vm for r in report.covered}
    assert report.elapsed < 8 + 1.5 and len(covered) > 100
    assert report.journaled > 0 and "disk is full" in (report.store_error or "")
    # beside the store there is no room either: the fallback folder holds them
    assert report.journal == str(journal_paths(db)[1])
    # space freed (the store moved to a bigger disk with its journal's name): all stored
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in small_disk.iterdir():
        shutil.copy(f, moved / f.name)
    shutil.move(str(journal_paths(db)[1]), str(journal_paths(moved / "r.db")[0]))
    await run_round(_vms(0), RoundOptions(budget=5), store=Store(moved / "r.db"),
                    pool=_pool())  # type: ignore[arg-type]
    assert _stored(moved / "r.db") == covered


def test_a_failed_commit_says_why_and_a_busy_store_says_so(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    Store(db).close()
    with locked(db, 30):
        store = Store(db, busy_timeout=0.2)
        t = time.monotonic()
        with pytest.raises(StoreError) as e:
            store.sync_fleet(_vms(3))
        assert e.value.busy and time.monotonic() - t < 5
        assert str(e.value) == f"results store {db} is locked by another process"
        assert isinstance(e.value, GuestpoolError)  # the CLI prints it as one line, exit 2
        store.close()


def test_the_service_answers_while_another_process_locks_the_store(tmp_path: Path) -> None:
    import httpx
    from helpers.server import AUTH, Server, tiny_manifest

    db = tmp_path / "s.db"
    srv = Server(db, str(tiny_manifest(tmp_path)), "--paused")
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH, timeout=20)
        assert c.get("/healthz").json()["store"] == "ok"
        with locked(db, 20):
            for path, most in (("/healthz", 1.0), ("/metrics", 2.0), ("/", 2.0),
                               ("/fleet", 2.0), ("/vms", 2.0)):
                t = time.monotonic()
                r = c.get(path)
                assert r.status_code == 200 and time.monotonic() - t < most, (path, r.text)
            assert c.get("/healthz").json()["store"] == "locked"
            t = time.monotonic()
            busy = c.post("/scans", json={"budget": 60})
            assert busy.status_code == 503 and busy.headers["Retry-After"] == "5"
            assert "locked by another process" in busy.json()["error"]
            assert time.monotonic() - t < 3
        assert c.post("/scans", json={"budget": 60}).status_code == 202
    finally:
        srv.stop()


def test_a_journal_entry_the_store_refuses_is_set_aside_not_blocking(tmp_path: Path) -> None:
    """One bad entry (a result no store can take) must not stop the others being
    written, nor every later start: it is moved to JOURNAL.rejected."""
    from guestpool import InspectResult
    from guestpool.store._journal import entry, replay, spool

    db = tmp_path / "r.db"
    store = Store(db)
    rid = store.start_round(60, "pooled", 1, 2)
    good = entry(rid, InspectResult("a", True, {}, timings={"job": 0.5}), None, None)
    bad = {**entry(rid, InspectResult("b", True, {}), None, None)}
    bad["result"] = {**bad["result"], "attempts": [1]}  # not a number: SQLite refuses it
    spool(db, [bad, good, good])  # and one delivered twice
    assert replay(store) == 1
    assert _stored(db) == {"a"}
    rejected = journal_paths(db)[0].with_name("r.db.journal.rejected")
    assert rejected.exists() and not journal_paths(db)[0].exists()
    assert replay(store) == 0  # nothing left to block the next start
    store.close()
