"""A real `guestpool serve` on loopback, started as a subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from guestpool.bench.service_load import wait_serving

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, store: Path, *args: str, token: str | None = TOKEN) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env.pop("GUESTPOOL_TOKEN", None)
        if token:
            env["GUESTPOOL_TOKEN"] = token
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "guestpool", "serve", *args, "--bind",
             f"127.0.0.1:{self.port}", "--store", str(store)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_serving(self.url, self.proc)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def tiny_manifest(folder: Path) -> Path:
    """A manifest of two VMs whose images need not exist: enough for a paused service."""
    path = folder / "fleet.json"
    path.write_text(json.dumps({"vms": [
        {"name": f"vm{i}", "disks": [{"path": f"vm{i}.qcow2", "format": "qcow2"}]}
        for i in range(2)]}))
    return path
