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

from ._schema import FORMATS, FieldError, check_name, parse_vm

#: a manifest larger than this is refused before it is parsed (10,000 VMs take ~3 MB)
MAX_MANIFEST_BYTES = 64 * 2**20


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
    #: subfolder of a folder source), or its one image file (a single image of a
    #: folder source): its disks, backing and data files must stay there (or in
    #: the source's shared folders).
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
        """A VM from a manifest entry, checked field by field (``_schema``); raises
        :class:`~guestpool._errors.FleetError` naming the field."""
        fields = parse_vm(d, base)
        keys = []
        for i, k in enumerate(fields.pop("keys")):
            try:
                keys.append(_key_file(k, base))
            except (TypeError, ValueError) as e:
                raise FieldError(f"keys[{i}]", str(e)) from None
        return cls(disks=tuple(Disk(p, f) for p, f in fields.pop("disks")), keys=tuple(keys),
                   **fields)


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

    Relative disk paths are taken from the manifest's folder. Every entry is
    checked strictly (``_schema``); an error is one line naming the file, the VM
    and the field.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_MANIFEST_BYTES + 1)
    except OSError as e:
        raise FleetError(f"cannot read fleet manifest {path}: {e.strerror}") from e
    if len(raw) > MAX_MANIFEST_BYTES:
        raise FleetError(f"fleet manifest {path} is larger than {MAX_MANIFEST_BYTES >> 20} MiB: "
                         "split the fleet")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FleetError(f"fleet manifest {path} is not UTF-8 (byte {e.start})") from None
    kind = "TOML" if path.suffix == ".toml" else "JSON"
    try:
        data = tomllib.loads(text) if kind == "TOML" else json.loads(
            text, object_pairs_hook=_no_duplicate_keys)
    except RecursionError:
        raise FleetError(f"fleet manifest {path} is nested too deeply") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise FleetError(f"fleet manifest {path} is not valid {kind}: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("vms", []), list) \
            or set(data) - {"vms"}:
        raise FleetError(f"fleet manifest {path} must hold an object with one field, a list "
                         "\"vms\"")
    vms, seen = [], set()
    for i, entry in enumerate(data.get("vms", [])):
        try:
            vm = VM.from_dict(entry, path.parent.resolve())
        except FieldError as e:
            raise FleetError(f"fleet manifest {path}: {_which(entry, i)}: {e}") from None
        if vm.name in seen:
            raise FleetError(f"fleet manifest {path}: VM {vm.name!r} (entry {i}) is named twice")
        seen.add(vm.name)
        vms.append(vm)
    return Fleet(vms)


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it names a field twice (TOML refuses that too)."""
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"the field {key[:80]!r} is given twice")
        seen[key] = value
    return seen


def _which(entry: object, i: int) -> str:
    """"VM 'web' (entry 3)", or "entry 3" when the name itself is the problem."""
    name = entry.get("name") if isinstance(entry, dict) else None
    try:
        return f"VM {check_name(name)!r} (entry {i})"
    except FieldError:
        return f"entry {i}"


def write_manifest(path: Path, vms: Iterable[VM]) -> None:
    """Write ``vms`` as a fleet.json manifest, atomically (a reader never sees half)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"vms": [vm.to_dict() for vm in vms]}, indent=1))
    tmp.replace(path)
