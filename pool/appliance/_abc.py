"""The appliance contract: what the pool may ask of an appliance, and what failures mean.

The pool never talks to a worker process directly; it talks to an
:class:`Appliance`. The real one (:class:`guestpool.WorkerAppliance`) runs a
worker process with one libguestfs handle; the simulator's sleeps instead;
a remote agent could forward requests. ``Pool(spawn=...)`` takes any callable
that makes one, the way httpx takes a transport.

Rules every implementation keeps:

- :meth:`Appliance.request` runs one operation (a message of
  :mod:`guestpool.appliance._protocol`) and returns the reply it expects:
  ``Boot`` → ``Booted``, ``Attach`` → ``Attached``, ``Inspect`` → ``Inspected``,
  ``Detach`` → ``Detached``, ``Ping`` → ``Pong``, ``Cold`` → ``ColdDone``,
  ``Shutdown`` → ``Closed``.
- Failures are exceptions, chosen by whom they blame (:class:`ErrorKind`):
  :class:`ImageError` (the VM's image: the appliance is still clean and a
  retry elsewhere would fail the same way), :class:`ApplianceError` (the
  appliance failed, hung or died: it has been killed; the pool retires it and
  may retry the job once on another appliance), :class:`LateBindingUnavailable`
  (cannot hot-plug here: the pool falls back to one boot per VM),
  :class:`HostileGuest` (the guest changed the appliance: retired, not retried).
- An operation that misses its deadline or is cancelled leaves the appliance
  in an unknown state, so the appliance kills itself: it is never reused.
- :meth:`kill` ends it at once; :meth:`close` asks it to shut down, then kills.
"""

from __future__ import annotations

import abc
import contextlib
import itertools
from collections.abc import Awaitable, Callable
from typing import Literal, TypeVar

import anyio

from guestpool._errors import (
    ApplianceError,
    GuestpoolError,
    HostileGuest,
    ImageError,
    LateBindingUnavailable,
)

from ._protocol import Closed, ErrorKind, Failure, Reply, Request, Shutdown

State = Literal["starting", "booting", "idle", "busy", "retired"]
_ids = itertools.count(1)
R = TypeVar("R")


class Appliance(abc.ABC):
    """One appliance as the pool sees it, with the bookkeeping the pool keeps on it."""

    def __init__(self) -> None:
        self.id = next(_ids)
        self.state: State = "starting"
        #: the trust group this appliance serves for life (None: not bound yet)
        self.trust_group: str | None = None
        self.jobs = 0
        self.qemu_pid: int | None = None
        self.boot_seconds: float | None = None

    @abc.abstractmethod
    async def request(self, request: Request, timeout: float) -> Reply:
        """Send one request and return the worker's reply (a :class:`Failure` included);
        raise :class:`ApplianceError` if the appliance died, hung or was cancelled."""

    @abc.abstractmethod
    async def kill(self) -> None:
        """End the appliance now (its qemu included) and mark it retired."""

    async def close(self, timeout: float = 5.0) -> None:
        """Shut down politely, give it ``timeout`` seconds to go, then make sure it is gone."""
        if self.state == "retired":
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(GuestpoolError):
                await self.call(Shutdown(), timeout, Closed)
            with anyio.move_on_after(timeout):
                await self.exited()
            await self.kill()

    async def exited(self) -> None:  # noqa: B027 (optional hook, no-op by default)
        """Return once the appliance has gone by itself after a shutdown (if it can tell)."""

    async def call(self, request: Request, timeout: float, expect: type[R]) -> R:
        """Run one operation and return its reply, of type ``expect``; failures
        become exceptions (see the module's rules)."""
        if self.state == "retired":
            raise ApplianceError(f"appliance {self.id} is retired")
        reply = await self.request(request, timeout)
        if isinstance(reply, Failure):
            raise failure_error(reply, f"appliance {self.id}")
        if not isinstance(reply, expect):
            await self.kill()
            raise ApplianceError(f"appliance {self.id} answered {type(reply).__name__} "
                                 f"to {type(request).__name__}")
        return reply


Spawn = Callable[[], Awaitable[Appliance]]


def failure_error(failure: Failure, where: str) -> GuestpoolError:
    """The exception a :class:`Failure` stands for (see the module's rules)."""
    if failure.kind is ErrorKind.IMAGE:
        return ImageError(failure.message)
    if failure.kind is ErrorKind.UNSUPPORTED:
        return LateBindingUnavailable(f"{where}: {failure.message}")
    if failure.kind is ErrorKind.HOSTILE:
        return HostileGuest(f"{where}: {failure.message}")
    if failure.kind is ErrorKind.BAD_REQUEST:
        return GuestpoolError(f"{where}: {failure.message}")
    return ApplianceError(f"{where}: {failure.message}")
