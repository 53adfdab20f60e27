"""OS facts derived the way libguestfs derives them, from release files in a fake tree."""

from __future__ import annotations

from typing import Any

import pytest
from helpers.fake_guest import DIR, Link, mounted_guest

from guestpool.inspectors._builtin import root_facts

ELF64 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + b"\x3e\x00" + b"\0" * 44
LINUX = {"/etc/fstab": b"", "/bin/sh": ELF64, "/usr/bin": DIR}
OS_RELEASE_DEBIAN12 = (b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
                       b'VERSION_ID="12"\nID=debian\n')


def facts(files: dict[str, Any]) -> dict[str, Any]:
    guest = mounted_guest({**LINUX, **files})
    return root_facts(guest, guest.roots()[0])


def pick(value: dict[str, Any], *keys: str) -> tuple[Any, ...]:
    return tuple(value[k] for k in keys)


FIELDS = ("distro", "product_name", "major_version", "minor_version", "package_format",
          "package_management", "osinfo")


@pytest.mark.parametrize("files, expected", [
    # os-release without a point release: libguestfs goes on to debian_version,
    # which also replaces the product name
    ({"/etc/os-release": OS_RELEASE_DEBIAN12, "/etc/debian_version": b"12.15\n"},
     ("debian", "12.15", 12, 15, "deb", "apt", "debian12")),
    ({"/etc/os-release": OS_RELEASE_DEBIAN12},
     ("debian", "Debian GNU/Linux 12 (bookworm)", 12, 0, "deb", "apt", "debian12")),
    ({"/etc/debian_version": b"8.11\n"}, ("debian", "8.11", 8, 11, "deb", "apt", "debian8")),
    ({"/etc/redhat-release": b"CentOS Linux release 7.9.2009 (Core)\n",
      "/etc/centos-release": b"CentOS Linux release 7.9.2009 (Core)\n"},
     ("centos", "CentOS Linux release 7.9.2009 (Core)", 7, 9, "rpm", "yum", "centos7.0")),
    ({"/etc/redhat-release": b"Red Hat Enterprise Linux release 9.3 (Plow)\n"},
     ("rhel", "Red Hat Enterprise Linux release 9.3 (Plow)", 9, 3, "rpm", "dnf", "rhel9.3")),
    ({"/etc/lsb-release": b'DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=20.04\n'
                          b'DISTRIB_DESCRIPTION="Ubuntu 20.04.6 LTS"\n'},
     ("ubuntu", "Ubuntu 20.04.6 LTS", 20, 4, "deb", "apt", "ubuntu20.04")),
    # Arch: os-release has no VERSION_ID, so libguestfs goes on to arch-release
    ({"/etc/os-release": b'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\n'
                         b'BUILD_ID=rolling\n', "/etc/arch-release": b""},
     ("archlinux", "Arch Linux", 0, 0, "pacman", "pacman", "archlinux")),
    ({"/etc/os-release": b'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n'
                         b'PRETTY_NAME="Fedora Linux 40 (Server Edition)"\n',
      "/usr/bin/dnf": b"#!"},
     ("fedora", "Fedora Linux 40 (Server Edition)", 40, 0, "rpm", "dnf", "fedora40")),
    ({"/etc/os-release": b'NAME="Fedora Linux"\nID=fedora\nVERSION_ID=40\n'
                         b'PRETTY_NAME="Fedora Linux 40"\n'},
     ("fedora", "Fedora Linux 40", 40, 0, "rpm", "yum", "fedora40")),
    ({"/etc/alpine-release": b"3.19.1\n"},
     ("alpinelinux", "3.19.1", 3, 19, "apk", "apk", "alpinelinux3.19")),
    # os-release a symlink into /usr/lib (most distros now), followed inside the guest
    ({"/etc/os-release": Link("../usr/lib/os-release"),
      "/usr/lib/os-release": b'ID=alpine\nVERSION_ID=3.20.1\nPRETTY_NAME="Alpine Linux v3.20"\n'},
     ("alpinelinux", "Alpine Linux v3.20", 3, 20, "apk", "apk", "alpinelinux3.20")),
])
def test_release_files_give_libguestfs_answers(files: dict[str, Any],
                                                expected: tuple[Any, ...]) -> None:
    assert pick(facts(files), *FIELDS) == expected


def test_hostname_order_and_sysconfig() -> None:
    assert facts({"/etc/hostname": b"web1\n", "/etc/HOSTNAME": b"old\n"})["hostname"] == "old"
    assert facts({"/etc/sysconfig/network": b'NETWORKING=yes\nHOSTNAME="c7.corp"\n'}
                 )["hostname"] == "c7.corp"
    assert facts({})["hostname"] == "unknown"


def test_arch_from_the_first_probe_binary() -> None:
    aarch64 = ELF64[:18] + b"\xb7\x00" + ELF64[20:]
    assert facts({"/bin/bash": aarch64})["arch"] == "aarch64"
    assert facts({})["arch"] == "x86_64"  # /bin/sh


@pytest.mark.parametrize("line", [
    "Red Hat release " + "9" * 5000,  # longer than int() takes
    "CentOS" + " release" * 3000 + " 7.1",  # backtracking bait
])
def test_hostile_release_lines_are_bounded(line: str) -> None:
    value = facts({"/etc/redhat-release": line.encode()})
    assert value["major_version"] < 10**9 and len(value["product_name"]) <= 512


def test_windows_osinfo_by_version_and_variant() -> None:
    from guestpool.inspectors._osfacts import osinfo

    win = {"type": "windows", "distro": "windows"}
    assert osinfo(win | {"major_version": 10, "minor_version": 0, "product_variant": "Server",
                         "product_name": "Windows Server 2019 Standard"}) == "win2k19"
    assert osinfo(win | {"major_version": 10, "minor_version": 0, "product_variant": "Client",
                         "product_name": "Windows 11 Pro", "build_id": "22631"}) == "win11"
    assert osinfo(win | {"major_version": 6, "minor_version": 1, "product_variant": "Client",
                         "product_name": "Windows 7"}) == "win7"
