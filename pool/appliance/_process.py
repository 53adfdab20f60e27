"""The real appliance: a worker process (``python -m guestpool.appliance._worker``) that owns one
libguestfs handle, and so one qemu, spoken to in frames over its stdin/stdout."""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import anyio
from anyio.abc import Process

from guestpool._errors import ApplianceError, ApplianceTimeout

from ._abc import Appliance
from ._protocol import (
    FrameDecoder,
    FrameError,
    Reply,
    ReplyFrame,
    Request,
    RequestFrame,
    Shutdown,
    decode_reply,
    frame,
)

#: What a worker inherits from the supervisor's environment: locale, paths, and the
#: settings of libguestfs, supermin and guestpool. Never credentials: a hostile
#: guest that owns its appliance must find no token in the worker or in qemu.
_INHERITED = re.compile(r"(PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|LC_\w+|TZ|TERM|PYTHONPATH"
                        r"|VIRTUAL_ENV|XDG_\w+|LIBGUESTFS_\w+|SUPERMIN_\w+|GUESTPOOL_\w+)")
_SECRET = re.compile(r".*(TOKEN|SECRET|PASSWORD|PASSPHRASE|CREDENTIAL).*", re.IGNORECASE)


def worker_environment(workdir: str, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment of a worker (and so of its qemu)."""
    source = os.environ if environ is None else environ
    env = {k: v for k, v in source.items()
           if _INHERITED.fullmatch(k) and not _SECRET.fullmatch(k)}
    # the worker's temp files (QMP socket, libguestfs's tmpdir) live in one folder
    # we own, so even a killed worker leaves nothing behind
    env.update(GUESTPOOL_PARENT_PID=str(os.getpid()), GUESTPOOL_WORKDIR=workdir, TMPDIR=workdir)
    env.setdefault("LIBGUESTFS_CACHEDIR", "/var/tmp")
    return env


#: how often a request in flight looks at its worker and qemu, and for how long
#: one of them may stay stopped before the appliance is taken as frozen
WATCH_S = 0.5
STOPPED_S = 1.5


class Frozen(Exception):
    """The worker or its qemu is stopped, or qemu is gone, while a request waits."""


def process_state(pid: int) -> str | None:
    """The state letter of ``/proc/PID/stat`` (R, S, D, T, Z...); None: no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one error a task group wrapped (its first, looking inside nested groups)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


class WorkerAppliance(Appliance):
    """An appliance in its own process group: killing the group ends worker and qemu."""

    def __init__(self, proc: Process, workdir: str) -> None:
        super().__init__()
        self.proc = proc
        self.workdir = workdir
        self._decoder = FrameDecoder()
        self._seq = itertools.count()
        self._lock = anyio.Lock()

    @classmethod
    async def spawn(cls) -> WorkerAppliance:
        """Start a worker process (not yet booted: send it :class:`Boot`)."""
        workdir = tempfile.mkdtemp(prefix="guestpool-app-")
        try:
            proc = await anyio.open_process(
                [sys.executable, "-m", "guestpool.appliance._worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None,
                env=worker_environment(workdir), start_new_session=True,
            )
        except BaseException:  # e.g. a replacement boot cancelled as the pool closes
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(proc, workdir)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def request(self, request: Request, timeout: float) -> Reply:
        """One round trip; a missed deadline, a broken stream or a cancellation
        kills the appliance (its state is unknown from then on)."""
        async with self._lock:
            if self.state == "retired":
                raise ApplianceError(f"appliance {self.id} is retired")
            rid = next(self._seq)
            op = type(request).__name__
            done = False
            try:
                with anyio.fail_after(timeout):
                    answer = await self._watched(RequestFrame(rid, request),
                                                 qemu=not isinstance(request, Shutdown))
                done = True
            except Frozen as e:
                await self.kill()
                raise ApplianceError(f"appliance {self.id}: {e} during {op}; appliance "
                                     "killed") from None
            except TimeoutError:
                await self.kill()
                raise ApplianceTimeout(
                    f"appliance {self.id}: {op} missed its {timeout:.0f} s deadline; "
                    "appliance killed") from None
            except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError,
                    FrameError, OSError) as e:
                await self.kill()
                raise ApplianceError(f"appliance {self.id} died during {op}: "
                                     f"{type(e).__name__}") from None
            finally:
                if not done:  # cancelled mid-operation: the worker's state is unknown
                    with anyio.CancelScope(shield=True):
                        await self.kill()
        if answer.id != rid:
            await self.kill()
            raise ApplianceError(f"appliance {self.id} answered out of order")
        return answer.reply

    async def _watched(self, message: RequestFrame, qemu: bool) -> ReplyFrame:
        """The round trip, while a watch looks at the worker and its qemu every
        ``WATCH_S``: a process stopped (SIGSTOP, a debugger) or gone ends the wait
        in seconds instead of at the operation's deadline (:class:`Frozen`)."""
        reason: str | None = None
        answer: ReplyFrame | None = None
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal reason
                    reason = await self._watch(qemu)
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                answer = await self._roundtrip(message)
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:  # the round trip's own error, as it was
            raise _first(group) from None
        if reason is not None:
            raise Frozen(reason)
        assert answer is not None
        return answer

    async def _watch(self, qemu: bool) -> str:
        """Why the appliance is frozen, once a watched process has been stopped for
        ``STOPPED_S`` or (``qemu``: not while shutting down) its qemu is gone."""
        stopped_since: float | None = None
        while True:
            await anyio.sleep(WATCH_S)
            states = {pid: process_state(pid) for pid in (self.proc.pid, self.qemu_pid) if pid}
            if qemu and self.qemu_pid and states.get(self.qemu_pid) in (None, "Z", "X"):
                return f"qemu {self.qemu_pid} is gone"
            if any(state in ("T", "t") for state in states.values()):
                now = anyio.current_time()
                stopped_since = stopped_since if stopped_since is not None else now
                if now - stopped_since >= STOPPED_S:
                    return (f"stopped for {now - stopped_since:.1f} s "
                            f"({', '.join(f'{p}: {st}' for p, st in states.items())})")
            else:
                stopped_since = None

    async def _roundtrip(self, message: RequestFrame) -> ReplyFrame:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        await self.proc.stdin.send(frame(message))
        while (body := self._decoder.next_frame()) is None:
            self._decoder.feed(await self.proc.stdout.receive())
        return decode_reply(body)

    async def kill(self) -> None:
        """SIGKILL the worker's process group (worker and qemu) and reap it."""
        self.state = "retired"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with anyio.CancelScope(shield=True):
            await self.proc.wait()
            await self.proc.aclose()
        shutil.rmtree(self.workdir, ignore_errors=True)

    async def exited(self) -> None:
        await self.proc.wait()
