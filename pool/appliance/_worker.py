"""The appliance worker: one process, one ``guestfs`` handle, one qemu.

Run by the supervisor as ``python -m guestpool.appliance._worker``; it reads request
frames on stdin and writes replies on stdout (see :mod:`guestpool.appliance._protocol`);
stderr carries logs. It imports no supervisor code. It dies with its parent
(a watchdog thread), and libguestfs's recovery process kills qemu when the
worker is gone, so a killed supervisor leaves no qemu behind. A blocked guestfs
call cannot be cancelled from inside: the supervisor enforces deadlines by
killing this process.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from guestpool.inspectors._guest import Guest, Unreleasable
from guestpool.inspectors._registry import run_inspectors
from guestpool.inspectors._shell import PRINT_MOUNTS, outside_sysroot
from guestpool.inspectors._specs import InspectorSpec

from ._hotplug import (
    HotPlug,
    OpError,
    check_image,
    drive_label,
    kernel_disks,
    prepare_appliance,
)
from ._protocol import (
    Attach,
    Attached,
    Boot,
    Booted,
    Closed,
    Cold,
    ColdDone,
    Detach,
    Detached,
    ErrorKind,
    Failure,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    Inspect,
    Inspected,
    Ping,
    Pong,
    Reply,
    ReplyFrame,
    Request,
    Shutdown,
    decode_request,
    frame,
)
from ._qmp import QMP, QMPError


def _die_with_parent() -> Callable[[], bool]:
    """Exit as soon as the supervisor is gone, even mid guestfs call.

    PR_SET_PDEATHSIG is not enough: it fires when the *thread* that spawned us
    exits, and async runtimes spawn from short-lived worker threads. A watchdog
    thread polls the parent instead; libguestfs's recovery process then kills
    qemu within a second of our exit.
    """
    expected = int(os.environ.get("GUESTPOOL_PARENT_PID") or os.getppid())
    workdir = os.environ.get("GUESTPOOL_WORKDIR")

    def watch() -> None:
        while os.getppid() == expected:
            time.sleep(0.2)
        if workdir:  # the supervisor that would have removed it is gone
            _remove(workdir)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
    return lambda: os.getppid() != expected


def _remove(folder: str, tries: int = 20) -> None:
    """Remove ``folder``, again while something (qemu, libguestfs's own cleanup)
    still adds or holds files in it: one ``rmtree`` that races them leaves it."""
    for _ in range(tries):
        shutil.rmtree(folder, ignore_errors=True)
        if not os.path.lexists(folder):
            return
        time.sleep(0.05)


#: what a worker may allocate beyond the appliance's memory, in MiB: guest bytes
#: it parses (a 128 MiB package database, say) come from the appliance, whose
#: memory bounds what it can hand over at once
WORKER_HEADROOM_MB = 768


def limit_memory(memsize_mb: int) -> int:
    """Bound this worker's data (heap and anonymous maps: ``RLIMIT_DATA``), so a
    hostile guest's bytes make one inspector fail with MemoryError, never the
    host swap; returns the limit in bytes."""
    limit = (memsize_mb + WORKER_HEADROOM_MB) * 2**20
    _soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    return limit


def _new_handle(accel: str, memsize: int | None, smp: int | None, verbose: bool) -> Any:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if accel == "tcg":
        g.set_backend_settings(["force_tcg"])
    if memsize:
        g.set_memsize(memsize)
    if smp:
        g.set_smp(smp)
    g.set_verbose(verbose)
    g.set_recovery_proc(True)  # kills qemu if this process dies
    return g


def appliance_mounts(g: Any) -> frozenset[str]:
    """The appliance's own mount table: /proc/mounts outside /sysroot (where the
    guests are mounted). Needs the daemon's ``debug sh``."""
    return outside_sysroot(str(g.debug("sh", [PRINT_MOUNTS])))


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class Worker:
    """Answers one request at a time against its own appliance."""

    def __init__(self) -> None:
        self.g: Any = None
        self.qmp: QMP | None = None
        self.plug: HotPlug | None = None
        self.tmpdir = tempfile.mkdtemp(prefix="worker-")
        #: whether the daemon runs ``debug sh`` (the fast device probe); asked once
        self.shell = False
        #: the appliance's own mounts (outside /sysroot) after boot; None: cannot tell
        self.mount_table: frozenset[str] | None = None

    def handle(self, request: Request) -> Reply:
        match request:
            case Boot():
                return self.boot(request)
            case Attach():
                return Attached(self._plugged().attach(request.disks))
            case Inspect():
                plug = self._plugged()
                guest = Guest(self.g, request.vm, plug.devices(request.labels), shell=self.shell,
                              keys=request.keys)
                results = self._inspect(guest, request.inspectors)
                self._check_integrity(request.vm, guest.appliance_mounts)
                return Inspected(results, {k: round(v, 4) for k, v in guest.steps.items()})
            case Detach():
                return Detached(self._plugged().detach(request.labels))
            case Ping():
                return self.ping()
            case Cold():
                return self.cold(request)
            case Shutdown():
                self.close()
                return Closed()
        raise OpError(ErrorKind.BAD_REQUEST, f"unknown request {type(request).__name__}")

    # -- pooled appliance ----------------------------------------------------

    def boot(self, req: Boot) -> Booted:
        if self.g is not None:
            raise OpError(ErrorKind.BAD_REQUEST, "appliance already booted")
        start = time.monotonic()
        g = _new_handle(req.accel, req.memsize, req.smp, req.verbose)
        g.add_drive_scratch(1024 * 1024)  # launch refuses a handle with no drive
        sock = os.path.join(self.tmpdir, "qmp.sock")
        g.config("-qmp", f"unix:{sock},server=on,wait=off")
        try:
            g.launch()
        except RuntimeError as e:
            g.close()
            raise OpError(ErrorKind.APPLIANCE, f"appliance failed to boot: {e}") from e
        self.g = g
        with contextlib.suppress(RuntimeError):
            # an empty MBR on the scratch disk: libguestfs's own inspect_os (the os
            # inspector's `full` option) reads every disk's partition table and
            # fails on one without ("unrecognised disk label"), Windows guests most
            g.part_init("/dev/sda", "mbr")
        try:
            self.qmp = QMP(sock)
        except (QMPError, OSError) as e:
            raise OpError(ErrorKind.UNSUPPORTED, f"qemu's QMP monitor is unavailable: {e}") from e
        self.plug = HotPlug(g, self.qmp)
        self.shell = prepare_appliance(g)
        self.mount_table = self._own_mounts()
        limit_memory(g.get_memsize())  # qemu, forked already, is not bound by it
        return Booted(qemu_pid=g.get_pid(), seconds=time.monotonic() - start)

    def _plugged(self) -> HotPlug:
        if self.plug is None:
            raise OpError(ErrorKind.BAD_REQUEST, "appliance not booted")
        return self.plug

    def _inspect(self, guest: Guest, inspectors: list[InspectorSpec]) -> dict[str, Any]:
        results = run_inspectors(guest, inspectors)
        try:
            guest.release()
        except Unreleasable as e:  # never reused, and the VM not tried elsewhere
            raise OpError(ErrorKind.HOSTILE, str(e)) from e
        except RuntimeError as e:
            if not self._alive():
                raise OpError(ErrorKind.APPLIANCE,
                              f"appliance died during inspection: {e}") from e
            raise OpError(ErrorKind.APPLIANCE, f"could not release {guest.vm}'s disks: {e}") from e
        if not all(r["ok"] for r in results.values()) and not self._alive():
            raise OpError(ErrorKind.APPLIANCE, "appliance died during inspection")
        return results

    def _own_mounts(self) -> frozenset[str] | None:
        return appliance_mounts(self.g) if self.shell else None

    def _check_integrity(self, vm: str, now: frozenset[str] | None = None) -> None:
        """After a VM: nothing of it may remain mounted over the appliance's own
        folders (its tools, its udev database). If something does, the next VM of
        the trust group would be read by the guest's programs: retire."""
        if self.mount_table is None:
            return
        if now is None:
            now = self._own_mounts()
        if now != self.mount_table:
            added = sorted((now or frozenset()) - self.mount_table)[:3]
            raise OpError(ErrorKind.HOSTILE, f"{vm} changed the appliance's mount table "
                                             f"outside /sysroot ({'; '.join(added)})")

    def _alive(self) -> bool:
        try:
            self.g.ping_daemon()  # returns nothing; raises if the daemon is gone
        except RuntimeError:
            return False
        return True

    def ping(self) -> Pong:
        plug = self._plugged()
        pid = self.g.get_pid()
        return Pong(qemu_pid=pid, rss_kb=_rss_kb(pid), alive=self._alive(),
                    attached=len(plug.plugged))

    # -- cold path (one launch per VM, as virt-inspector does) -----------------

    def cold(self, req: Cold) -> ColdDone:
        start = time.monotonic()
        g = _new_handle(req.accel, req.memsize, req.smp, False)
        try:
            for i, disk in enumerate(req.disks):
                check_image(disk.path)
                try:
                    # libguestfs drive labels are letters only
                    g.add_drive_opts(disk.path, readonly=True, format=disk.format,
                                     label=drive_label(i))
                except RuntimeError as e:
                    raise OpError(ErrorKind.IMAGE, f"{disk.path}: {e}") from e
            try:
                g.launch()
            except RuntimeError as e:
                raise OpError(ErrorKind.IMAGE,
                              f"appliance could not open {req.vm}'s disks: {e}") from e
            booted = time.monotonic()
            self.g = g
            shell = prepare_appliance(g)
            devices, api_names = _launched_disks(g, len(req.disks), shell)
            guest = Guest(g, req.vm, devices, shell=shell, keys=req.keys, api_names=api_names)
            results = self._inspect(guest, req.inspectors)
            return ColdDone(results=results, boot_seconds=booted - start,
                            inspect_seconds=time.monotonic() - booted, qemu_pid=g.get_pid())
        finally:
            self.g = None
            with contextlib.suppress(RuntimeError):
                g.shutdown()
            g.close()

    # -- lifecycle -------------------------------------------------------------

    def close(self) -> None:
        if self.qmp is not None:
            self.qmp.close()
            self.qmp = None
        self.plug = None
        if self.g is not None:
            with contextlib.suppress(RuntimeError):
                self.g.shutdown()
            self.g.close()
            self.g = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)


def _launched_disks(g: Any, count: int, shell: bool) -> tuple[list[str], dict[str, str]]:
    """The VM's disks in an appliance launched with them: the kernel's names (in
    the VM's order, what the shell path reads from udev) and the API name of each
    (what API calls take). Without a shell the stable API is used throughout,
    with the API's names."""
    api = list(g.list_devices()[:count])
    if not shell:
        return api, {}
    try:
        kernel = kernel_disks(g, [drive_label(i) for i in range(count)])
    except ValueError as e:
        raise OpError(ErrorKind.APPLIANCE, str(e)) from None
    return kernel, dict(zip(kernel, api, strict=True))


def _answer(worker: Worker, request: Request) -> Reply:
    try:
        return worker.handle(request)
    except OpError as e:
        return Failure(e.kind, str(e))
    except Exception as e:
        traceback.print_exc(file=sys.stderr)
        return Failure(ErrorKind.APPLIANCE, f"{type(e).__name__}: {e}")


def _reply_frame(rid: int, reply: Reply, seconds: float) -> bytes:
    """The reply's frame; one too large to send becomes a failure the VM is blamed
    for, so the worker keeps serving (its inspectors' output is capped, so only a
    combination of plugins can get here)."""
    try:
        return frame(ReplyFrame(rid, reply, seconds))
    except FrameTooLarge as e:
        return frame(ReplyFrame(rid, Failure(ErrorKind.IMAGE, f"results too large: {e}"),
                                seconds))


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Answer frames from ``inp`` on ``out`` until end of input or a shutdown."""
    worker = Worker()
    decoder = FrameDecoder()
    try:
        while True:
            body = decoder.next_frame()
            if body is None:
                chunk = os.read(inp.fileno(), 1 << 16)
                if not chunk:
                    if decoder.buffered:
                        raise FrameError("input ended inside a frame")
                    return
                decoder.feed(chunk)
                continue
            message = decode_request(body)
            start = time.monotonic()
            reply = _answer(worker, message.request)
            out.write(_reply_frame(message.id, reply, time.monotonic() - start))
            out.flush()
            if isinstance(message.request, Shutdown):
                return
    finally:
        worker.close()


def main() -> None:
    orphaned = _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the frame stream
    serve(sys.stdin.buffer, out)
    if orphaned():  # the watchdog removes the folder last, then ends the process
        time.sleep(10)


if __name__ == "__main__":
    main()
