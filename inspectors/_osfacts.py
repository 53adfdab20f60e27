"""Operating-system facts of a mounted Linux root, derived the way libguestfs's
``inspect_os`` derives them, so the cheap path and the reference agree field for
field (``inspect_get_distro``, ``..._product_name``, ``..._major_version``, ...).

libguestfs walks a list of release files in a fixed order; each parser fills
what it finds and says whether it is done. Parsers that give up leave what they
set behind (a Debian's os-release sets the product name, gives up because its
VERSION_ID has no minor, and /etc/debian_version then overwrites the product
name with ``12.15``): that is reproduced here, quirks included, because the
reference is what users compare with. Every file is read bounded, through the
guest facade.
"""

from __future__ import annotations

import re
import shlex
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._files import GuestReadError
from ._guest import Guest

_SMALL = 16 * 1024  # libguestfs reads release files of at most a few KiB


@dataclass
class Facts:
    """What the release files told (None: not told)."""

    distro: str | None = None
    product_name: str | None = None
    version: tuple[int, int] | None = None
    #: the version as the OS spells it (VERSION_ID, debian_version), for advisories
    version_text: str = ""


# os-release ID -> libguestfs distro
#: libguestfs's inspection fields of one root, named after its ``inspect_get_*``
#: calls: the os inspector fills each one on both paths (cheap and ``full``)
INSPECT_FIELDS = ("type", "distro", "product_name", "product_variant", "major_version",
                  "minor_version", "hostname", "arch", "package_format",
                  "package_management", "osinfo")
#: and a Windows root's
WINDOWS_INSPECT_FIELDS = ("windows_systemroot", "windows_current_control_set",
                          "drive_mappings")

OS_RELEASE_IDS = {
    "alpine": "alpinelinux", "altlinux": "altlinux", "arch": "archlinux", "centos": "centos",
    "coreos": "coreos", "debian": "debian", "fedora": "fedora", "frugalware": "frugalware",
    "kali": "kalilinux", "mageia": "mageia", "neokylin": "neokylin", "opensuse": "opensuse",
    "pld": "pldlinux", "rhel": "rhel", "rocky": "rocky", "sles": "sles", "sled": "sles",
    "ubuntu": "ubuntu", "void": "voidlinux",
}
_LSB_IDS = {"CoreOS": "coreos", "LinuxMint": "linuxmint", "Mageia": "mageia",
            "Ubuntu": "ubuntu"}


def distro_of_os_release_id(value: str) -> str | None:
    """libguestfs's distro for an os-release ID (None: libguestfs does not know it)."""
    if value.startswith("opensuse-"):
        return "opensuse"
    return OS_RELEASE_IDS.get(value)


def parse_version(text: str, facts: Facts) -> None:
    """libguestfs's parse_version_from_major_minor: the first N.M, else the first N."""
    m = re.search(r"([0-9]{1,9})\.([0-9]{1,9})", text) or re.search(r"([0-9]{1,9})", text)
    if m:
        facts.version = (int(m.group(1)), int(m.group(2)) if m.lastindex == 2 else 0)


def _key_values(lines: list[str], unquote: Callable[[str], str]) -> list[tuple[str, str]]:
    out = []
    for line in lines:
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            out.append((key, unquote(value)))
    return out


def _shell_unquote(value: str) -> str:
    try:
        return " ".join(shlex.split(value))
    except ValueError:
        return value.strip("\"'")


def _simple_unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value


class _Release:
    """The release-file tests of one mounted root."""

    def __init__(self, guest: Guest, facts: Facts) -> None:
        self.guest, self.facts = guest, facts

    def lines(self, path: str) -> list[str] | None:
        try:
            return self.guest.read_lines(path, max_bytes=_SMALL, max_lines=1000)
        except GuestReadError:
            return None

    def os_release(self, path: str) -> bool:
        lines = self.lines(path)
        if lines is None:
            return False
        f = self.facts
        for key, value in _key_values(lines, _shell_unquote):
            if key == "ID":
                f.distro = distro_of_os_release_id(value) or f.distro
            elif key == "PRETTY_NAME":
                f.product_name = value
            elif key == "VERSION_ID":
                m = re.fullmatch(r"V([0-9]{1,9})Update([0-9]{1,9})", value)  # NeoKylin
                if m:
                    f.version = (int(m.group(1)), int(m.group(2)))
                else:
                    parse_version(value, f)
                f.version_text = value
        if f.distro is None or f.product_name is None:
            return False
        if f.distro in ("debian", "centos") and f.version is not None and f.version[1] == 0:
            return False  # VERSION_ID lacks the point release: the release file has it
        if f.distro == "voidlinux" and f.version is None:
            f.version = (0, 0)
            return True
        return f.version is not None

    def lsb_release(self, path: str) -> bool:
        lines = self.lines(path)
        if lines is None:
            return False
        ok = False
        for key, value in _key_values(lines, _simple_unquote):
            if key == "DISTRIB_ID" and value in _LSB_IDS:
                self.facts.distro, ok = _LSB_IDS[value], True
            elif key == "DISTRIB_RELEASE":
                parse_version(value, self.facts)
                self.facts.version_text = value
            elif key == "DISTRIB_DESCRIPTION":
                self.facts.product_name, ok = value, True
        return ok

    def generic(self, distro: str, rex: str | None = None) -> Callable[[str], bool]:
        def parse(path: str) -> bool:
            lines = self.lines(path)
            first = lines[0][:512] if lines else ""  # bounded: the rules backtrack
            if not first:
                return False
            f = self.facts
            f.product_name, f.distro = first, distro
            if rex is None:
                parse_version(first, f)
                f.version_text = first.strip() if distro in ("debian", "alpinelinux") \
                    else f.version_text
                return True
            m = re.search(rex, first)
            if not m:
                return False
            groups = [g for g in m.groups() if g is not None]
            if groups:
                f.version = (int(groups[0]), int(groups[1]) if len(groups) > 1 else 0)
            return True
        return parse

    def suse(self, path: str) -> bool:
        lines = self.lines(path)
        if not lines:
            return False
        f = self.facts
        f.product_name = lines[0][:512]
        if re.match(r"SUSE (Linux|LINUX) Enterprise ", lines[0]) \
                or re.match(r"Novell Linux Desktop ", lines[0]):
            major = re.match(r"VERSION = ([0-9]{1,9})", lines[1]) if len(lines) > 1 else None
            minor = re.match(r"PATCHLEVEL = ([0-9]{1,9})", lines[2]) if len(lines) > 2 else None
            f.distro = "sles"
            f.version = (int(major.group(1)), int(minor.group(1)) if minor else 0) \
                if major else None
        elif re.match(r"(openSUSE|SuSE Linux|SUSE LINUX) ", lines[0]):
            if len(lines) > 1:
                parse_version(lines[1], f)
            f.distro = "opensuse"
        return True

    def set_distro(self, distro: str) -> Callable[[str], bool]:
        def parse(path: str) -> bool:
            self.facts.distro = distro
            return True
        return parse

    def tests(self) -> list[tuple[str, Callable[[str], bool]]]:
        rh = r"Red Hat.*release ([0-9]{1,9})"
        co = r"CentOS.*release ([0-9]{1,9})"
        sl = r"Scientific Linux.*release ([0-9]{1,9})"
        ol = r"Oracle Linux.*release ([0-9]{1,9})"
        g = self.generic
        return [
            ("/etc/os-release", self.os_release),
            ("/etc/lsb-release", self.lsb_release),
            ("/etc/oracle-release", g("oraclelinux", ol + r".*Update ([0-9]{1,9})")),
            ("/etc/oracle-release", g("oraclelinux", ol + r"\.([0-9]{1,9})")),
            ("/etc/oracle-release", g("oraclelinux", ol)),
            ("/etc/centos-release", g("centos", co + r".*Update ([0-9]{1,9})")),
            ("/etc/centos-release", g("centos", co + r"\.([0-9]{1,9})")),
            ("/etc/centos-release", g("centos", co)),
            ("/etc/altlinux-release", g("altlinux")),
            ("/etc/redhat-release", g("fedora", r"Fedora release ([0-9]{1,9})")),
            ("/etc/redhat-release", g("rhel", rh + r".*Update ([0-9]{1,9})")),
            ("/etc/redhat-release", g("rhel", rh + r"\.([0-9]{1,9})")),
            ("/etc/redhat-release", g("rhel", rh)),
            ("/etc/redhat-release", g("centos", co + r".*Update ([0-9]{1,9})")),
            ("/etc/redhat-release", g("centos", co + r"\.([0-9]{1,9})")),
            ("/etc/redhat-release", g("centos", co)),
            ("/etc/redhat-release", g("scientificlinux", sl + r".*Update ([0-9]{1,9})")),
            ("/etc/redhat-release", g("scientificlinux", sl + r"\.([0-9]{1,9})")),
            ("/etc/redhat-release", g("scientificlinux", sl)),
            ("/etc/redhat-release", g("redhat-based")),
            ("/etc/redhat-release", self.set_distro("redhat-based")),
            ("/etc/debian_version", g("debian")),
            ("/etc/pardus-release", g("pardus")),
            ("/etc/arch-release", self.set_distro("archlinux")),
            ("/etc/gentoo-release", g("gentoo")),
            ("/etc/meego-release", g("meego")),
            ("/etc/slackware-version", g("slackware")),
            ("/etc/ttylinux-target", g("ttylinux")),
            ("/etc/SuSE-release", self.suse),
            ("/etc/SuSE-release", self.set_distro("suse-based")),
            ("/etc/cirros/version", g("cirros")),
            ("/etc/alpine-release", g("alpinelinux")),
            ("/etc/frugalware-release", g("frugalware", r"Frugalware ([0-9]{1,9})\.([0-9]{1,9})")),
            ("/etc/pld-release", g("pldlinux", r"([0-9]{1,9})\.([0-9]{1,9}) PLD Linux")),
        ]

    def run(self) -> None:
        tests = self.tests()
        present = self.guest.kinds(dict.fromkeys(path for path, _ in tests))
        for path, parse in tests:
            if present[path] == "file" and parse(path):
                return


def release_facts(guest: Guest) -> Facts:
    """Distro, product name and version from the mounted root's release files."""
    facts = Facts()
    _Release(guest, facts).run()
    return facts


def coreos_facts(guest: Guest) -> Facts:
    """A CoreOS root: everything but the hostname is in its /usr (mounted there)."""
    facts = Facts(distro="coreos")
    usr = Facts()
    release = _Release(guest, usr)
    if guest.is_file("/usr/lib/os-release", follow=True):
        release.os_release("/usr/lib/os-release")
    elif guest.is_file("/usr/share/coreos/lsb-release", follow=True):
        release.lsb_release("/usr/share/coreos/lsb-release")
    facts.product_name, facts.version, facts.version_text = \
        usr.product_name, usr.version, usr.version_text
    return facts


def hostname_linux(guest: Guest) -> str | None:
    """/etc/HOSTNAME, /etc/hostname (the first line, as it is), then the HOSTNAME
    of /etc/sysconfig/network (older Red Hat)."""
    for path in ("/etc/HOSTNAME", "/etc/hostname"):
        try:
            lines = guest.read_lines(path, max_bytes=4096, max_lines=2)
        except GuestReadError:
            continue
        if lines and lines[0]:
            return lines[0][:255]
    try:
        lines = guest.read_lines("/etc/sysconfig/network", max_bytes=_SMALL, max_lines=200)
    except GuestReadError:
        return None
    for key, value in _key_values(lines, _simple_unquote):
        if key == "HOSTNAME":
            return value.strip()[:255] or None
    return None


_ELF_MACHINES = {3: "i386", 62: "x86_64", 40: "arm", 183: "aarch64", 243: "riscv64",
                 20: "ppc", 21: "ppc64", 22: "s390x", 8: "mips", 2: "sparc", 43: "sparc64"}


def arch_linux(guest: Guest, binaries: tuple[str, ...] = (
        "/bin/bash", "/bin/ls", "/bin/echo", "/bin/rm", "/bin/sh")) -> str | None:
    """The architecture of the first of libguestfs's probe binaries that exists."""
    for path in binaries:
        try:
            head = guest.read_bytes(path, max_bytes=20)
        except GuestReadError:
            continue
        if len(head) == 20 and head[:4] == b"\x7fELF":
            endian = "<" if head[5] == 1 else ">"
            (machine,) = struct.unpack(endian + "H", head[18:20])
            name = _ELF_MACHINES.get(machine, f"elf-{machine}")
            if name == "ppc64" and endian == "<":
                name = "ppc64le"
            return name
    return None


_FORMATS = {
    **dict.fromkeys(("altlinux", "centos", "fedora", "mageia", "mandriva", "meego",
                     "neokylin", "opensuse", "oraclelinux", "redhat-based", "rhel",
                     "scientificlinux", "sles", "suse-based", "rocky"), "rpm"),
    **dict.fromkeys(("debian", "kalilinux", "linuxmint", "ubuntu"), "deb"),
    "archlinux": "pacman", "gentoo": "ebuild", "pardus": "pisi", "alpinelinux": "apk",
    "voidlinux": "xbps",
}


def package_format(distro: str) -> str:
    return _FORMATS.get(distro, "unknown")


def package_management(guest: Guest | None, distro: str, major: int) -> str:
    """As libguestfs guesses it: from the distro and its major version."""
    if distro == "meego":
        return "yum"
    if distro == "fedora":
        if major >= 22 and guest is not None and guest.is_file("/usr/bin/dnf", follow=True):
            return "dnf"
        return "yum" if major >= 1 else "unknown"
    if distro == "neokylin":
        return "dnf"
    if distro in ("centos", "oraclelinux", "redhat-based", "rhel", "scientificlinux", "rocky"):
        return "dnf" if major >= 8 else "yum" if major >= 5 else "up2date" if major >= 2 \
            else "unknown"
    return {"altlinux": "apt", "debian": "apt", "kalilinux": "apt", "linuxmint": "apt",
            "ubuntu": "apt", "archlinux": "pacman", "gentoo": "portage", "pardus": "pisi",
            "mageia": "urpmi", "mandriva": "urpmi", "opensuse": "zypper", "sles": "zypper",
            "suse-based": "zypper", "alpinelinux": "apk", "voidlinux": "xbps",
            }.get(distro, "unknown")


def osinfo(facts: dict[str, Any]) -> str:
    """libguestfs's inspect_get_osinfo: a libosinfo short ID."""
    kind, distro = facts.get("type"), str(facts.get("distro", "unknown"))
    major, minor = int(facts.get("major_version", 0)), int(facts.get("minor_version", 0))
    if kind == "linux":
        if distro == "centos":
            if major >= 8:
                return f"centos{major}"
            if major == 7:
                return "centos7.0"
            if major == 6:
                return f"centos6.{minor}"
        elif distro in ("circle", "rocky"):
            if major >= 8:
                return f"{distro}{major}"
        elif distro == "debian":
            if major >= 4:
                return f"debian{major}"
        elif distro in ("fedora", "mageia"):
            return f"{distro}{major}"
        elif distro == "sles":
            return f"sles{major}" if minor == 0 else f"sles{major}sp{minor}"
        elif distro == "ubuntu":
            return f"ubuntu{major}.{minor:02d}"
        elif distro in ("archlinux", "gentoo", "voidlinux"):
            return distro
        elif distro == "altlinux":
            return f"alt{major}.{minor}" if major >= 8 else f"altlinux{major}.{minor}"
        if distro != "unknown" and (major > 0 or minor > 0):
            return f"{distro}{major}.{minor}"
    elif kind == "windows":
        return _windows_osinfo(major, minor, str(facts.get("product_name", "")),
                               str(facts.get("product_variant", "")),
                               str(facts.get("build_id", "")))
    return "unknown"


def _windows_osinfo(major: int, minor: int, name: str, variant: str, build: str) -> str:
    server = "Server" in variant
    if major == 5:
        if minor == 1:
            return "winxp"
        if minor == 2:
            return "winxp" if "XP" in name else "win2k3r2" if "R2" in name else "win2k3"
    if major == 6 and minor in (0, 1, 2, 3):
        return (("win2k8", "win2k8r2", "win2k12", "win2k12r2") if server
                else ("winvista", "win7", "win8", "win8.1"))[minor]
    if major == 10 and minor == 0:
        if server:
            for year, short in (("2025", "win2k25"), ("2022", "win2k22"), ("2019", "win2k19")):
                if year in name:
                    return short
            return "win2k16"
        if build.isdigit():
            return "win11" if int(build) >= 22000 else "win10"
    return "unknown"
