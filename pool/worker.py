"""The appliance worker: one process, one ``guestfs`` handle, one qemu.

Run by the supervisor as ``python -m guestpool.worker``; it reads request
frames on stdin and writes replies on stdout (see :mod:`guestpool.wire`);
stderr carries logs. It dies with its parent (PR_SET_PDEATHSIG), and
libguestfs's recovery process kills qemu when the worker is gone, so a killed
supervisor leaves no qemu behind. A blocked guestfs call cannot be cancelled
from inside: the supervisor enforces deadlines by killing this process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from guestpool.inspectors.devices import device_listing, prepare_appliance
from guestpool.inspectors.guest import Guest
from guestpool.inspectors.registry import run_inspectors

from . import wire
from .errors import ImageError
from .qmp import QMP, QMPDead, QMPError
from .safety import resolve_image

DEVICE_WAIT_S = 30.0


class OpError(Exception):
    """An operation failed; ``kind`` tells the supervisor whom to blame."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # "image", "appliance", "bad_request"


@dataclass
class Attached:
    path: str
    node: str
    device_id: str
    device: str


def _die_with_parent() -> None:
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
            shutil.rmtree(workdir, ignore_errors=True)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


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


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _check_image(path: str) -> None:
    """Again at the worker, since the image may have changed since the supervisor's checks."""
    try:
        resolve_image(path)
    except ImageError as e:
        raise OpError("image", str(e)) from None


class Worker:
    def __init__(self) -> None:
        self.g: Any = None
        self.qmp: QMP | None = None
        self.tmpdir = tempfile.mkdtemp(prefix="worker-")
        self.attached: dict[str, Attached] = {}
        #: whether the daemon runs ``debug sh`` (the fast device probe); asked once
        self.shell = False

    # -- pooled appliance ----------------------------------------------------

    def op_boot(self, accel: str = "tcg", memsize: int | None = None, smp: int | None = None,
                verbose: bool = False) -> dict[str, Any]:
        if self.g is not None:
            raise OpError("bad_request", "appliance already booted")
        start = time.monotonic()
        g = _new_handle(accel, memsize, smp, verbose)
        g.add_drive_scratch(1024 * 1024)  # launch refuses a handle with no drive
        sock = os.path.join(self.tmpdir, "qmp.sock")
        g.config("-qmp", f"unix:{sock},server=on,wait=off")
        try:
            g.launch()
        except RuntimeError as e:
            g.close()
            raise OpError("appliance", f"appliance failed to boot: {e}") from e
        self.g = g
        self.qmp = QMP(sock)
        self.shell = prepare_appliance(g)
        return {"qemu_pid": g.get_pid(), "seconds": time.monotonic() - start}

    def _booted(self) -> tuple[Any, QMP]:
        if self.g is None or self.qmp is None:
            raise OpError("bad_request", "appliance not booted")
        return self.g, self.qmp

    def op_attach(self, disks: list[dict[str, Any]]) -> dict[str, str]:
        """Hot-add every disk, then wait once for all of them: the guest's SCSI
        scan of several disks overlaps instead of adding up."""
        _, qmp = self._booted()
        for disk in disks:
            label, path, fmt = disk["label"], disk["path"], disk["format"]
            if label in self.attached:
                raise OpError("bad_request", f"label {label} already attached")
            _check_image(path)
            node, dev_id = f"gp-{label}", f"gpd-{label}"
            # a running VM's qemu holds a write lock: share it, never take it
            share = {"force-share": True} if disk.get("live") else {}
            try:
                qmp.command("blockdev-add", {
                    "driver": fmt, "node-name": node, "read-only": True, **share,
                    "file": {"driver": "file", "filename": path, "read-only": True, **share}})
            except QMPDead as e:
                raise OpError("appliance", f"qemu did not answer: {e}") from e
            except QMPError as e:
                raise OpError("image", f"qemu cannot open {path} as {fmt}: {e}") from e
            try:
                qmp.command("device_add", {"driver": "scsi-hd", "drive": node, "bus": "scsi.0",
                                          "id": dev_id, "serial": label})
            except QMPError as e:
                with contextlib.suppress(QMPError):
                    qmp.command("blockdev-del", {"node-name": node})
                raise OpError("appliance", f"device_add failed: {e}") from e
            self.attached[label] = Attached(path, node, dev_id, "")
        return self._wait_devices([d["label"] for d in disks])

    def _wait_devices(self, labels: list[str]) -> dict[str, str]:
        """Appliance device of each label, from libguestfs's /dev/disk/guestfs names."""
        deadline = time.monotonic() + DEVICE_WAIT_S
        while time.monotonic() < deadline:
            known = device_listing(self.g.list_disk_labels)
            if all(lb in known for lb in labels):
                for lb in labels:
                    self.attached[lb].device = known[lb]
                return {lb: known[lb] for lb in labels}
            time.sleep(0.02)  # a listing costs ~1 ms; the disk shows up 0.2-0.4 s in
        raise OpError("appliance", f"attached disks did not appear in the appliance "
                                   f"within {DEVICE_WAIT_S:.0f} s")

    def op_detach(self, labels: list[str]) -> dict[str, Any]:
        """Release mounts, then unplug every disk and wait for the guest to let go."""
        g, qmp = self._booted()
        g.umount_all()
        going = [self.attached.pop(lb) for lb in labels if lb in self.attached]
        try:
            for att in going:
                qmp.command("device_del", {"id": att.device_id})
            for att in going:
                qmp.wait_event("DEVICE_DELETED", DEVICE_WAIT_S, device=att.device_id)
                qmp.command("blockdev-del", {"node-name": att.node})
        except QMPError as e:
            raise OpError("appliance", f"detaching disks failed: {e}") from e
        # qemu reports DEVICE_DELETED before the guest kernel lets go; the udev
        # link goes with the kernel's device, and reading the links costs ~1 ms
        # where listing block devices costs 0.2-0.6 s (it opens every disk)
        deadline = time.monotonic() + DEVICE_WAIT_S
        while set(device_listing(g.list_disk_labels)) & set(labels):
            if time.monotonic() > deadline:
                raise OpError("appliance", "detached disks are still present in the appliance")
            time.sleep(0.02)
        return {"attached": len(self.attached)}

    def op_inspect(self, vm: str, labels: list[str], inspectors: list[dict[str, Any]]
                   ) -> dict[str, Any]:
        g, _ = self._booted()
        missing = [lb for lb in labels if lb not in self.attached]
        if missing:
            raise OpError("bad_request", f"labels not attached: {missing}")
        guest = Guest(g, vm, [self.attached[lb].device for lb in labels], shell=self.shell)
        return self._inspect(guest, inspectors)

    def _inspect(self, guest: Guest, inspectors: list[dict[str, Any]]) -> dict[str, Any]:
        results = run_inspectors(guest, inspectors)
        try:
            guest.release()
        except RuntimeError as e:
            if not self._alive():
                raise OpError("appliance", f"appliance died during inspection: {e}") from e
            raise OpError("appliance", f"could not release {guest.vm}'s disks: {e}") from e
        if not all(r["ok"] for r in results.values()) and not self._alive():
            raise OpError("appliance", "appliance died during inspection")
        return results

    def _alive(self) -> bool:
        try:
            self.g.ping_daemon()  # returns nothing; raises if the daemon is gone
        except RuntimeError:
            return False
        return True

    def op_ping(self) -> dict[str, Any]:
        g, _ = self._booted()
        pid = g.get_pid()
        return {"qemu_pid": pid, "rss_kb": _rss_kb(pid), "alive": self._alive(),
                "attached": len(self.attached)}

    # -- cold path (one launch per VM, as virt-inspector does) -----------------

    def op_cold(self, vm: str, disks: list[dict[str, str]], inspectors: list[dict[str, Any]],
                accel: str = "tcg", memsize: int | None = None, smp: int | None = None
                ) -> dict[str, Any]:
        start = time.monotonic()
        g = _new_handle(accel, memsize, smp, False)
        try:
            for disk in disks:
                _check_image(disk["path"])
                try:
                    g.add_drive_opts(disk["path"], readonly=True, format=disk["format"],
                                     label=disk["label"])
                except RuntimeError as e:
                    raise OpError("image", f"{disk['path']}: {e}") from e
            try:
                g.launch()
            except RuntimeError as e:
                raise OpError("image", f"appliance could not open {vm}'s disks: {e}") from e
            booted = time.monotonic()
            self.g = g
            guest = Guest(g, vm, g.list_devices()[: len(disks)], shell=prepare_appliance(g))
            results = self._inspect(guest, inspectors)
            return {"results": results, "boot_seconds": booted - start,
                    "inspect_seconds": time.monotonic() - booted, "qemu_pid": g.get_pid()}
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
        if self.g is not None:
            with contextlib.suppress(RuntimeError):
                self.g.shutdown()
            self.g.close()
            self.g = None
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def op_shutdown(self) -> dict[str, Any]:
        self.close()
        return {}


def serve(inp: Any, out: Any) -> None:
    worker = Worker()
    try:
        while (req := wire.read_frame(inp)) is not None:
            rid, op, args = req.get("id"), req.get("op", ""), req.get("args") or {}
            start = time.monotonic()
            fn = getattr(worker, f"op_{op}", None)
            try:
                if fn is None:
                    raise OpError("bad_request", f"unknown operation {op!r}")
                result = fn(**args)
                reply = {"id": rid, "ok": True, "result": result}
            except OpError as e:
                reply = {"id": rid, "ok": False, "error": {"kind": e.kind, "message": str(e)}}
            except Exception as e:
                traceback.print_exc(file=sys.stderr)
                reply = {"id": rid, "ok": False,
                         "error": {"kind": "appliance", "message": f"{type(e).__name__}: {e}"}}
            reply["seconds"] = time.monotonic() - start
            wire.write_frame(out, reply)
            if op == "shutdown":
                break
    finally:
        worker.close()


def main() -> None:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the frame stream
    serve(sys.stdin.buffer, out)


if __name__ == "__main__":
    main()
