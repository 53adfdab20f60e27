"""Shared fixtures: one demo fleet and one real pool for the whole session.

Real appliances boot in ~20 s here (TCG), so the pool runs once, in a
background thread with its own trio loop, and tests submit jobs to it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from guestpool import VM, InspectResult, Pool, load_manifest
from guestpool.demo import generate

PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [PLUGINS, os.environ.get("PYTHONPATH")]))


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DemoFleet:
    def __init__(self, directory: Path) -> None:
        self.manifest = generate(directory, 12)
        self.vms = load_manifest(self.manifest).vms
        self.truth: dict[str, Any] = json.loads((directory / "truth.json").read_text())
        self.digests = {d.path: sha256(d.path) for vm in self.vms for d in vm.disks}

    def one_of_each(self) -> list[VM]:
        seen: dict[str, VM] = {}
        for vm in self.vms:
            seen.setdefault(self.truth[vm.name]["kind"], vm)
        return list(seen.values())


@pytest.fixture(scope="session")
def demo_fleet(tmp_path_factory: pytest.TempPathFactory) -> DemoFleet:
    return DemoFleet(tmp_path_factory.mktemp("fleet"))


class PoolThread:
    """A real Pool running in its own thread; tests call it synchronously."""

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.pool: Pool | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._ready = threading.Event()
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=lambda: trio.run(self._main), daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error:
            raise self._error

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        try:
            async with Pool(**self.kwargs) as pool:
                self.pool = pool
                self._ready.set()
                await self._stop.wait()
        except BaseException as e:
            self._error = e
            self._ready.set()

    def inspect(self, vm: VM, inspectors: list[str | dict[str, Any]] | list[str] | None = None
                ) -> InspectResult:
        assert self.pool is not None
        result: InspectResult = trio.from_thread.run(self.pool.inspect, vm, inspectors,
                                                     trio_token=self._token)
        return result

    def call(self, fn: Any, *args: Any) -> Any:
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def close(self) -> None:
        if self._stop is not None:
            trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join(timeout=60)


@pytest.fixture(scope="session")
def shared_pool() -> Iterator[PoolThread]:
    pt = PoolThread(size=2, max_jobs=1000)
    yield pt
    pt.close()
