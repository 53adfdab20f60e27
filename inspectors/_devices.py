"""Finding one VM's filesystems inside the appliance, named as the VM sees them.

Under TCG every program the appliance starts costs 0.1–0.3 s, and the stable
API starts several per question: ``list_partitions`` opens every disk of the
appliance (0.3–0.9 s), ``blkid`` runs once per partition (0.15–0.4 s each), and
LVM takes five calls (``pvuuid``, ``lvm_scan``, ``vgs``, ``vgpvuuids``, ``lvs``:
about 2.5 s). The appliance's udev has already probed every disk we attach
(its blkid builtin) and keeps the answers in its database, so the fast path
reads them there with one shell round trip (``debug sh``, shell builtins only)
and runs ``blkid`` only for devices whose udev event has not finished yet.

Stacked layouts are opened layer by layer, each only when the VM has it, and
only from this VM's own devices: md RAID members are assembled read-only (a
degraded array too), LUKS devices opened read-only with the VM's keys, LVM
activated with ``--devices`` naming this VM's physical volumes; whatever came
out is probed again (LVM on LUKS, LUKS on LVM, LVM on md). Every layer opened
is recorded, and :func:`deactivate` closes them in reverse order before the
disks are detached. What cannot be opened becomes a :class:`Finding`.

Names: the appliance calls the VM's disks whatever is free (``/dev/sdc``); every
result uses the VM's own names instead (its first disk ``/dev/sda``, in
manifest order), so a VM reads the same alone, in a batch or after others.

Everything read back comes from hostile disks: udev's ``*_ENC`` values and
``blkid -o export`` are escaped, only devices we asked about are kept, and
names the guest chose (array names, LUKS UUIDs) are checked before use.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from ._layout import MOUNTABLE, Filesystem, Finding, Layout, api_device, part_of, vm_disk_name
from ._probe_output import (
    _BLKID_SCRIPT,
    _filesystem,
    _records,
    _safe_name,
    _split_dm_name,
    _superblock,
    _tags,
    unescape,
)
from ._shell import device_listing, shell_lines
from ._specs import LuksKey

#: appliance disk names are ours (udev's sdX), never the guest's; checked anyway
#: because they go into a shell command line
_DEVICE = re.compile(r"/dev/[sv]d[a-z]+")


#: how many layers (md, LUKS, LVM) may stack on each other
MAX_DEPTH = 6


_CONTAINERS = ("linux_raid_member", "crypto_LUKS", "LVM2_member")


def find_filesystems(g: Any, devices: list[str], shell: bool = True,
                     keys: Sequence[LuksKey] = (),
                     api_names: Mapping[str, str] | None = None,
                     premount: bool = False) -> Layout:
    """The filesystems on ``devices`` (appliance names, in the VM's order),
    opening md arrays, LUKS devices and volume groups on the way. ``premount``
    (shell only): leave the VM's only filesystem mounted at /sysroot when it has
    just one a root probe would mount (:attr:`Layout.mounted`)."""
    for dev in devices:
        if not _DEVICE.fullmatch(dev):
            raise ValueError(f"not an appliance disk name: {dev!r}")
    if shell:
        return _Discovery(g, devices, keys, api_names or {}, premount).run()
    return _with_api(g, devices)


# Prints DEV=<device> and the ID_FS_* entries of the device's udev database
# record, or NODB=1 when udev has not written that record (yet).
_SHOW = """\
show() {
  echo "DEV=$1"
  if [ -r "$2" ]; then
    while IFS= read -r l; do
      case "$l" in E:ID_FS_TYPE=*|E:ID_FS_UUID_ENC=*|E:ID_FS_LABEL_ENC=*|E:ID_PART_*) \\
        echo "${l#E:}";; esac
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
{premount}
exit 0
"""


# The VM's one Linux filesystem, when its disks hold nothing else a probe would
# mount or a layer would open: mounted read-only at /sysroot, as the first probe
# would mount it (a btrfs at its top level), which saves that probe's round trip
# (a shell, ~50 ms under TCG). Candidates are what the probe takes: partitions,
# and disks without any. Prints MOUNTED=<device> when it mounted one.
_PREMOUNT = """\
fstype() {
  t=
  [ -r "$1" ] || { t=unknown; return; }
  while IFS= read -r l; do case "$l" in E:ID_FS_TYPE=*) t=${l#E:ID_FS_TYPE=};; esac; done < "$1"
}
premount() {
  one= n=0
  for d in "$@"; do
    set -- /sys/block/$d/$d[0-9]*
    [ -r "$1/dev" ] || set -- /sys/block/$d
    for s in "$@"; do
      [ -r "$s/dev" ] || continue
      read -r mm < "$s/dev"
      fstype "/run/udev/data/b$mm"
      case "$t" in
        ext2|ext3|ext4|xfs|btrfs) n=$((n + 1)); one="/dev/${s##*/} $t";;
        ntfs) n=$((n + 1)); one=;;
        linux_raid_member|crypto_LUKS|LVM2_member|unknown) return;;
      esac
    done
  done
  [ "$n" = 1 ] && [ -n "$one" ] || return
  set -- $one
  o=ro; [ "$2" = btrfs ] && o=ro,subvolid=5
  mount -o "$o" -t "$2" -- "$1" /sysroot/ >/dev/null 2>&1 && echo "MOUNTED=$1"
}
"""


# --devices keeps LVM from scanning every disk of the appliance (0.3 s, not 0.9 s
# per command); LVM older than 2.03.12 lacks it and gets the stable path instead.
# vgchange waits for udev to process the new LVs, so their records are there, and
# it names the groups it activated; the LVs are then read from device-mapper's
# sysfs (an ``lvs`` would cost another 0.3 s). Only LVM's own devices (dm UUID
# "LVM-...") of the groups just activated are reported.
_LVM_SCRIPT = """\
set -f
out=$(lvm vgchange {devices} -ay 2>/dev/null) || {{ echo LVM=failed; exit 0; }}
echo "$out" | while read -r n a b c d e vg rest; do
  [ "$a $b $c $d $e" = "logical volume(s) in volume group" ] && echo "VG=$vg"
done
set +f
for d in /sys/block/dm-*; do
  [ -r "$d/dm/uuid" ] || continue
  read -r uuid < "$d/dm/uuid"
  case "$uuid" in LVM-*) ;; *) continue ;; esac
  read -r name < "$d/dm/name"; read -r mm < "$d/dev"
  echo "DM=$name"
  show "/dev/mapper/$name" "/run/udev/data/b$mm"
done
exit 0
"""


# Per md array of the VM: the md device the kernel assembled already (a cold
# appliance assembles at boot) as HELD=<node> <device>, else the superblock of its
# first member as EXAMINE=<node> and X=<line>s. (mdadm cannot assemble members of
# read-only disks: it opens them for writing.)
_MD_SCRIPT = """\
md() {{
  node=$1; shift
  for m in "$@"; do
    for h in /sys/class/block/${{m##*/}}/holders/md*; do
      [ -e "$h" ] && {{ echo "HELD=$node /dev/${{h##*/}}"; return; }}
    done
  done
  echo "EXAMINE=$node"
  mdadm --examine "$1" 2>/dev/null | while IFS= read -r l; do echo "X=$l"; done
}}
{calls}
exit 0
"""


# A RAID1 member holds the whole array: mapped read-only past its superblock.
_DM_SCRIPT = """\
{creates}
udevadm settle --timeout=10 2>/dev/null
exit 0
"""


def deactivate(g: Any, layout: Layout) -> None:
    """Close what :func:`find_filesystems` opened, last layer first, the way it
    was opened, so the VM's disks can be detached."""
    if not layout.lvm_devices and layout.volume_groups:  # the stable API activated them
        g.vg_activate(False, layout.volume_groups)
    script = deactivate_script(layout)
    if script:
        g.debug("sh", [script + "exit 0\n"])


def deactivate_script(layout: Layout) -> str:
    """Shell lines closing the layers the fast path opened, last first ("" if none)."""
    lines = []
    for step in reversed(layout.opened):
        if step[0] == "lvm" and step[1]:  # the LVs' device-mapper tables (no LVM run)
            names = " ".join(shlex.quote(n) for n in step[1].split("\0"))
            lines.append(f"dmsetup remove {names} >/dev/null 2>&1")
        elif step[0] == "luks":
            lines.append(f"cryptsetup close {shlex.quote(step[1])} >/dev/null 2>&1")
        elif step[0] == "md":
            lines.append(f"mdadm --stop {shlex.quote(step[1])} >/dev/null 2>&1")
        elif step[0] == "dm":
            lines.append(f"dmsetup remove {shlex.quote(step[1])} >/dev/null 2>&1")
    return "".join(line + "\n" for line in lines)


class _Discovery:
    """One VM's layout, layer by layer, through ``debug sh`` round trips."""

    def __init__(self, g: Any, devices: list[str], keys: Sequence[LuksKey],
                 api_names: Mapping[str, str], premount: bool = False) -> None:
        self.g, self.devices, self.keys = g, devices, keys
        self.premount = premount
        self.api_names = api_names
        self.layout = Layout([], [], [])
        self.names = self.layout.names

    def run(self) -> Layout:
        names = " ".join(shlex.quote(d[len("/dev/"):]) for d in self.devices)
        script = _SHOW + _DISKS_SCRIPT.format(
            names=names, premount=f"premount {names}" if self.premount else "")
        out = str(self.g.debug("sh", [(_PREMOUNT if self.premount else "") + script]))
        parts = [line[5:] for line in shell_lines(out) if line.startswith("PART=")]
        mounted = [line[8:] for line in shell_lines(out) if line.startswith("MOUNTED=")]
        tags = _tags(self.g, out)
        for i, dev in enumerate(self.devices):
            self.names[dev] = vm_disk_name(i)
            for p in parts:
                if part_of(p, dev):
                    self.names[p] = vm_disk_name(i) + p[len(dev):]
        for dev in self.devices:
            for p in parts:
                if part_of(p, dev):
                    self._identify(self.names[p], tags.get(p, {}), tags.get(dev, {}))
        level = [(dev, tags.get(dev, {})) for dev in _candidates(self.devices, parts)]
        if mounted:  # the script's last line when it mounted one
            self.layout.mounted = mounted[-1]
        for _ in range(MAX_DEPTH):
            level = self._next_level(level)
            if not level:
                break
        else:
            self._finding(level[0][0], "unsupported", "layers stacked too deep")
        return self.layout

    def _identify(self, name: str, part: dict[str, str], disk: dict[str, str]) -> None:
        table = (part.get("PTTYPE") or disk.get("PTTYPE", "")).lower()
        entry = part.get("PART_ENTRY_UUID", "").lower()
        if table == "gpt" and entry:
            self.layout.partition_ids[f"gpt:{entry}"] = name
        offset = part.get("PART_ENTRY_OFFSET", "")
        signature = (part.get("PTUUID") or disk.get("PTUUID", "")).lower()
        if table == "dos" and offset.isdigit() and re.fullmatch(r"[0-9a-f]{8}", signature):
            self.layout.partition_ids[f"mbr:{signature}:{int(offset) * 512}"] = name

    def _finding(self, dev: str, kind: str, detail: str) -> None:
        self.layout.findings.append(Finding(self.names.get(dev, dev), kind, detail))

    def _next_level(self, level: list[tuple[str, dict[str, str]]]
                    ) -> list[tuple[str, dict[str, str]]]:
        """Keep this level's filesystems; open its containers; the devices they gave."""
        md: dict[str, list[str]] = {}
        luks: list[tuple[str, dict[str, str]]] = []
        pvs: list[str] = []
        for dev, info in level:
            kind = unescape(info.get("TYPE", ""))
            if kind == "linux_raid_member":
                md.setdefault(unescape(info.get("UUID", "")) or dev, []).append(dev)
            elif kind == "crypto_LUKS":
                luks.append((dev, info))
            elif kind == "LVM2_member":
                pvs.append(dev)
            elif kind in MOUNTABLE:
                fs = _filesystem(dev, {dev: info})
                if fs is not None and not (fs.type == "swap" and dev.startswith("/dev/mapper/")):
                    fs.device = self.names.get(dev, dev)
                    self.layout.filesystems.append(fs)
            elif kind:
                self._finding(dev, "unsupported", f"unsupported filesystem {kind[:40]}")
        found: list[tuple[str, dict[str, str]]] = []
        if md:
            found += self._assemble(md, {dev: info for dev, info in level})
        if luks:
            found += self._open(luks)
        if pvs:
            found += self._lvm(pvs)
        return found

    # -- md RAID -----------------------------------------------------------------

    def _assemble(self, arrays: dict[str, list[str]], info: dict[str, dict[str, str]]
                  ) -> list[tuple[str, dict[str, str]]]:
        """Each md array of the VM, read-only: the kernel's when it assembled it
        already; else a RAID1 array as its first member's data, mapped read-only
        with device-mapper (the disks are read-only, and mdadm writes)."""
        calls: list[str] = []
        wanted: dict[str, tuple[str, list[str]]] = {}
        for members in arrays.values():
            node = f"gp{len(self.layout.opened)}x{len(calls)}"
            label = unescape(info[members[0]].get("LABEL", ""))
            name = _safe_name(label.rpartition(":")[2]) or f"md{len(calls)}"
            wanted[node] = (name, members)
            calls.append(f"md {node} " + " ".join(shlex.quote(m) for m in members))
        out = str(self.g.debug("sh", [_MD_SCRIPT.format(calls="\n".join(calls))]))
        made: list[str] = []
        superblocks: dict[str, list[str]] = {}
        current: list[str] | None = None
        for line in shell_lines(out):
            key, _, value = line.partition("=")
            if key == "HELD":
                node, _, dev = value.partition(" ")
                if node in wanted and re.fullmatch(r"/dev/md\d+", dev):
                    self.names[dev] = f"/dev/md/{wanted[node][0]}"
                    self.layout.opened.append(("md", dev))
                    made.append(dev)
                current = None
            elif key == "EXAMINE" and value in wanted:
                current = superblocks.setdefault(value, [])
            elif key == "X" and current is not None:
                current.append(value)
        creates: list[str] = []
        for node, lines in superblocks.items():
            name, members = wanted[node]
            sb = _superblock(lines)
            if sb is None:
                self._finding(members[0], "md-unassembled",
                              f"md array {name}: its superblock cannot be read")
                continue
            level, devices, offset, size = sb
            if level != "raid1":
                self._finding(members[0], "unsupported", f"md array {name} is {level[:20]}: "
                              "only RAID1 is read from read-only disks")
                continue
            if len(members) < devices:
                self._finding(members[0], "md-degraded",
                              f"md array {name} runs without its partner: {len(members)} of "
                              f"{devices} members given")
            dm = f"gp-md-{len(self.layout.opened)}-{len(creates)}"
            creates.append(f"dmsetup create {dm} --readonly --table "
                           f"{shlex.quote(f'0 {size} linear {members[0]} {offset}')}")
            path = f"/dev/mapper/{dm}"
            self.names[path] = f"/dev/md/{name}"
            self.layout.opened.append(("dm", dm))
            made.append(path)
        if creates:
            self.g.debug("sh", [_DM_SCRIPT.format(creates="\n".join(creates))])
        return self._probe(made)

    # -- LUKS ----------------------------------------------------------------------

    def _open(self, devices: list[tuple[str, dict[str, str]]]
              ) -> list[tuple[str, dict[str, str]]]:
        opened = []
        for dev, info in devices:
            name = self.names.get(dev, dev)
            keys = ([k for k in self.keys if k.device == name]
                    + [k for k in self.keys if k.device is None])
            if not keys:
                self._finding(dev, "encrypted", "encrypted: key needed (add one to the "
                                                "VM's keys in the manifest)")
                continue
            uuid = unescape(info.get("UUID", ""))
            mapname = f"luks-{uuid}" if re.fullmatch(r"[0-9a-fA-F-]{8,64}", uuid) \
                else f"luks-gp{len(self.layout.opened)}"
            for key in keys:
                try:
                    self.g.cryptsetup_open(api_device(dev, self.api_names), key.secret,
                                           mapname, readonly=True)
                except RuntimeError:
                    continue
                self.layout.opened.append(("luks", mapname))
                path = f"/dev/mapper/{mapname}"
                self.names[path] = path
                opened.append(path)
                break
            else:
                self._finding(dev, "encrypted", "encrypted: none of the VM's keys opens it")
        return self._probe(opened)

    # -- LVM -------------------------------------------------------------------------

    def _lvm(self, pvs: list[str]) -> list[tuple[str, dict[str, str]]]:
        script = _LVM_SCRIPT.format(devices=" ".join(f"--devices {shlex.quote(p)}"
                                                     for p in pvs))
        out = str(self.g.debug("sh", [_SHOW + script]))
        if "LVM=failed" in shell_lines(out):
            lvs, vgs = _activate_with_api(self.g, pvs)
            self.layout.volume_groups += vgs
            for fs in lvs:
                self.names[fs.path] = fs.device
            return [(fs.path, {"TYPE": fs.type, "UUID": fs.uuid, "LABEL": fs.label})
                    for fs in lvs]
        vgs = [vg.strip('"') for vg in dict.fromkeys(
            line[3:] for line in shell_lines(out) if line.startswith("VG="))]
        vgs = [vg for vg in vgs if re.fullmatch(r"[A-Za-z0-9+_.-]{1,128}", vg)]
        dm_names = sorted((line[3:] for line in shell_lines(out) if line.startswith("DM=")),
                          key=lambda n: _split_dm_name(n) or ("", n))
        if not vgs:
            return []
        self.layout.volume_groups += vgs
        self.layout.lvm_devices += pvs
        tags = _tags(self.g, out)
        found, mine = [], []
        for dm in dm_names:
            vg_lv = _split_dm_name(dm)
            path = f"/dev/mapper/{dm}"
            if vg_lv is None or vg_lv[0] not in vgs or path not in tags:
                continue
            mine.append(dm)
            lv = f"/dev/{vg_lv[0]}/{vg_lv[1]}"
            self.names[path] = self.names[lv] = lv  # libguestfs's own calls name it so
            if tags[path].get("TYPE") != "swap":
                found.append((path, tags[path]))
        self.layout.opened.append(("lvm", "\0".join(mine)))
        return found

    def _probe(self, devices: list[str]) -> list[tuple[str, dict[str, str]]]:
        """blkid tags of devices a layer just made (udev may not have seen them yet)."""
        if not devices:
            return []
        quoted = " ".join(shlex.quote(d) for d in devices)
        tags = _records(str(self.g.debug("sh", [_BLKID_SCRIPT.format(devices=quoted)])))
        return [(dev, tags.get(dev, {})) for dev in devices]


def _with_api(g: Any, devices: list[str]) -> Layout:
    """Plain partitions, whole disks and LVM only: daemons without ``debug sh``."""
    parts = [p for p in device_listing(g.list_partitions)
             if any(part_of(p, d) for d in devices)]
    names = {}
    for i, dev in enumerate(devices):
        names[dev] = vm_disk_name(i)
        names |= {p: vm_disk_name(i) + p[len(dev):] for p in parts if part_of(p, dev)}
    found: list[Filesystem] = []
    pvs: list[str] = []
    for dev in _candidates(devices, parts):
        fs = _blkid(g, dev)
        if fs is not None and fs.type == "LVM2_member":
            pvs.append(dev)
        elif fs is not None:
            fs.device = names[dev]
            found.append(fs)
    if not pvs:
        return Layout(found, [], [], names=names)
    lvs, vgs = _activate_with_api(g, pvs)
    return Layout(found + lvs, vgs, [], names=names | {fs.path: fs.device for fs in lvs})


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


def _candidates(devices: list[str], parts: list[str]) -> list[str]:
    """Partitions in disk order, and whole disks that have none."""
    out = []
    for dev in devices:
        own = sorted((p for p in parts if part_of(p, dev)), key=lambda p: int(p[len(dev):]))
        out.extend(own or [dev])
    return out


def _safe(fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError:
        return None
