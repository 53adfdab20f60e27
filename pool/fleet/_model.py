"""The fleet: which VMs exist, their disks (path + explicit format) and tags."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import FleetError

FORMATS = ("raw", "qcow2")


@dataclass(frozen=True)
class Disk:
    """One disk image. The format is always declared, never probed from content."""

    path: str
    format: str

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise FleetError(f"disk {self.path}: format {self.format!r} is not one of {FORMATS}")


@dataclass(frozen=True)
class KeyFile:
    """Where a LUKS passphrase of the VM is: the first line of ``file`` (as
    virt-inspector's ``--key ID:file:FILE`` reads it), for ``device`` (the VM's
    own name: ``/dev/sda2``, ``/dev/vg/root``) or, without one, for every LUKS
    device of the VM. Only the path is kept; the passphrase is read when the
    VM is inspected and goes to the appliance alone."""

    file: str
    device: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {"file": self.file} | ({"device": self.device} if self.device else {})


@dataclass(frozen=True)
class VM:
    """A virtual machine to inspect.

    ``trust_group`` decides which appliances may serve it: an appliance never
    serves VMs of two groups (see pool/SECURITY.md).
    """

    name: str
    disks: tuple[Disk, ...]
    tags: tuple[str, ...] = ()
    trust_group: str = "default"
    priority: int = 0
    clone_of: str | None = None
    #: The VM is running: its disks are read without qemu's lock and may be inconsistent.
    live: bool = False
    #: A folder that holds this VM's disks and no other VM's (a Nova instance, a
    #: subfolder of a folder source): its disks, backing and data files must stay
    #: there (or in the source's shared folders).
    home: str | None = None
    #: LUKS keys: where to read them (never the passphrases themselves)
    keys: tuple[KeyFile, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "disks": [{"path": x.path, "format": x.format} for x in self.disks],
            "tags": list(self.tags),
            "trust_group": self.trust_group,
            "priority": self.priority,
        }
        if self.clone_of:
            d["clone_of"] = self.clone_of
        if self.live:
            d["live"] = True
        if self.keys:
            d["keys"] = [k.to_dict() for k in self.keys]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], base: Path | None = None) -> VM:
        try:
            disks = []
            for x in d["disks"]:
                p = Path(x["path"])
                if base is not None and not p.is_absolute():
                    p = base / p
                disks.append(Disk(str(p), x["format"]))
            if not disks:
                raise FleetError(f"VM {d['name']!r} has no disks")
            return cls(
                name=str(d["name"]),
                disks=tuple(disks),
                tags=tuple(d.get("tags", ())),
                trust_group=str(d.get("trust_group", "default")),
                priority=int(d.get("priority", 0)),
                clone_of=d.get("clone_of"),
                live=bool(d.get("live", False)),
                keys=tuple(_key_file(k, base) for k in d.get("keys", ())),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FleetError(f"bad VM entry {d!r:.120}: {e}") from e


def _key_file(d: Any, base: Path | None) -> KeyFile:
    if not isinstance(d, dict) or not isinstance(d.get("file"), str) \
            or not isinstance(d.get("device", ""), str) or set(d) - {"file", "device"}:
        raise TypeError('a key is {"file": PATH} or {"device": "/dev/sdXN", "file": PATH}')
    device = d.get("device") or None
    if device is not None and not re.fullmatch(r"/dev/[A-Za-z0-9_.+/-]{1,200}", device):
        raise ValueError(f"key device {device[:80]!r} is not a device name like /dev/sda2")
    path = Path(d["file"])
    if base is not None and not path.is_absolute():
        path = base / path
    return KeyFile(str(path), device)


@dataclass
class Fleet:
    vms: list[VM] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.vms)

    def by_name(self) -> dict[str, VM]:
        return {vm.name: vm for vm in self.vms}


def load_manifest(path: str | Path) -> Fleet:
    """Read a JSON or TOML manifest: ``{"vms": [{"name", "disks": [{"path", "format"}]}]}``.

    Relative disk paths are taken from the manifest's folder.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise FleetError(f"cannot read fleet manifest {path}: {e.strerror}") from e
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise FleetError(f"fleet manifest {path} is not valid {path.suffix[1:]}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("vms", []), list):
        raise FleetError(f"fleet manifest {path} must hold an object with a list \"vms\"")
    vms = [VM.from_dict(d, path.parent.resolve()) for d in data.get("vms", [])]
    names = [vm.name for vm in vms]
    if len(set(names)) != len(names):
        raise FleetError(f"fleet manifest {path} names a VM twice")
    return Fleet(vms)


def write_manifest(path: Path, vms: Iterable[VM]) -> None:
    """Write ``vms`` as a fleet.json manifest, atomically (a reader never sees half)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"vms": [vm.to_dict() for vm in vms]}, indent=1))
    tmp.replace(path)
