"""Late binding inside the worker: hot-plug a VM's disks into a booted appliance
over QMP, find them in the guest, and unplug them again.

pool/README.md, "Late binding of disks": the format driver is always explicit (never
probed), both block nodes are read-only, each disk is a ``scsi-hd`` whose serial
is its label, so libguestfs's udev rule names it ``/dev/disk/guestfs/<label>``.
The label is its SCSI product name too, so a prepared appliance's udev names it
without running ``scsi_id`` (see :func:`prepare_appliance`).
"""

from __future__ import annotations

import contextlib
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from guestpool._errors import ImageError
from guestpool.fleet._safety import resolve_image
from guestpool.inspectors._shell import device_listing, shell_lines

from ._descriptors import ChainRefused, chain_options, check_nodes, hand_over, node_files, release
from ._protocol import DiskRef, ErrorKind
from ._qmp import QMP, QMPDead, QMPError

DEVICE_WAIT_S = 30.0
#: the SCSI vendor of hot-plugged disks: a prepared appliance's udev takes their
#: label from the product name instead of running ``scsi_id`` for the serial
HOTPLUG_VENDOR = "GUESTPL"


class OpError(Exception):
    """An operation failed; ``kind`` tells the supervisor whom to blame."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Plugged:
    path: str
    node: str
    device_id: str
    device: str = ""
    #: the fd sets of its files (attached by descriptor), released with it
    fdsets: list[int] = field(default_factory=list)


def prepare_appliance(g: Any) -> bool:
    """Once per booted appliance: whether its daemon runs ``debug sh`` (the fast
    device probe), and if so, stop its udev from scanning and auto-activating LVM
    on every disk we hot-plug (69-lvm.rules runs ``lvm pvscan`` and ``lvm vgchange``:
    about 1 s of the single vCPU per LVM disk) and from assembling md arrays out
    of whatever members appear (64-md-raid-assembly.rules: two VMs' members of
    cloned arrays would join one array), and from turning the SCSI bus's "LUNs
    changed" notice, sent to every disk at every hot-plug and unplug, into a
    re-probe of each disk (60-block.rules forwards it as a block "change": two
    probes per disk per plug, competing with the inspection for the vCPU). Our
    hot-plugged disks are named from their SCSI product name (the label) before
    60-persistent-storage.rules would run ``scsi_id`` for their serial: the one
    program udev started per disk, ~50 ms of the vCPU under TCG. Rules for
    what an appliance never sees are masked (:data:`UNUSED_UDEV_RULES`).
    Volume groups and arrays are then opened only when an inspection asks, only
    from the VM being inspected."""
    try:
        out = str(g.debug("sh", [_PREPARE_SCRIPT]))
    except RuntimeError:
        return False
    return "shell=ok" in shell_lines(out)


#: udev rules an appliance has no use for once booted: hardware it never gains
#: (input, sound, video, network, seats, serial and tape ports, firmware, power,
#: multipath), systemd's unit tags (no systemd runs), Debian's device modes and
#: ``sg`` loading (loaded at boot), e2scrub's snapshot hint. Masked, so the ~20
#: events of each hot-plug and unplug are not run through them (in-appliance
#: A/B: 14% less udev CPU per job, job 0.77 -> 0.70 s). A name an appliance
#: lacks masks nothing; storage's own rules are never on this list.
UNUSED_UDEV_RULES = (
    "50-firmware", "60-autosuspend", "60-cdrom_id", "60-drm", "60-evdev", "60-fido-id",
    "60-infiniband", "60-input-id", "60-kpartx", "60-persistent-alsa",
    "60-persistent-input", "60-persistent-storage-tape", "60-persistent-v4l", "60-sensor",
    "60-serial", "70-camera", "70-joystick", "70-memory", "70-mouse", "70-power-switch",
    "70-touchpad", "70-uaccess", "71-seat", "73-seat-late", "73-special-net-names",
    "75-net-description", "75-probe_mtd", "78-sound-card", "80-debian-compat",
    "80-net-setup-link", "81-net-dhcp", "85-hwclock", "96-e2scrub", "99-systemd")

_PREPARE_SCRIPT = """\
echo shell=ok
mkdir -p /run/udev/rules.d && : > /run/udev/rules.d/69-lvm.rules \\
  && : > /run/udev/rules.d/64-md-raid-assembly.rules || exit 0
for r in UNUSED_UDEV_RULES; do : > /run/udev/rules.d/$r.rules; done
src=/usr/lib/udev/rules.d/60-block.rules
[ -r "$src" ] || src=/lib/udev/rules.d/60-block.rules
[ -r "$src" ] && sed '/uevent}="change"/d' "$src" > /run/udev/rules.d/60-block.rules
printf '%s\\n' 'KERNEL=="sd*[!0-9]", ENV{DEVTYPE}=="disk", SUBSYSTEMS=="scsi", \
ATTRS{vendor}=="HOTPLUG_VENDOR", ATTRS{model}=="d[0-9]*", ENV{ID_BUS}="scsi", \
ENV{ID_SERIAL}="$attr{model}", ENV{ID_SCSI_SERIAL}="$attr{model}"' \
  > /run/udev/rules.d/59-guestpool-serial.rules
udevadm control --reload 2>/dev/null
exit 0
""".replace("HOTPLUG_VENDOR", HOTPLUG_VENDOR).replace("UNUSED_UDEV_RULES",
                                                     " ".join(UNUSED_UDEV_RULES))


def drive_label(i: int, prefix: str = "disk") -> str:
    """A libguestfs drive label (letters only) for the ``i``-th disk added at
    launch: diska, diskb, ..., diskz, diskba, ..."""
    letters = ""
    while True:
        letters = chr(ord("a") + i % 26) + letters
        i //= 26
        if not i:
            return prefix + letters


def kernel_disks(g: Any, labels: list[str]) -> list[str]:
    """The kernel's names of disks added at launch with these labels. The kernel
    names disks in the order its SCSI scan finished, libguestfs's API in the
    order they were added (and renames them in its calls); a shell sees the
    kernel's names, found here through the label's udev link."""
    script = "".join(f'printf "%s\\n" "$(readlink -f /dev/disk/guestfs/{lb})"\n'
                     for lb in labels)
    kernel = str(g.debug("sh", [script])).split()
    if len(kernel) != len(labels) or not all(k.startswith("/dev/sd") for k in kernel):
        raise ValueError(f"disks labelled {labels} are not all in the appliance: {kernel}")
    return kernel


def check_image(path: str) -> None:
    """Again in the worker: the image may have changed since the supervisor's checks."""
    try:
        resolve_image(path)
    except ImageError as e:
        raise OpError(ErrorKind.IMAGE, str(e)) from None


class HotPlug:
    """The disks one appliance has plugged in, by label."""

    def __init__(self, g: Any, qmp: QMP) -> None:
        self.g, self.qmp = g, qmp
        self.plugged: dict[str, Plugged] = {}
        self._labels = (f"d{n}" for n in itertools.count())

    def devices(self, labels: list[str]) -> list[str]:
        """Appliance devices of attached labels; unknown labels are a bad request."""
        missing = [lb for lb in labels if lb not in self.plugged]
        if missing:
            raise OpError(ErrorKind.BAD_REQUEST, f"labels not attached: {missing}")
        return [self.plugged[lb].device for lb in labels]

    def attach(self, disks: list[DiskRef]) -> list[str]:
        """Hot-add every disk, then wait once for all of them: the guest's SCSI
        scan of several disks overlaps instead of adding up."""
        for disk in disks:
            check_image(disk.path)
        labels: list[str] = []
        for disk in disks:
            label = next(self._labels)
            node, dev_id = f"gp-{label}", f"gpd-{label}"
            fdsets = self._add_node(disk, node, labels)
            try:
                self.qmp.command("device_add", {"driver": "scsi-hd", "drive": node,
                                                "bus": "scsi.0", "id": dev_id, "serial": label,
                                                "vendor": HOTPLUG_VENDOR, "product": label})
            except QMPError as e:
                with contextlib.suppress(QMPError):
                    self.qmp.command("blockdev-del", {"node-name": node})
                release(self.qmp, fdsets)
                raise OpError(ErrorKind.APPLIANCE, f"device_add failed: {e}") from e
            self.plugged[label] = Plugged(disk.path, node, dev_id, fdsets=fdsets)
            labels.append(label)
        self._wait_devices(labels)
        return labels

    def _add_node(self, disk: DiskRef, node: str, labels: list[str]) -> list[int]:
        """The disk's block node, read-only, its format explicit; its files handed
        over as the descriptors of the checked files (``_descriptors``) when the
        checks ran. Returns their fd sets. A refusal unplugs the VM's disks added
        before it, so the appliance stays clean."""
        # a running VM's qemu holds a write lock: share it, never take it
        share = {"force-share": True} if disk.live else {}
        fdsets: list[int] = []
        try:
            if not disk.chain:  # checks off: qemu opens the path and follows the header
                self.qmp.command("blockdev-add", {
                    "driver": disk.format, "node-name": node, "read-only": True, **share,
                    "file": {"driver": "file", "filename": disk.path, "read-only": True,
                             **share}})
                return fdsets
            fdsets = hand_over(self.qmp, disk)
            before = node_files(self.qmp)
            self.qmp.command("blockdev-add", chain_options(disk, node, fdsets, share))
            try:
                check_nodes(before, node_files(self.qmp), fdsets, disk)
            except ChainRefused:
                with contextlib.suppress(QMPError):
                    self.qmp.command("blockdev-del", {"node-name": node})
                raise
        except QMPDead as e:
            raise OpError(ErrorKind.APPLIANCE, f"qemu did not answer: {e}") from e
        except (QMPError, ChainRefused) as e:
            release(self.qmp, fdsets)
            self._unplug_quietly(labels)
            if isinstance(e, ChainRefused):
                raise OpError(ErrorKind.IMAGE, str(e)) from e
            raise OpError(ErrorKind.IMAGE,
                          f"qemu cannot open {disk.path} as {disk.format}: {e}") from e
        return fdsets

    def _unplug_quietly(self, labels: list[str]) -> None:
        """An image qemu refused: unplug the VM's disks added before it, so the
        appliance stays clean and is reused."""
        with contextlib.suppress(OpError):
            self.detach(labels)

    def _wait_devices(self, labels: list[str]) -> None:
        """Appliance device of each label, from libguestfs's /dev/disk/guestfs names."""
        deadline = time.monotonic() + DEVICE_WAIT_S
        while time.monotonic() < deadline:
            known = device_listing(self.g.list_disk_labels)
            if all(lb in known for lb in labels):
                for lb in labels:
                    self.plugged[lb].device = known[lb]
                return
            time.sleep(0.02)  # a listing costs ~1 ms; the disk shows up 0.2-0.4 s in
        raise OpError(ErrorKind.APPLIANCE, f"attached disks did not appear in the appliance "
                                           f"within {DEVICE_WAIT_S:.0f} s")

    def detach(self, labels: list[str]) -> int:
        """Release mounts, then unplug the disks and wait for the guest to let go;
        the number of disks still plugged."""
        self.g.umount_all()
        going = [self.plugged.pop(lb) for lb in labels if lb in self.plugged]
        try:
            for p in going:
                self.qmp.command("device_del", {"id": p.device_id})
            for p in going:
                self.qmp.wait_event("DEVICE_DELETED", DEVICE_WAIT_S, device=p.device_id)
                self.qmp.command("blockdev-del", {"node-name": p.node})
                release(self.qmp, p.fdsets)
        except QMPError as e:
            raise OpError(ErrorKind.APPLIANCE, f"detaching disks failed: {e}") from e
        # qemu reports DEVICE_DELETED before the guest kernel lets go; the udev
        # link goes with the kernel's device, and reading the links costs ~1 ms
        # where listing block devices costs 0.2-0.6 s (it opens every disk)
        deadline = time.monotonic() + DEVICE_WAIT_S
        while set(device_listing(self.g.list_disk_labels)) & set(labels):
            if time.monotonic() > deadline:
                raise OpError(ErrorKind.APPLIANCE,
                              "detached disks are still present in the appliance")
            time.sleep(0.02)
        return len(self.plugged)
