"""A real nats-server for tests: JetStream store and per-host users in a temp
folder, a free port, restartable on the same store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from guestpool.nats import NatsSettings, write_config
from guestpool.nats._config import COORDINATOR_USER, agent_user
from helpers.server import free_port


class NatsServer:
    def __init__(self, folder: Path, hosts: list[str], nkeys: bool = False) -> None:
        if shutil.which("nats-server") is None:
            raise RuntimeError("nats-server is not installed: run pool/bootstrap.sh")
        self.folder, self.port = folder, free_port()
        self.nkeys = nkeys
        write_config(folder / "conf", hosts, port=self.port, store_dir=str(folder / "js"),
                     nkeys=nkeys)
        self.url = f"nats://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def password_file(self, user: str) -> Path:
        return self.folder / "conf" / f"{user}.password"

    def settings(self, host: str | None = None) -> NatsSettings:
        """The coordinator's credentials, or ``host``'s agent's."""
        user = agent_user(host) if host else COORDINATOR_USER
        if self.nkeys:
            return NatsSettings(self.url, nkey=str(self.folder / "conf" / f"{user}.nk"))
        return NatsSettings(self.url, user=user,
                            password=self.password_file(user).read_text().strip())

    def start(self) -> None:
        log = open(self.folder / "server.log", "ab")  # noqa: SIM115 (the child owns it)
        self.proc = subprocess.Popen(
            ["nats-server", "-c", str(self.folder / "conf" / "nats-server.conf")],
            stdout=log, stderr=log)
        log.close()
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), 0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"nats-server did not listen on {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None

    def restart(self, down: float = 1.0) -> None:
        self.stop()
        time.sleep(down)
        self.start()
