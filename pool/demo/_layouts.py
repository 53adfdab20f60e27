"""The corpus VMs, one builder per hard layout: host trees with known facts,
what host tools make of them, the appliance work for what needs a kernel
(md RAID, LUKS, LVM, btrfs subvolumes, NTFS), and the facts each VM must
yield (``expected``)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool.inspectors import _rpmdb as rpmdb

from . import _regf as regf
from ._images import (
    XFS_MB,
    MiB,
    Part,
    _disk,
    _fill,
    _luks_format,
    _lvm,
    _mkfs_host,
    _sh,
    _tar,
    _write,
)
from ._packages import _apk, _deb_packages, _pacman, _pkg, _rpm_sqlite, write_rpm_bdb
from ._windows_guest import WIN_APPS, WIN_DISK_ID, pe_executable, windows_hives

#: what the appliance does to a VM's disks, given their appliance device names
Work = Callable[[Any, list[str]], None]


ELF = "/usr/bin/true"  # any host ELF binary: libguestfs reads a guest's arch from one


def _uuid(n: int) -> str:
    """A fixed, readable UUID per filesystem, so fstab and expected.json agree."""
    return f"c0de{n:04x}-0000-4000-8000-{n:012x}"


def _linux_tree(root: Path, *, hostname: str | None = None, fstab: str | None = None,
                files: dict[str, str] | None = None, hosts: bool = True) -> None:
    """The skeleton libguestfs needs to call a filesystem a Linux root:
    /etc, /bin (a symlink to usr/bin holding an ELF for the arch), /etc/fstab or hosts."""
    _write(root, "/usr/bin/sh", Path(ELF).read_bytes(), 0o755)
    (root / "bin").symlink_to("usr/bin")
    _write(root, "/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    if hosts:
        _write(root, "/etc/hosts", "127.0.0.1 localhost\n")
    if hostname is not None:
        _write(root, "/etc/hostname", hostname + "\n")
    if fstab is not None:
        _write(root, "/etc/fstab", fstab)
    for rel, text in (files or {}).items():
        _write(root, rel, text)


@dataclass
class CorpusVM:
    """One corpus VM being built: its disk files, facts and appliance work."""

    name: str
    disks: list[str]
    expected: dict[str, Any]
    work: Work | None = None
    keys: list[dict[str, str]] = field(default_factory=list)
    qcow2: bool = False


#: Debian's product_name is libguestfs's: os-release's VERSION_ID has no minor part, so
#: libguestfs reads /etc/debian_version instead and reports its first line ("11.9")
def _expect(type_: str = "linux", distro: str = "unknown", major: int = 0, minor: int = 0,
            product_name: str = "unknown", hostname: str = "unknown", root: str = "",
            mountpoints: dict[str, str] | None = None, package_format: str = "unknown",
            packages: list[dict[str, Any]] | None = None, findings: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    pk = packages or []
    return {"type": type_, "distro": distro, "major_version": major, "minor_version": minor,
            "product_name": product_name, "hostname": hostname, "arch": "x86_64",
            "root": root, "mountpoints": mountpoints or {"/": root},
            "package_format": package_format, "package_count": len(pk),
            "packages_sample": pk[:3], "roots": 1, "findings": findings or [], **extra}


FEDORA_RELEASE = ('NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\nID=fedora\n'
                  'VERSION_ID=40\nPRETTY_NAME="Fedora Linux 40 (Server Edition)"\n')


RPM_PACKAGES = [("bash", "5.2.26", "3.fc40"), ("coreutils", "9.4", "6.fc40"),
                ("glibc", "2.39", "8.fc40"), ("openssh-server", "9.6p1", "1.fc40.4"),
                ("kernel-core", "6.8.5", "301.fc40")]


def _btrfs_subvol(d: Path, t: Path) -> CorpusVM:
    boot, btrfs, root, home = _uuid(0x101), _uuid(0x102), t / "root", t / "home"
    fstab = (f"UUID={btrfs} / btrfs subvol=root,compress=zstd:1 0 0\n"
             f"UUID={btrfs} /home btrfs subvol=home 0 0\nUUID={boot} /boot ext4 defaults 1 2\n")
    _linux_tree(root, hostname="fedora-subvol.corpus", fstab=fstab,
                files={"/etc/os-release": FEDORA_RELEASE,
                       "/etc/fedora-release": "Fedora release 40 (Forty)\n"})
    for sub in ("boot", "home"):
        (root / sub).mkdir()
    pk = _rpm_sqlite(root, RPM_PACKAGES)
    _write(home, "/alice/.bashrc", "# alice\n")
    _write(t / "boot", "/vmlinuz-6.8.5-301.fc40.x86_64", b"\0" * 512)
    _disk(d / "btrfs-subvol.img", 300, [Part(32, fs=("ext4", t / "boot", boot, "boot")),
                                        Part(None)])

    def work(g: Any, devs: list[str]) -> None:
        dev = devs[0] + "2"
        _sh(g, f"mkfs.btrfs -q -f -U {btrfs} -L fedora {dev}")
        g.mount(dev, "/")
        g.btrfs_subvolume_create("/root")
        g.btrfs_subvolume_create("/home")
        g.umount_all()
        for sub, tree in (("root", root), ("home", home)):
            g.mount_options(f"subvol={sub}", dev, "/")
            g.tar_in(str(_tar(tree, t / f"{sub}.tar")), "/")
            g.umount_all()

    vol = "btrfsvol:/dev/sda2/"
    return CorpusVM("btrfs-subvol", ["btrfs-subvol.img"], _expect(
        distro="fedora", major=40, product_name="Fedora Linux 40 (Server Edition)",
        hostname="fedora-subvol.corpus", root=vol + "root",
        mountpoints={"/": vol + "root", "/home": vol + "home", "/boot": "/dev/sda1"},
        package_format="rpm", packages=pk), work, qcow2=True)


DEBIAN11 = ('PRETTY_NAME="Debian GNU/Linux 11 (bullseye)"\nNAME="Debian GNU/Linux"\n'
            'VERSION_ID="11"\nVERSION="11 (bullseye)"\nVERSION_CODENAME=bullseye\nID=debian\n')


DEB_PACKAGES = [("base-files", "11.1+deb11u9", "install ok installed"),
                ("bash", "5.1-2+deb11u1", "install ok installed"),
                ("mdadm", "4.1-11", "install ok installed"),
                ("lvm2", "2.03.11-2.1", "install ok installed"),
                ("openssh-server", "1:8.4p1-5+deb11u3", "install ok installed")]


def _mdraid(d: Path, t: Path) -> list[CorpusVM]:
    boot_fs, root_fs, root, boot = _uuid(0x201), _uuid(0x202), t / "root", t / "boot"
    md_boot, md_pv = "c0de0211:00004000:80000000:00000211", "c0de0212:00004000:80000000:00000212"
    fstab = f"UUID={root_fs} / ext4 errors=remount-ro 0 1\nUUID={boot_fs} /boot ext4 defaults 0 2\n"
    _linux_tree(root, hostname="debian-md", fstab=fstab, files={
        "/etc/os-release": DEBIAN11, "/etc/debian_version": "11.9\n",
        "/etc/mdadm/mdadm.conf": f"HOMEHOST <system>\nARRAY /dev/md/boot metadata=1.0 "
                                 f"UUID={md_boot} name=boot\nARRAY /dev/md/pv metadata=1.2 "
                                 f"UUID={md_pv} name=pv\n"})
    (root / "boot").mkdir()
    pk = _deb_packages(root, DEB_PACKAGES)
    _write(boot, "/vmlinuz-5.10.0-28-amd64", b"\0" * 512)
    names = ["mdraid-0.img", "mdraid-1.img"]
    for n in names:
        _disk(d / n, 160, [Part(40, "fd"), Part(None, "fd")])

    def work(g: Any, devs: list[str]) -> None:
        a, b = devs
        create = ("mdadm --create --run --assume-clean --level=1 --raid-devices=2 "
                  "--homehost='<none>'")
        _sh(g, f"{create} --metadata=1.0 --name=boot --uuid={md_boot} /dev/md/boot {a}1 {b}1; "
               f"{create} --metadata=1.2 --name=pv --uuid={md_pv} /dev/md/pv {a}2 {b}2; "
               f"lvm pvcreate -q /dev/md/pv; lvm vgcreate -q vg_md /dev/md/pv; "
               f"lvm lvcreate -q -y -n root -L 64m vg_md")
        _fill(g, "/dev/md/boot", "ext4", boot_fs, "boot", boot, t)
        _fill(g, "/dev/vg_md/root", "ext4", root_fs, "root", root, t)
        _sh(g, "lvm vgchange -q -an vg_md; mdadm --stop /dev/md/pv; mdadm --stop /dev/md/boot")

    expected = _expect(distro="debian", major=11, minor=9,
                       product_name="11.9", hostname="debian-md",
                       root="/dev/vg_md/root",
                       mountpoints={"/": "/dev/vg_md/root", "/boot": "/dev/md/boot"},
                       package_format="deb", packages=pk)
    return [CorpusVM("mdraid", names, expected, work),
            CorpusVM("mdraid-degraded", names[:1], {**expected, "findings": ["md-degraded"]})]


UBUNTU2204 = ('PRETTY_NAME="Ubuntu 22.04.4 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
              'VERSION="22.04.4 LTS (Jammy Jellyfish)"\nID=ubuntu\nID_LIKE=debian\n')


LSB2204 = ('DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=22.04\nDISTRIB_CODENAME=jammy\n'
           'DISTRIB_DESCRIPTION="Ubuntu 22.04.4 LTS"\n')


UBUNTU_PACKAGES = [("base-files", "12ubuntu4.6", "install ok installed"),
                   ("cryptsetup", "2:2.4.3-1ubuntu1.2", "install ok installed"),
                   ("lvm2", "2.03.11-2.1ubuntu4", "install ok installed"),
                   ("openssh-server", "1:8.9p1-3ubuntu0.6", "install ok installed")]


def _boot_tree(t: Path, kernel: str) -> Path:
    _write(t / "boot", f"/vmlinuz-{kernel}", b"\0" * 512)
    return t / "boot"


def _luks_lvm(d: Path, t: Path) -> list[CorpusVM]:
    boot_fs, root_fs, luks = _uuid(0x301), _uuid(0x302), _uuid(0x303)
    key = "corpus-luks-lvm-passphrase"
    (d / "luks-lvm.key").write_text(key)
    root = t / "root"
    _linux_tree(root, hostname="ubuntu-crypt", files={
        "/etc/os-release": UBUNTU2204, "/etc/lsb-release": LSB2204,
        "/etc/fstab": f"/dev/mapper/vg_crypt-root / ext4 errors=remount-ro 0 1\n"
                      f"UUID={boot_fs} /boot ext4 defaults 0 2\n"
                      f"/dev/mapper/vg_crypt-swap none swap sw 0 0\n",
        "/etc/crypttab": f"luks-{luks} UUID={luks} none luks,discard\n"})
    (root / "boot").mkdir()
    pk = _deb_packages(root, UBUNTU_PACKAGES)
    boot = _boot_tree(t, "5.15.0-105-generic")
    _disk(d / "luks-lvm.img", 160, [Part(32, fs=("ext4", boot, boot_fs, "boot")), Part(None)])

    def work(g: Any, devs: list[str]) -> None:
        mapped = _luks_format(g, devs[0] + "2", key, luks)
        _sh(g, f"lvm pvcreate -q {mapped}; lvm vgcreate -q vg_crypt {mapped}; "
               f"lvm lvcreate -q -y -n root -L 64m vg_crypt; "
               f"lvm lvcreate -q -y -n swap -L 16m vg_crypt; mkswap -q /dev/vg_crypt/swap")
        _fill(g, "/dev/vg_crypt/root", "ext4", root_fs, "root", root, t)
        _sh(g, f"lvm vgchange -q -an vg_crypt; cryptsetup close luks-{luks}")

    expected = _expect(distro="ubuntu", major=22, minor=4, product_name="Ubuntu 22.04.4 LTS",
                       hostname="ubuntu-crypt", root="/dev/vg_crypt/root",
                       mountpoints={"/": "/dev/vg_crypt/root", "/boot": "/dev/sda1"},
                       package_format="deb", packages=pk, luks={"/dev/sda2": luks})
    # no key: nothing of the OS is known (None: not checked), but it must say why
    nokey = {**dict.fromkeys(expected), "roots": 0, "findings": ["encrypted"],
             "luks": {"/dev/sda2": luks}}
    return [CorpusVM("luks-lvm", ["luks-lvm.img"], expected, work,
                     keys=[{"file": "luks-lvm.key"}]),
            CorpusVM("luks-nokey", ["luks-lvm.img"], nokey)]


RHEL93 = ('NAME="Red Hat Enterprise Linux"\nVERSION="9.3 (Plow)"\nID="rhel"\n'
          'ID_LIKE="fedora"\nVERSION_ID="9.3"\nPRETTY_NAME="Red Hat Enterprise Linux 9.3 (Plow)"\n')


RHEL_PACKAGES = [("bash", "5.1.8", "6.el9_1"), ("cryptsetup", "2.6.0", "3.el9"),
                 ("glibc", "2.34", "83.el9_3.7"), ("openssh-server", "8.7p1", "34.el9")]


def _lvm_luks(d: Path, t: Path) -> CorpusVM:
    boot_fs, root_fs, home_fs = _uuid(0x401), _uuid(0x402), _uuid(0x403)
    luks_root, luks_home = _uuid(0x404), _uuid(0x405)
    keys = {"root": "corpus-lvm-luks-root-key", "home": "corpus-lvm-luks-home-key"}
    for lv, k in keys.items():
        (d / f"lvm-luks-{lv}.key").write_text(k)
    root, home = t / "root", t / "home"
    _linux_tree(root, hostname="rhel-sec.corp", files={
        "/etc/os-release": RHEL93,
        "/etc/redhat-release": "Red Hat Enterprise Linux release 9.3 (Plow)\n",
        "/etc/fstab": f"/dev/mapper/luks-{luks_root} / ext4 defaults 1 1\n"
                      f"UUID={boot_fs} /boot ext4 defaults 1 2\n"
                      f"UUID={home_fs} /home ext4 defaults 1 2\n",
        "/etc/crypttab": f"luks-{luks_root} UUID={luks_root} none\n"
                         f"luks-{luks_home} UUID={luks_home} /etc/home.key\n"})
    for sub in ("boot", "home"):
        (root / sub).mkdir()
    pk = _rpm_sqlite(root, RHEL_PACKAGES)
    _write(home, "/bob/.bash_profile", "# bob\n")
    boot = _boot_tree(t, "5.14.0-362.8.1.el9_3.x86_64")
    _disk(d / "lvm-luks.img", 200, [Part(32, fs=("ext4", boot, boot_fs, "boot")),
                                    Part(None, "8e")])

    def work(g: Any, devs: list[str]) -> None:
        pv = devs[0] + "2"
        _sh(g, f"lvm pvcreate -q {pv}; lvm vgcreate -q vg_sec {pv}; "
               f"lvm lvcreate -q -y -n root -L 64m vg_sec; "
               f"lvm lvcreate -q -y -n home -L 48m vg_sec")
        for lv, luks, fs, tree in (("root", luks_root, root_fs, root),
                                   ("home", luks_home, home_fs, home)):
            mapped = _luks_format(g, f"/dev/vg_sec/{lv}", keys[lv], luks)
            _fill(g, mapped, "ext4", fs, lv, tree, t)
            _sh(g, f"cryptsetup close luks-{luks}")
        _sh(g, "lvm vgchange -q -an vg_sec")

    return CorpusVM("lvm-luks", ["lvm-luks.img"], _expect(
        distro="rhel", major=9, minor=3, product_name="Red Hat Enterprise Linux 9.3 (Plow)",
        hostname="rhel-sec.corp", root=f"/dev/mapper/luks-{luks_root}",
        mountpoints={"/": f"/dev/mapper/luks-{luks_root}", "/boot": "/dev/sda1",
                     "/home": f"/dev/mapper/luks-{luks_home}"},
        package_format="rpm", packages=pk,
        luks={"/dev/vg_sec/root": luks_root, "/dev/vg_sec/home": luks_home}), work,
        keys=[{"device": "/dev/vg_sec/root", "file": "lvm-luks-root.key"},
              {"device": "/dev/vg_sec/home", "file": "lvm-luks-home.key"}])


COREOS_RELEASE = ('NAME="Container Linux by CoreOS"\nID=coreos\nVERSION=3815.2.0\n'
                  'VERSION_ID=3815.2.0\nBUILD_ID=2024-02-21-0001\n'
                  'PRETTY_NAME="Container Linux by CoreOS 3815.2.0 (Oklo)"\n')


def _coreos(d: Path, t: Path) -> CorpusVM:
    usr, root, efi = t / "usr", t / "root", t / "efi"
    _write(usr, "/lib/os-release", COREOS_RELEASE)
    _write(usr, "/share/coreos/lsb-release",
           "DISTRIB_ID=CoreOS\nDISTRIB_RELEASE=3815.2.0\nDISTRIB_CODENAME=Oklo\n"
           'DISTRIB_DESCRIPTION="CoreOS 3815.2.0 (Oklo)"\n')
    _write(usr, "/bin/bash", Path(ELF).read_bytes(), 0o755)
    (usr / "local").mkdir()
    _write(root, "/etc/coreos/update.conf", "GROUP=stable\n")
    _write(root, "/etc/hostname", "coreos-node1\n")
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    for sub in ("root", "home", "usr"):
        (root / sub).mkdir()
    efi.mkdir()
    _disk(d / "coreos.img", 130, [
        Part(16, "uefi", ("vfat", efi, "c0de0501-0000", "EFI-SYSTEM"), name="EFI-SYSTEM"),
        Part(48, "linux", ("ext4", usr, _uuid(0x502), "USR-A"), name="USR-A"),
        Part(None, "linux", ("ext4", root, _uuid(0x503), "ROOT"), name="ROOT")], label="gpt")
    return CorpusVM("coreos", ["coreos.img"], _expect(
        distro="coreos", major=3815, minor=2,
        product_name="Container Linux by CoreOS 3815.2.0 (Oklo)", hostname="coreos-node1",
        root="/dev/sda3", mountpoints={"/": "/dev/sda3", "/usr": "/dev/sda2"}))


def _windows(d: Path, t: Path) -> CorpusVM:
    system_mb = 32
    c_offset = (1 + system_mb) * MiB
    software, system = windows_hives(c_offset)
    sysres, win = t / "sysres", t / "c"
    _write(sysres, "/bootmgr", b"\0" * 512)
    _write(sysres, "/Boot/BCD", regf.hive(regf.Key("ROOT")))
    _write(win, "/Windows/System32/config/SOFTWARE", software)
    _write(win, "/Windows/System32/config/SYSTEM", system)
    _write(win, "/Windows/System32/cmd.exe", pe_executable())
    _write(win, "/Windows/explorer.exe", pe_executable())
    _write(win, "/Program Files/7-Zip/7z.exe", pe_executable())
    _write(win, "/Users/Administrator/NTUSER.DAT", regf.hive(regf.Key("ROOT")))
    _disk(d / "windows.img", 160, [Part(system_mb, "7", bootable=True), Part(None, "7")],
          label_id=f"0x{WIN_DISK_ID:08x}")

    def work(g: Any, devs: list[str]) -> None:
        _fill(g, devs[0] + "1", "ntfs", "", "System", sysres, t)
        _fill(g, devs[0] + "2", "ntfs", "", "Windows", win, t)

    apps = [{"name": guid, "display_name": name, "version": ver, "publisher": pub,
             "install_path": loc} for guid, name, ver, pub, loc in WIN_APPS]
    # as libguestfs lists them: the Uninstall key's name, DisplayVersion, no release/arch
    pk = [_pkg(guid, 0, ver, "", "") for guid, _, ver, _, _ in WIN_APPS]
    return CorpusVM("windows", ["windows.img"], _expect(
        type_="windows", distro="windows", major=10, minor=0,
        product_name="Windows Server 2019 Standard", hostname="win-corpus01", root="/dev/sda2",
        mountpoints={"/": "/dev/sda2"}, packages=pk,
        windows={"systemroot": "/Windows", "current_control_set": "ControlSet001",
                 "drive_mappings": {"C": "/dev/sda2"}, "product_variant": "Server",
                 "edition": "ServerStandard", "build": "17763", "applications": apps},
        ), work, qcow2=True)


CENTOS_PACKAGES: list[tuple[str, int | None, str, str, str]] = [
    ("bash", None, "4.2.46", "35.el7_9", "x86_64"),
    ("centos-release", None, "7", "9.2009.1.el7.centos", "x86_64"),
    ("openssh-server", None, "7.4p1", "23.el7_9", "x86_64"),
    ("glibc", None, "2.17", "326.el7_9", "x86_64"),
    ("tzdata", None, "2024a", "1.el7", "noarch"), ("shadow-utils", 2, "4.6", "5.el7", "x86_64")]


def _centos7(d: Path, t: Path) -> CorpusVM:
    boot_fs, root_fs, root = _uuid(0x701), _uuid(0x702), t / "root"
    release = "CentOS Linux release 7.9.2009 (Core)\n"
    _linux_tree(root, fstab=f"UUID={root_fs} / xfs defaults 0 0\n"
                            f"UUID={boot_fs} /boot ext4 defaults 1 2\n", files={
        "/etc/redhat-release": release, "/etc/centos-release": release,
        "/etc/sysconfig/network": "NETWORKING=yes\nHOSTNAME=centos7.corp\n"})
    (root / "boot").mkdir()
    write_rpm_bdb(root / "var/lib/rpm", CENTOS_PACKAGES)
    boot = _boot_tree(t, "3.10.0-1160.el7.x86_64")
    _disk(d / "centos7.img", 34 + XFS_MB, [Part(32, fs=("ext4", boot, boot_fs, "boot")),
                                           Part(None, fs=("xfs", root, root_fs, "root"))])
    pk = [_pkg(n, e or 0, v, r, a) for n, e, v, r, a in CENTOS_PACKAGES]
    return CorpusVM("centos7", ["centos7.img"], _expect(
        distro="centos", major=7, minor=9, product_name=release.strip(),
        hostname="centos7.corp", root="/dev/sda2",
        mountpoints={"/": "/dev/sda2", "/boot": "/dev/sda1"}, package_format="rpm",
        packages=pk))


OPENSUSE_RELEASE = ('NAME="openSUSE Leap"\nVERSION="15.5"\nID="opensuse-leap"\n'
                    'ID_LIKE="suse opensuse"\nVERSION_ID="15.5"\nPRETTY_NAME="openSUSE Leap 15.5"\n'
                    'ANSI_COLOR="0;32"\nCPE_NAME="cpe:/o:opensuse:leap:15.5"\n')


SUSE_PACKAGES: list[tuple[str, int | None, str, str, str]] = [
    ("aaa_base", None, "84.87+git20180409.04c9dae", "150300.10.12.1", "x86_64"),
    ("bash", None, "4.4", "150400.27.3.2", "x86_64"),
    ("glibc", None, "2.31", "150300.63.1", "x86_64"),
    ("openSUSE-release", None, "15.5", "lp155.286.1", "x86_64"),
    ("openssh-server", None, "8.4p1", "150300.3.37.1", "x86_64"),
    ("timezone", None, "2024a", "150000.75.28.1", "x86_64"),
    ("zypper", None, "1.14.64", "150400.3.32.1", "x86_64")]


def _opensuse(d: Path, t: Path) -> CorpusVM:
    """openSUSE Leap 15.5: os-release a link into /usr/lib, the rpm database in rpm's
    ndb format under /usr/lib/sysimage/rpm, and /var/lib/rpm a link to it, as Leap has."""
    fs, root = _uuid(0xF01), t / "root"
    _linux_tree(root, hostname="leap155", fstab=f"UUID={fs} / ext4 defaults 0 1\n",
                files={"/usr/lib/os-release": OPENSUSE_RELEASE})
    (root / "etc/os-release").symlink_to("../usr/lib/os-release")
    dbdir = root / "usr/lib/sysimage/rpm"
    dbdir.mkdir(parents=True)
    rpmdb.write_ndb(str(dbdir / "Packages.db"), SUSE_PACKAGES)
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/rpm").symlink_to("../../usr/lib/sysimage/rpm")
    _one_part(d, "opensuse", root, fs)
    pk = [_pkg(n, e or 0, v, r, a) for n, e, v, r, a in SUSE_PACKAGES]
    return CorpusVM("opensuse", ["opensuse.img"], _expect(
        distro="opensuse", major=15, minor=5, product_name="openSUSE Leap 15.5",
        hostname="leap155", root="/dev/sda1", package_format="rpm", packages=pk,
        package_management="zypper", osinfo="opensuse15.5"))


def _one_part(d: Path, name: str, tree: Path, fs_uuid: str, kind: str = "ext4",
              size_mb: int = 48) -> None:
    _disk(d / f"{name}.img", size_mb + 2, [Part(None, fs=(kind, tree, fs_uuid, "root"))])


def _arch(d: Path, t: Path) -> CorpusVM:
    fs, root = _uuid(0xA01), t / "root"
    _linux_tree(root, hostname="archie", fstab=f"UUID={fs} / ext4 rw,relatime 0 1\n", files={
        "/etc/os-release": 'NAME="Arch Linux"\nPRETTY_NAME="Arch Linux"\nID=arch\n'
                           'BUILD_ID=rolling\nANSI_COLOR="38;2;23;147;209"\n',
        "/etc/arch-release": ""})
    pk = _pacman(root, [("bash", "5.2.026-2"), ("glibc", "2.39-1"), ("linux", "6.8.9.arch1-1"),
                        ("openssh", "9.7p1-2"), ("zstd", "1:1.5.6-1")])
    _one_part(d, "arch", root, fs)
    return CorpusVM("arch", ["arch.img"], _expect(
        distro="archlinux", product_name="Arch Linux", hostname="archie", root="/dev/sda1",
        package_format="pacman", packages=pk))


def _debian8(d: Path, t: Path) -> CorpusVM:
    fs, root = _uuid(0x801), t / "root"
    _linux_tree(root, hostname="jessie", fstab=f"UUID={fs} / ext4 errors=remount-ro 0 1\n",
                files={"/etc/debian_version": "8.11\n"})
    pk = _deb_packages(root, [("base-files", "8+deb8u11", "install ok installed"),
                              ("bash", "4.3-11+deb8u2", "installed ok"),
                              ("libc6", "2.19-18+deb8u10", "install ok installed"),
                              ("exim4", "4.84.2-2+deb8u5", "deinstall ok config-files")], None)
    _one_part(d, "debian8", root, fs)
    return CorpusVM("debian8", ["debian8.img"], _expect(
        distro="debian", major=8, minor=11, product_name="8.11", hostname="jessie",
        root="/dev/sda1", package_format="deb", packages=pk))


DEBIAN12 = ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
            'VERSION_ID="12"\nVERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n')


DEB12_PACKAGES = [("base-files", "12.4+deb12u15", "install ok installed"),
                  ("bash", "5.2.15-2+b7", "install ok installed"),
                  ("vim-tiny", "2:9.0.1378-2+deb12u2", "install ok installed")]


def _debian12_point(d: Path, t: Path) -> CorpusVM:
    fs, root = _uuid(0x901), t / "root"
    _linux_tree(root, hostname="bookworm", fstab=f"UUID={fs} / ext4 errors=remount-ro 0 1\n",
                files={"/etc/os-release": DEBIAN12, "/etc/debian_version": "12.15\n"})
    pk = _deb_packages(root, DEB12_PACKAGES)
    _one_part(d, "debian12-point", root, fs)
    return CorpusVM("debian12-point", ["debian12-point.img"], _expect(
        distro="debian", major=12, minor=15, product_name="12.15",
        hostname="bookworm", root="/dev/sda1", package_format="deb", packages=pk))


def _alpine(root: Path, version: str, hostname: str, fstab: str) -> list[dict[str, Any]]:
    short = ".".join(version.split(".")[:2])
    _linux_tree(root, hostname=hostname, fstab=fstab, files={
        "/etc/os-release": f'NAME="Alpine Linux"\nID=alpine\nVERSION_ID={version}\n'
                           f'PRETTY_NAME="Alpine Linux v{short}"\n',
        "/etc/alpine-release": version + "\n"})
    return _apk(root, [("alpine-baselayout", "3.6.5-r0"), ("busybox", "1.36.1-r29"),
                       ("musl", "1.2.5-r0"), ("apk-tools", "2.14.4-r0")])


def _two_roots(d: Path, t: Path) -> CorpusVM:
    deb_fs, alp_fs = _uuid(0xB01), _uuid(0xB02)
    deb, alp = t / "deb", t / "alp"
    _linux_tree(deb, hostname="two-deb", fstab=f"UUID={deb_fs} / ext4 defaults 0 1\n",
                files={"/etc/os-release": DEBIAN12, "/etc/debian_version": "12.5\n"})
    dpk = _deb_packages(deb, DEB12_PACKAGES)
    apk = _alpine(alp, "3.20.3", "two-alpine", f"UUID={alp_fs} / ext4 defaults 0 1\n")
    _disk(d / "two-roots.img", 100, [Part(48, fs=("ext4", deb, deb_fs, "debian")),
                                     Part(None, fs=("ext4", alp, alp_fs, "alpine"))])
    first = _expect(distro="debian", major=12, minor=5,
                    product_name="12.5", hostname="two-deb",
                    root="/dev/sda1", package_format="deb", packages=dpk)
    second = _expect(distro="alpinelinux", major=3, minor=20, product_name="Alpine Linux v3.20",
                     hostname="two-alpine", root="/dev/sda2", package_format="apk", packages=apk)
    return CorpusVM("two-roots", ["two-roots.img"], first | {"roots": 2,
                                                             "all_roots": [first, second]})


def _mbr_extended(d: Path, t: Path) -> CorpusVM:
    boot_fs, root_fs, var_fs, home_fs = (_uuid(0xC01), _uuid(0xC02), _uuid(0xC03),
                                         _uuid(0xC04))
    root, var, home = t / "root", t / "var", t / "home"
    _linux_tree(root, hostname="focal-ext", fstab=(
        f"UUID={root_fs} / ext4 errors=remount-ro 0 1\nUUID={boot_fs} /boot ext4 defaults 0 2\n"
        f"UUID={var_fs} /var xfs defaults 0 2\n/dev/sda7 /home ext4 defaults 0 2\n"), files={
        "/etc/lsb-release": 'DISTRIB_ID=Ubuntu\nDISTRIB_RELEASE=20.04\nDISTRIB_CODENAME=focal\n'
                            'DISTRIB_DESCRIPTION="Ubuntu 20.04.6 LTS"\n'})
    for sub in ("boot", "var", "home"):
        (root / sub).mkdir()
    pk = _deb_packages(var.parent / "varroot", [
        ("base-files", "11ubuntu5.8", "install ok installed"),
        ("bash", "5.0-6ubuntu1.2", "install ok installed"),
        ("openssh-server", "1:8.2p1-4ubuntu0.11", "install ok installed")])
    shutil.move(str(var.parent / "varroot/var"), str(var))
    _write(home, "/carol/.profile", "# carol\n")
    boot = _boot_tree(t, "5.4.0-182-generic")
    _disk(d / "mbr-extended.img", 32 + 40 + XFS_MB + 32 + 8, [
        Part(32, fs=("ext4", boot, boot_fs, "boot")),
        Part(40, fs=("ext4", root, root_fs, "root")),
        Part(XFS_MB, fs=("xfs", var, var_fs, "var")),
        Part(None, fs=("ext4", home, home_fs, "home"))], extended_after=1)
    return CorpusVM("mbr-extended", ["mbr-extended.img"], _expect(
        distro="ubuntu", major=20, minor=4, product_name="Ubuntu 20.04.6 LTS",
        hostname="focal-ext", root="/dev/sda5",
        mountpoints={"/": "/dev/sda5", "/boot": "/dev/sda1", "/var": "/dev/sda6",
                     "/home": "/dev/sda7"}, package_format="deb", packages=pk))


def _whole_disk(d: Path, t: Path) -> CorpusVM:
    fs, root = _uuid(0xD01), t / "root"
    pk = _alpine(root, "3.19.1", "bare", f"UUID={fs} / ext4 defaults 0 1\n")
    _mkfs_host("ext4", root, d / "whole-disk.img", 48, fs, "root")
    return CorpusVM("whole-disk", ["whole-disk.img"], _expect(
        distro="alpinelinux", major=3, minor=19, product_name="Alpine Linux v3.19",
        hostname="bare", root="/dev/sda", package_format="apk", packages=pk))


def _vgclash(d: Path, t: Path, which: str, n: int) -> CorpusVM:
    fs, root = _uuid(0xE00 + n), t / f"root-{which}"
    host = f"clash-{which}"
    _linux_tree(root, hostname=host, fstab="/dev/mapper/vg0-root / ext4 defaults 0 1\n",
                files={"/etc/os-release": DEBIAN12, "/etc/debian_version": "12.7\n"})
    pk = _deb_packages(root, DEB12_PACKAGES[: n + 1])
    name = f"vgclash-{which}"
    _disk(d / f"{name}.img", 100, [Part(None, "8e")])

    def work(g: Any, devs: list[str]) -> None:
        only = _lvm(devs)
        _sh(g, f"lvm pvcreate -q {only} {devs[0]}1; lvm vgcreate -q {only} vg0 {devs[0]}1; "
               f"lvm lvcreate -q -y {only} -n root -L 64m vg0")
        _fill(g, "/dev/vg0/root", "ext4", fs, "root", root, t)
        _sh(g, f"lvm vgchange -q -an {only} vg0")

    return CorpusVM(name, [f"{name}.img"], _expect(
        distro="debian", major=12, minor=7, product_name="12.7",
        hostname=host, root="/dev/vg0/root", package_format="deb", packages=pk), work)


BUILDERS: list[Callable[[Path, Path], CorpusVM | list[CorpusVM]]] = [
    _btrfs_subvol, _mdraid, _luks_lvm, _lvm_luks, _windows, _centos7, _arch, _debian8,
    _debian12_point, _coreos, _two_roots, _mbr_extended, _whole_disk,
    lambda d, t: _vgclash(d, t, "a", 1), lambda d, t: _vgclash(d, t, "b", 2), _opensuse]
