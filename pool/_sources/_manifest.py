"""A fleet manifest (JSON or TOML) as a source."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .._fleet import VM, load_manifest


@dataclass
class ManifestSource:
    path: Path
    name: str = "manifest"
    allowed_roots: list[str] = field(default_factory=list)

    def load(self) -> list[VM]:
        return load_manifest(self.path).vms
