"""The fidelity corpus the tests share: manifest, VMs, ground truth, image digests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from guestpool import VM, load_manifest
from guestpool.bench.fidelity import Key, manifest_keys
from guestpool.demo._corpus import build_corpus
from helpers.fleet import sha256


class Corpus:
    """Built once per session from the cache (an appliance only when the cache is cold)."""

    def __init__(self, directory: Path) -> None:
        self.manifest = build_corpus(directory)
        self.vms = load_manifest(self.manifest).vms
        self.expected: dict[str, Any] = json.loads((directory / "expected.json").read_text())
        self.keys: dict[str, list[Key]] = manifest_keys(self.manifest)
        self.digests = {d.path: sha256(d.path) for vm in self.vms for d in vm.disks}

    def vm(self, name: str) -> VM:
        return next(vm for vm in self.vms if vm.name == name)
