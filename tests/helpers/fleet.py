"""The demo fleet the tests share, with ground truth and image digests."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from guestpool import VM, load_manifest
from guestpool.demo._fleet import generate


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class DemoFleet:
    def __init__(self, directory: Path, count: int = 12) -> None:
        self.directory = directory
        self.manifest = generate(directory, count)
        self.vms = load_manifest(self.manifest).vms
        self.truth: dict[str, Any] = json.loads((directory / "truth.json").read_text())
        self.digests = {d.path: sha256(d.path) for vm in self.vms for d in vm.disks}

    def one_of_each(self) -> list[VM]:
        seen: dict[str, VM] = {}
        for vm in self.vms:
            seen.setdefault(self.truth[vm.name]["kind"], vm)
        return list(seen.values())
