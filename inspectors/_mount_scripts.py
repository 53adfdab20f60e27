"""The shell side of mounting a guest: the scripts the appliance runs, the
checks that keep guest-controlled names (fstab mountpoints, btrfs subvolumes,
device paths) from steering them, and reading their answers."""

from __future__ import annotations

import re

from ._layout import Filesystem
from ._shell import shell_lines

#: types mounted by name: ``mount`` then skips probing the device (~50 ms under
#: TCG); NTFS and anything else go through the daemon's probing mount
_TYPED_MOUNT = frozenset({"ext2", "ext3", "ext4", "xfs", "vfat", "btrfs"})


#: what the shell is given as a device: the appliance's own block devices
#: (disks, partitions, md arrays, device-mapper nodes we or LVM named, LVM's
#: /dev/VG/LV links when the stable API activated the groups)
_DEVICE_PATH = re.compile(
    r"/dev/(?:[sv]d[a-z]+\d*|md\d+|dm-\d+|[A-Za-z0-9+_.-]+/[A-Za-z0-9+_.-]+)")


# Detaches everything at /sysroot, submounts included, without resolving a path
# below it: `umount -R` unmounts each submount by its path, which a guest's
# stacked mounts and symlinks can turn into a path of the appliance's own
# (issue 29). Mounts stacked on /sysroot itself are detached one by one.
UNMOUNT_SYSROOT = """\
n=0
while [ $n -lt 64 ] && umount -l /sysroot >/dev/null 2>&1; do n=$((n+1)); done
"""

# Unmounts everything at /sysroot; BUSY=1 when something stays (a mount the next
# one would stack on, which release could not fully undo).
_UNMOUNT_ALL = UNMOUNT_SYSROOT + """\
while IFS= read -r l; do
  case "$l" in *" /sysroot "*|*" /sysroot/"*) echo BUSY=1; exit 0;; esac
done < /proc/mounts
"""


# m INDEX TYPE OPTIONS DEVICE TARGET: the named type first, then mount's own
# probe; prints M<index>=ok, or E<index>=<mount's message> (its first line counts)
_MOUNT_FN = """\
m() {
  if [ -n "$2" ] && mount -o "$3" -t "$2" -- "$4" "$5" 2>/dev/null; then echo "M$1=ok"; return; fi
  if err=$(mount -o "$3" -- "$4" "$5" 2>&1); then echo "M$1=ok"
  else printf 'E%s=%s\\n' "$1" "$err"; fi
}
"""


def safe_mountpoint(path: str) -> str | None:
    """An fstab mountpoint in canonical form, or None when it could leave the
    guest's tree: relative, ``..`` or ``.`` components, control characters, or
    longer than a path may be. (Symlinks are checked at mount time.)"""
    path = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8) & 0xFF), path)  # \040
    if not path.startswith("/") or len(path) > 4096 \
            or any(ord(c) < 32 or ord(c) == 127 for c in path):
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    return "/" + "/".join(parts)


def _mount_call(fs: Filesystem, mountpoint: str, top: bool
                ) -> tuple[str, str, Filesystem, str]:
    """(type to name or "", options, filesystem, mountpoint) of one mount."""
    options = "ro"
    if fs.subvol:
        options = f"ro,subvol={fs.subvol}"
    elif top and fs.type == "btrfs":
        options = "ro,subvolid=5"
    return fs.type if fs.type in _TYPED_MOUNT else "", options, fs, mountpoint


def _appliance_device(path: str) -> bool:
    """Whether ``path`` may be handed to the appliance's shell as a device."""
    return _DEVICE_PATH.fullmatch(path) is not None \
        and not any(part in (".", "..") for part in path.split("/"))


def _mount_results(out: str, mountpoints: list[str]) -> dict[str, str]:
    """mount's message for each mountpoint whose ``m`` call did not print ``ok``."""
    done: dict[int, str] = {}
    for line in shell_lines(out):
        m = re.fullmatch(r"([ME])(\d+)=(.*)", line)
        if m and int(m.group(2)) < len(mountpoints) and int(m.group(2)) not in done:
            done[int(m.group(2))] = "" if m.group(1) == "M" and m.group(3) == "ok" \
                else (m.group(3).strip() or "mount failed")
    return {mp: done.get(i, "mount did not report") for i, mp in enumerate(mountpoints)
            if done.get(i) != ""}


def _safe_subvolume(path: str) -> bool:
    """A btrfs subvolume path from the guest, safe inside mount options."""
    return bool(path) and len(path) <= 255 and re.fullmatch(r"[A-Za-z0-9_.@+/-]+", path) \
        is not None and ".." not in path.split("/")
