"""Reading what the appliance says about hostile disks: udev's records (its
``*_ENC`` values escaped), ``blkid -o export`` output, md superblocks and
device-mapper names. Only devices we asked about are kept; names the guest
chose are checked before use."""

from __future__ import annotations

import re
import shlex
from typing import Any

from ._layout import Filesystem
from ._shell import shell_lines

_BLKID_SCRIPT = "blkid -c /dev/null -p -o export {devices} 2>/dev/null; exit 0\n"


def _superblock(lines: list[str]) -> tuple[str, int, int, int] | None:
    """(level, raid devices, data offset, array size) in 512-byte sectors, from
    ``mdadm --examine`` (metadata 0.90 and 1.x: 0.90 and 1.0 keep data at 0)."""
    fields = {}
    for line in lines:
        key, sep, value = line.partition(" : ")
        if sep:
            fields[key.strip()] = value.strip()
    level = fields.get("Raid Level", "")
    devices = re.match(r"[0-9]{1,3}\b", fields.get("Raid Devices", ""))
    array = re.match(r"([0-9]{1,15})\b", fields.get("Array Size", ""))  # KiB
    offset = re.match(r"([0-9]{1,15}) sectors", fields.get("Data Offset", "0 sectors"))
    if not (level and devices and array and offset):
        return None
    size = int(array.group(1)) * 2  # a RAID1's size is its members' data size
    return level, int(devices.group(0)), int(offset.group(1)), size


def _split_dm_name(name: str) -> tuple[str, str] | None:
    """(VG, LV) of a device-mapper name LVM made: ``VG-LV`` with hyphens doubled."""
    m = re.fullmatch(r"((?:[^-]|--)+)-((?:[^-]|--)+)", name)
    if not m:
        return None
    return m.group(1).replace("--", "-"), m.group(2).replace("--", "-")


def _safe_name(name: str) -> str:
    """A guest-chosen name, if it is harmless in a path and a result."""
    return name if re.fullmatch(r"[A-Za-z0-9_.+-]{1,64}", name) and name not in (".", "..") \
        else ""


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
    for line in shell_lines(out):
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Z_]+", key):
            continue
        if key in ("DEVNAME", "DEV"):
            current = records.setdefault(value, {})
        else:
            current[key] = value
    return records


_PART_TAGS = {"ID_PART_ENTRY_UUID": "PART_ENTRY_UUID",
              "ID_PART_ENTRY_OFFSET": "PART_ENTRY_OFFSET",
              "ID_PART_TABLE_UUID": "PTUUID", "ID_PART_TABLE_TYPE": "PTTYPE"}


def _from_udev(record: dict[str, str]) -> dict[str, str]:
    """udev's names and ``\\xNN`` escapes to blkid's names and escapes."""
    tags = {"TYPE": record.get("ID_FS_TYPE", "")}
    tags |= {theirs: record[ours] for ours, theirs in _PART_TAGS.items()
             if re.fullmatch(r"[0-9A-Za-z-]{1,64}", record.get(ours, ""))}
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
