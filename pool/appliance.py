"""Supervisor-side handle to one appliance worker process."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream

from . import wire
from .errors import ApplianceError, ApplianceTimeout, GuestpoolError, ImageError

_ids = itertools.count(1)


@dataclass
class Appliance:
    """One worker process owning one guestfs handle (and so one qemu)."""

    proc: Process = field(repr=False)
    workdir: str = ""
    id: int = field(default_factory=lambda: next(_ids))
    state: str = "starting"  # starting, booting, idle, busy, retired
    trust_group: str | None = None
    jobs: int = 0
    qemu_pid: int | None = None
    boot_seconds: float | None = None
    _reader: BufferedByteReceiveStream | None = field(default=None, repr=False)
    _seq: itertools.count[int] = field(default_factory=itertools.count, repr=False)
    _lock: anyio.Lock = field(default_factory=anyio.Lock, repr=False)

    @classmethod
    async def spawn(cls) -> Appliance:
        # The worker's temp files (QMP socket, libguestfs's tmpdir) live in one
        # folder we own, so even a killed worker leaves nothing behind.
        workdir = tempfile.mkdtemp(prefix="guestpool-app-")
        env = dict(os.environ, GUESTPOOL_PARENT_PID=str(os.getpid()), GUESTPOOL_WORKDIR=workdir,
                   TMPDIR=workdir)
        env.setdefault("LIBGUESTFS_CACHEDIR", "/var/tmp")
        try:
            proc = await anyio.open_process(
                [sys.executable, "-m", "guestpool.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                env=env, start_new_session=True,
            )
        except BaseException:  # e.g. a replacement boot cancelled as the pool closes
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        app = cls(proc, workdir=workdir)
        assert proc.stdout is not None
        app._reader = BufferedByteReceiveStream(proc.stdout)
        return app

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def call(self, op: str, timeout: float, **args: Any) -> Any:
        """Run one operation; a missed deadline or a cancellation kills the appliance.

        Raises :class:`ImageError` when the worker blames the image,
        :class:`ApplianceError` when the appliance failed or died.
        """
        async with self._lock:
            if self.state == "retired":
                raise ApplianceError(f"appliance {self.id} is retired")
            rid = next(self._seq)
            done = False
            try:
                with anyio.fail_after(timeout):
                    reply = await self._roundtrip({"id": rid, "op": op, "args": args})
                done = True
            except TimeoutError:
                await self.kill()
                raise ApplianceTimeout(
                    f"appliance {self.id}: {op} missed its {timeout:.0f} s deadline; "
                    "appliance killed") from None
            except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                    anyio.ClosedResourceError,
                    wire.FrameError, OSError) as e:
                await self.kill()
                raise ApplianceError(f"appliance {self.id} died during {op}: "
                                     f"{type(e).__name__}") from None
            finally:
                if not done and self.state != "retired":
                    # cancelled mid-operation: the worker's state is unknown
                    with anyio.CancelScope(shield=True):
                        await self.kill()
        if reply.get("id") != rid:
            await self.kill()
            raise ApplianceError(f"appliance {self.id} answered out of order")
        if reply.get("ok"):
            return reply.get("result")
        err = reply.get("error") or {}
        kind, message = err.get("kind", "appliance"), err.get("message", "unknown error")
        if kind == "image":
            raise ImageError(message)
        if kind == "bad_request":
            raise GuestpoolError(f"appliance {self.id}: {message}")
        raise ApplianceError(f"appliance {self.id}: {message}")

    async def _roundtrip(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self._reader is not None
        await self.proc.stdin.send(wire.encode(request))
        header = await self._reader.receive_exactly(wire.HEADER_SIZE)
        body = await self._reader.receive_exactly(wire.frame_length(header))
        reply: dict[str, Any] = wire.decode_body(body)
        return reply

    async def kill(self) -> None:
        """SIGKILL the worker's process group (worker and qemu) and reap it."""
        self.state = "retired"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await self.proc.wait()
            await self.proc.aclose()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def close(self, timeout: float = 5.0) -> None:
        """Ask the worker to shut its appliance down; kill it if it won't."""
        if self.state == "retired":
            return
        with anyio.CancelScope(shield=True):
            with contextlib.suppress(GuestpoolError):
                await self.call("shutdown", timeout)
            with anyio.move_on_after(5):
                await self.proc.wait()
            await self.kill()
