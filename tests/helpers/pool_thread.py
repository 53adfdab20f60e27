"""A real Pool running in its own thread with its own trio loop."""

from __future__ import annotations

import threading
from typing import Any

import trio

from guestpool import VM, InspectorSpec, InspectResult, Pool


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

    def inspect(self, vm: VM, inspectors: list[str | InspectorSpec] | list[str] | None = None
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
