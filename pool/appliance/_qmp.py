"""A small synchronous QMP client: the worker's line to its own qemu.

Only what late binding needs: commands with a deadline, and waiting for an
event (``DEVICE_DELETED``) while remembering events that arrive early.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QMPError(Exception):
    """qemu refused a command (for example, it cannot open an image)."""


class QMPDead(QMPError):
    """The monitor did not answer in time or closed: qemu is stuck or gone."""


class QMP:
    def __init__(self, path: str, timeout: float = 10.0) -> None:
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise QMPDead(f"qemu's monitor socket {path} did not open") from None
                time.sleep(0.05)
        self._buf = b""
        self._events: list[dict[str, Any]] = []
        greeting = self._read(timeout)
        if "QMP" not in greeting:
            raise QMPError(f"unexpected QMP greeting: {greeting}")
        self.command("qmp_capabilities")

    def close(self) -> None:
        self._sock.close()

    def _read(self, timeout: float) -> dict[str, Any]:
        self._sock.settimeout(timeout)
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPDead("qemu's monitor did not answer in time") from None
            if not chunk:
                raise QMPDead("qemu's monitor closed (qemu died?)")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def command(self, name: str, arguments: dict[str, Any] | None = None,
                timeout: float = 10.0, fd: int | None = None) -> Any:
        """Run one command; ``fd`` travels with it (SCM_RIGHTS), for ``add-fd``."""
        msg: dict[str, Any] = {"execute": name}
        if arguments:
            msg["arguments"] = arguments
        data = json.dumps(msg).encode() + b"\n"
        try:
            if fd is None:
                self._sock.sendall(data)
            else:
                socket.send_fds(self._sock, [data], [fd])
        except OSError as e:
            raise QMPDead(f"qemu's monitor is gone: {e}") from None
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(max(0.01, deadline - time.monotonic()))
            if "event" in reply:
                self._events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(f"{name}: {err.get('class')}: {err.get('desc')}")
            return reply.get("return")

    def wait_event(self, name: str, timeout: float, **match: Any) -> dict[str, Any]:
        """The first event ``name`` whose data contains ``match``."""

        def matches(ev: dict[str, Any]) -> bool:
            data = ev.get("data", {})
            return ev.get("event") == name and all(data.get(k) == v for k, v in match.items())

        for ev in self._events:
            if matches(ev):
                self._events.remove(ev)
                return ev
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ev = self._read(left)
            if matches(ev):
                return ev
            if "event" in ev:
                self._events.append(ev)
        raise QMPError(f"no {name} event for {match} within {timeout:.0f} s")
