"""A fleet manifest (JSON or TOML) as a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ._model import VM, load_manifest
from ._safety import disk_owners


@dataclass
class ManifestSource:
    """A manifest: its disks must lie in the manifest's folder tree (add folders
    with ``--allow-path``)."""

    path: Path
    name: str = "manifest"
    allowed_roots: list[str] = field(default_factory=list)
    shared_roots: list[str] = field(default_factory=list)
    #: every disk of the last load, with its VM (the safety policy's ``fleet_disks``)
    disk_owners: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.allowed_roots = [str(self.path.resolve().parent)]
        self.shared_roots = list(self.allowed_roots)

    def load(self) -> list[VM]:
        vms = load_manifest(self.path).vms
        self.disk_owners = disk_owners(vms)
        return vms
