"""Finding one VM's filesystems inside the appliance.

Under TCG every program the appliance starts costs 0.1–0.3 s, and the stable
API starts several per question: ``list_partitions`` opens every disk of the
appliance (0.3–0.9 s), ``blkid`` runs once per partition (0.15–0.4 s each), and
LVM takes five calls (``pvuuid``, ``lvm_scan``, ``vgs``, ``vgpvuuids``, ``lvs``:
about 2.5 s). The appliance's udev has already probed every disk we attach
(its blkid builtin) and keeps the answers in its database, so the fast path
reads them there with one shell round trip (``debug sh``, shell builtins only)
and runs ``blkid`` only for devices whose udev event has not finished yet; LVM
costs one more round trip with LVM told which devices to look at. The stable
path stays for daemons without the debug command; both give the same answer.

Everything read back comes from hostile disks: udev's ``*_ENC`` values and
``blkid -o export`` are escaped, and only devices we asked about are kept.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any

from guestpool._hotplug import device_listing

#: appliance disk names are ours (udev's sdX), never the guest's; checked anyway
#: because they go into a shell command line
_DEVICE = re.compile(r"/dev/[sv]d[a-z]+")


@dataclass
class Filesystem:
    device: str
    type: str
    uuid: str = ""
    label: str = ""


@dataclass
class Layout:
    """What one VM's disks hold, as found in the appliance."""

    #: partitions, whole disks and logical volumes with a filesystem (no LVM swap)
    filesystems: list[Filesystem]
    #: volume groups activated for the VM: :func:`deactivate` before detaching
    volume_groups: list[str]
    #: the VM's physical volumes when LVM was run on them alone (``--devices``);
    #: empty when the stable API activated the groups
    lvm_devices: list[str]


def find_filesystems(g: Any, devices: list[str], shell: bool = True) -> Layout:
    """The filesystems on ``devices``, activating their volume groups."""
    for dev in devices:
        if not _DEVICE.fullmatch(dev):
            raise ValueError(f"not an appliance disk name: {dev!r}")
    if shell:
        return _with_shell(g, devices)
    return _with_api(g, devices)


# -- fast path ---------------------------------------------------------------------

# Prints DEV=<device> and the ID_FS_* entries of the device's udev database
# record, or NODB=1 when udev has not written that record (yet).
_SHOW = """\
show() {
  echo "DEV=$1"
  if [ -r "$2" ]; then
    while IFS= read -r l; do
      case "$l" in E:ID_FS_TYPE=*|E:ID_FS_UUID_ENC=*|E:ID_FS_LABEL_ENC=*) echo "${l#E:}";; esac
    done < "$2"
  else
    echo NODB=1
  fi
}
"""

# Disks and their partitions from sysfs. A partition's udev event can finish
# after its disk's (whose link the attach waited for): then wait for udev once.
_DISKS_SCRIPT = """\
records() {{
  for n in {names}; do
    for s in /sys/block/$n /sys/block/$n/$n[0-9]*; do
      [ -r "$s/dev" ] || continue
      read -r mm < "$s/dev"
      [ "$s" = "/sys/block/$n" ] || [ "$1" != show ] || echo "PART=/dev/${{s##*/}}"
      "$@" "/dev/${{s##*/}}" "/run/udev/data/b$mm"
    done
  done
}}
missing() {{ [ -r "$2" ] || echo missing; }}
[ -z "$(records missing)" ] || udevadm settle --timeout=10 2>/dev/null
records show
exit 0
"""

# --devices keeps LVM from scanning every disk of the appliance (0.3 s, not 0.9 s
# per command); LVM older than 2.03.12 lacks it and gets the stable path instead.
# vgchange waits for udev to process the new LVs, so their records are there.
_LVM_SCRIPT = """\
set -f
lvm vgchange {devices} -ay >/dev/null 2>&1
lvs=$(lvm lvs {devices} --noheadings -o vg_name,lv_path,lv_kernel_major,lv_kernel_minor \\
      2>/dev/null) || {{ echo LVM=failed; exit 0; }}
while read -r vg lv major minor; do
  [ -n "$vg" ] && echo "VG=$vg"
  [ -n "$lv" ] && [ "$major" -ge 0 ] 2>/dev/null && show "$lv" "/run/udev/data/b$major:$minor"
done <<EOF
$lvs
EOF
exit 0
"""

_BLKID_SCRIPT = "blkid -c /dev/null -p -o export {devices} 2>/dev/null; exit 0\n"


def deactivate(g: Any, layout: Layout) -> None:
    """Deactivate the volume groups :func:`find_filesystems` activated, the way it
    activated them."""
    if not layout.volume_groups:
        return
    if layout.lvm_devices:
        devices = " ".join(f"--devices {shlex.quote(p)}" for p in layout.lvm_devices)
        vgs = " ".join(shlex.quote(vg) for vg in layout.volume_groups)
        g.debug("sh", [f"lvm vgchange {devices} -an {vgs} >/dev/null"])
    else:
        g.vg_activate(False, layout.volume_groups)


def _with_shell(g: Any, devices: list[str]) -> Layout:
    names = " ".join(shlex.quote(d[len("/dev/"):]) for d in devices)
    out = str(g.debug("sh", [_SHOW + _DISKS_SCRIPT.format(names=names)]))
    parts = [line[5:] for line in out.splitlines() if line.startswith("PART=")]
    tags = _tags(g, out)
    found = [fs for dev in _candidates(devices, parts) if (fs := _filesystem(dev, tags))]
    pvs = [fs.device for fs in found if fs.type == "LVM2_member"]
    found = [fs for fs in found if fs.type != "LVM2_member"]
    if not pvs:
        return Layout(found, [], [])
    script = _LVM_SCRIPT.format(devices=" ".join(f"--devices {shlex.quote(p)}" for p in pvs))
    out = str(g.debug("sh", [_SHOW + script]))
    if "LVM=failed" in out.splitlines():
        lvs, vgs = _activate_with_api(g, pvs)
        return Layout(found + lvs, vgs, [])
    vgs = list(dict.fromkeys(line[3:] for line in out.splitlines() if line.startswith("VG=")))
    tags = _tags(g, out)
    for lv in tags:  # in the order of lvs: by VG, then LV
        fs = _filesystem(lv, tags)
        if fs and fs.type != "swap" and any(lv.startswith(f"/dev/{vg}/") for vg in vgs):
            found.append(fs)
    return Layout(found, vgs, pvs)


def _tags(g: Any, out: str) -> dict[str, dict[str, str]]:
    """blkid-style tags of every device shown in ``out``; the ones udev had no
    record of are probed with blkid (one more round trip)."""
    records = _records(out)
    unprobed = [dev for dev, rec in records.items() if "NODB" in rec]
    probed = {}
    if unprobed:
        quoted = " ".join(shlex.quote(d) for d in unprobed)
        probed = _records(str(g.debug("sh", [_BLKID_SCRIPT.format(devices=quoted)])))
    return {dev: probed.get(dev, {}) if "NODB" in rec else _from_udev(rec)
            for dev, rec in records.items()}


def _records(out: str) -> dict[str, dict[str, str]]:
    """``KEY=value`` lines grouped under the ``DEVNAME=`` / ``DEV=`` line before them."""
    records: dict[str, dict[str, str]] = {}
    current: dict[str, str] = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_]+", key):
            continue
        if key in ("DEVNAME", "DEV"):
            current = records.setdefault(value, {})
        else:
            current[key] = value
    return records


def _from_udev(record: dict[str, str]) -> dict[str, str]:
    """udev's names and ``\\xNN`` escapes to blkid's names and escapes."""
    tags = {"TYPE": record.get("ID_FS_TYPE", "")}
    for ours, theirs in (("UUID", "ID_FS_UUID_ENC"), ("LABEL", "ID_FS_LABEL_ENC")):
        if theirs in record:
            raw = re.sub(rb"\\x([0-9a-fA-F]{2})", lambda m: bytes([int(m.group(1), 16)]),
                         record[theirs].encode("utf-8", "surrogateescape"))
            tags[ours] = _blkid_escape(raw.decode("utf-8", "replace"))
    return tags


def _blkid_escape(value: str) -> str:
    """What ``blkid -o export`` prints for ``value`` (before :func:`unescape`)."""
    out = []
    for ch in value.encode("utf-8"):
        text = ""
        if ch >= 128:
            text, ch = "M-", ch - 128
        if ch < 32 or ch == 0x7F:
            text, ch = text + "^", ch ^ 0x40
        out.append(text + ("\\" if chr(ch) in " \\\"'$`<>" else "") + chr(ch))
    return "".join(out)


def unescape(value: str) -> str:
    """Undo blkid's backslash escapes (space, quotes, ``$<>`` and backslash itself).
    Non-ASCII and control bytes stay in blkid's ``M-``/``^`` notation, exactly as
    libguestfs's own ``blkid`` call returns them."""
    return re.sub(r"\\(.)", r"\1", value)


def _filesystem(dev: str, tags: dict[str, dict[str, str]]) -> Filesystem | None:
    info = tags.get(dev) or {}
    if not info.get("TYPE"):
        return None
    return Filesystem(dev, unescape(info["TYPE"]), unescape(info.get("UUID", "")),
                      unescape(info.get("LABEL", "")))


# -- stable path: one daemon call per question ----------------------------------------

def _with_api(g: Any, devices: list[str]) -> Layout:
    parts = [p for p in device_listing(g.list_partitions)
             if any(part_of(p, d) for d in devices)]
    found: list[Filesystem] = []
    pvs: list[str] = []
    for dev in _candidates(devices, parts):
        fs = _blkid(g, dev)
        if fs is not None and fs.type == "LVM2_member":
            pvs.append(dev)
        elif fs is not None:
            found.append(fs)
    if not pvs:
        return Layout(found, [], [])
    lvs, vgs = _activate_with_api(g, pvs)
    return Layout(found + lvs, vgs, [])


def _activate_with_api(g: Any, pvs: list[str]) -> tuple[list[Filesystem], list[str]]:
    """Activate the volume groups of ``pvs``; their logical volumes' filesystems."""
    pv_uuids = {_safe(g.pvuuid, dev) or "" for dev in pvs}
    g.lvm_scan(True)
    found: list[Filesystem] = []
    vgs: list[str] = []
    for vg in g.vgs():
        if set(g.vgpvuuids(vg)) & pv_uuids:
            vgs.append(vg)
            for lv in g.lvs():
                if lv.startswith(f"/dev/{vg}/"):
                    fs = _blkid(g, lv)
                    if fs is not None and fs.type != "swap":
                        found.append(fs)
    return found, vgs


def _blkid(g: Any, dev: str) -> Filesystem | None:
    info = _safe(g.blkid, dev)
    return _filesystem(dev, {dev: {k: str(v) for k, v in info.items()}} if info else {})


# -- shared -------------------------------------------------------------------------

def _candidates(devices: list[str], parts: list[str]) -> list[str]:
    """Partitions in disk order, and whole disks that have none."""
    out = []
    for dev in devices:
        own = sorted((p for p in parts if part_of(p, dev)), key=lambda p: int(p[len(dev):]))
        out.extend(own or [dev])
    return out


def part_of(part: str, device: str) -> bool:
    return part.startswith(device) and part[len(device):].isdigit()


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError:
        return None
