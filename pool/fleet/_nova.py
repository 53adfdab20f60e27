"""An OpenStack Nova compute node's instances folder as a source."""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from guestpool._errors import FleetError

from ._model import VM, Disk
from ._safety import disk_owners
from ._schema import FORMATS

log = logging.getLogger("guestpool")


@dataclass
class NovaSource:
    """A compute node's ``instances`` folder: ``<uuid>/disk`` (+ ``disk.local``),
    formats from ``<uuid>/disk.info``, owner project from ``<uuid>/libvirt.xml``,
    backing files in ``_base``."""

    path: Path
    name: str = "nova"
    allowed_roots: list[str] = field(default_factory=list)
    shared_roots: list[str] = field(default_factory=list)
    #: every disk of the last load, with its VM (the safety policy's ``fleet_disks``)
    disk_owners: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        base = str((self.path / "_base").resolve())
        self.allowed_roots = [str(self.path.resolve()), base]
        self.shared_roots = [base]  # each instance folder is its VM's alone

    def load(self) -> list[VM]:
        if not self.path.is_dir():
            raise FleetError(f"nova instances folder {self.path} is not a folder")
        vms = []
        for inst in sorted(self.path.iterdir()):
            if not inst.is_dir() or inst.name.startswith(("_", ".")) or \
                    inst.name in ("locks", "snapshots"):
                continue
            info_path = inst / "disk.info"
            try:
                info = json.loads(info_path.read_text()) if info_path.exists() else {}
            except ValueError as e:
                raise FleetError(f"{info_path} is not valid JSON: {e}") from None
            disks = []
            for name in ("disk", "disk.local", "disk.eph0"):
                p = inst / name
                if not p.exists():
                    continue
                fmt = info.get(str(p)) or info.get(str(p.resolve()))
                if fmt not in FORMATS:
                    log.warning("skipping %s: disk.info gives no usable format", p)
                    continue
                disks.append(Disk(str(p), fmt))
            if disks:
                vms.append(VM(inst.name, tuple(disks), tags=("nova",), home=str(inst.resolve()),
                              trust_group=_nova_project(inst / "libvirt.xml") or "nova"))
        self.disk_owners = disk_owners(vms)
        return vms


def _nova_project(xml_path: Path) -> str | None:
    if not xml_path.is_file():
        return None
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.endswith("}project") and el.get("uuid"):
            return f"project-{el.get('uuid')}"
    return None
