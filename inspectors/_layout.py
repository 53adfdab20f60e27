"""What discovery finds on one VM's disks, named as the VM names them: its
filesystems, what could not be read (findings), and the layers opened to
reach them (md arrays, LUKS devices, volume groups) that release closes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

#: filesystem types the appliance's kernel mounts; anything else with a TYPE
#: that is no container is reported as unsupported
MOUNTABLE = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "vfat", "ntfs", "exfat", "f2fs", "iso9660",
    "udf", "squashfs", "hfsplus", "jfs", "minix", "swap"})


@dataclass
class Filesystem:
    """A filesystem of the VM. ``device`` is the VM's name for it; ``path`` the
    appliance block device behind it; ``subvol`` a btrfs subvolume's path."""

    device: str
    type: str
    uuid: str = ""
    label: str = ""
    path: str = ""
    subvol: str = ""

    def __post_init__(self) -> None:
        if not self.path:
            self.path = self.device


@dataclass(frozen=True)
class Finding:
    """Something on the VM's disks that could not be read, and why."""

    device: str
    kind: str
    detail: str

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "kind": self.kind, "detail": self.detail}


@dataclass
class Layout:
    """What one VM's disks hold, as found in the appliance."""

    #: partitions, whole disks, md arrays, opened LUKS devices and logical volumes
    #: with a filesystem (no LVM swap), in disk order
    filesystems: list[Filesystem]
    #: volume groups activated for the VM
    volume_groups: list[str]
    #: the physical volumes LVM was run on alone (``--devices``); empty when the
    #: stable API activated the groups
    lvm_devices: list[str]
    #: what could not be read
    findings: list[Finding] = field(default_factory=list)
    #: layers opened, in order: ("md", device) ("luks", mapname) ("lvm", LV dm names)
    opened: list[tuple[str, ...]] = field(default_factory=list)
    #: partition identities -> the VM's partition name, as Windows records drive
    #: letters: ``mbr:<disk signature>:<byte offset>``, ``gpt:<partition GUID>``
    partition_ids: dict[str, str] = field(default_factory=dict)
    #: appliance block device -> the VM's name for it
    names: dict[str, str] = field(default_factory=dict)
    #: the appliance device discovery left mounted read-only at /sysroot (the
    #: VM's only filesystem a probe would mount; a btrfs at its top level), or ""
    #: (``premount`` only)
    mounted: str = ""


def vm_disk_name(index: int) -> str:
    """The VM's name for its ``index``-th disk: sda..sdz, sdaa.. (as Linux names them)."""
    letters = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        letters = chr(ord("a") + rem) + letters
    return f"/dev/sd{letters}"


def api_device(path: str, api_names: Mapping[str, str]) -> str:
    """The name libguestfs's API takes for the kernel's device ``path``.

    The daemon renames ``/dev/sdX[N]`` by the order disks were added at launch
    (``/dev/sda`` = the first), while the kernel names them in the order its SCSI
    scan finished. Disks hot-plugged later are not renamed (``api_names`` is
    empty); an appliance launched with the VM's disks (the cold strategy) passes
    the kernel disk -> API disk map it read from the disks' labels."""
    m = re.fullmatch(r"(/dev/sd[a-z]+)(\d*)", path)
    if m is None or m.group(1) not in api_names:
        return path
    return api_names[m.group(1)] + m.group(2)


def part_of(part: str, device: str) -> bool:
    return part.startswith(device) and part[len(device):].isdigit()
