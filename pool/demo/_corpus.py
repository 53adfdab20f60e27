"""The fidelity corpus: small disk images of the layouts inspection finds hard.

Each VM is written from a host tree whose facts we know, so ``expected.json``
is ground truth from what was written, never from inspecting. Host tools make
every filesystem they can without loop devices, device-mapper or mounts
(``mke2fs -d``, ``mkfs.btrfs --rootdir``, ``mkfs.xfs -p``, ``mkfs.vfat``,
``sfdisk``); what needs the kernel (md RAID, LUKS, LVM, btrfs subvolumes, NTFS
contents) is made in ONE appliance session with every such disk attached.
LUKS is formatted with ``cryptsetup luksFormat --type luks2 --pbkdf pbkdf2
--pbkdf-force-iterations 1000`` so opening it under TCG takes milliseconds.

The images are built once per generator version in the cache and copied
(sparse) into the requested folder.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import FleetError, SetupError
from guestpool._paths import cache_dir, writable_dir
from guestpool.appliance._hotplug import drive_label, kernel_disks
from guestpool.fleet._model import VM, Disk
from guestpool.inspectors import _rpmdb as rpmdb

from . import _regf as regf
from ._fleet import MiB, _copy_data, _finish, _mkfs, _run, _write

GENERATOR_VERSION = "7"  # 2: rpm indexes; 3, 5, 6: expected.json; 4: dpkg final blank;
#                           7: opensuse (ndb rpmdb)
Progress = Callable[[str], None] | None
#: what the appliance does to a VM's disks, given their appliance device names
Work = Callable[[Any, list[str]], None]

ELF = "/usr/bin/true"  # any host ELF binary: libguestfs reads a guest's arch from one


def _uuid(n: int) -> str:
    """A fixed, readable UUID per filesystem, so fstab and expected.json agree."""
    return f"c0de{n:04x}-0000-4000-8000-{n:012x}"


# -- guest trees -----------------------------------------------------------------

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


def _evr(version: str) -> tuple[int, str, str]:
    """(epoch, version, release) of a dpkg/pacman/apk version string, as libguestfs
    splits it: epoch before ':', release after the last '-'."""
    epoch = 0
    if ":" in version:
        e, version = version.split(":", 1)
        epoch = int(e)
    ver, _, rel = version.rpartition("-")
    return (epoch, ver, rel) if ver else (epoch, version, "")


def _pkg(name: str, epoch: int, version: str, release: str, arch: str) -> dict[str, Any]:
    return {"name": name, "epoch": epoch, "version": version, "release": release, "arch": arch}


def dpkg_status(packages: list[tuple[str, str, str]], arch: str | None = "amd64") -> str:
    """A dpkg status file: (name, version, Status value) per package. Like dpkg's own,
    every stanza ends with a blank line (libguestfs drops a last stanza without one)."""
    stanzas = []
    for name, version, status in packages:
        a = f"Architecture: {arch}\n" if arch else ""
        stanzas.append(f"Package: {name}\nStatus: {status}\n{a}Version: {version}\n\n")
    return "".join(stanzas)


def _deb_packages(root: Path, packages: list[tuple[str, str, str]],
                  arch: str | None = "amd64") -> list[dict[str, Any]]:
    _write(root, "/var/lib/dpkg/status", dpkg_status(packages, arch))
    return [_pkg(n, *_evr(v), arch or "") for n, v, s in packages
            if "installed" in s.split()]


#: rpm 4.16+ sqlite index tables; rpm opening a database read-only (as libguestfs
#: does) fails with "attempt to write a readonly database" when one is missing
RPM_INDEXES = ("Name", "Basenames", "Group", "Requirename", "Providename", "Conflictname",
               "Obsoletename", "Triggername", "Dirnames", "Installtid", "Sigmd5", "Sha1header",
               "Filetriggername", "Transfiletriggername", "Recommendname", "Suggestname",
               "Supplementname", "Enhancename")


def add_rpm_indexes(path: Path) -> None:
    """Give an rpmdb.sqlite written by ``_rpmdb.write_sqlite`` the index tables real
    rpm expects (Name filled in, the rest empty), so librpm reads it read-only."""
    con = sqlite3.connect(path)
    try:
        for table in RPM_INDEXES:
            keytype = "BLOB" if table in ("Installtid", "Sigmd5", "Sha1header") else "TEXT"
            con.execute(f"CREATE TABLE '{table}' (key '{keytype}' NOT NULL, hnum INTEGER NOT "
                        "NULL, idx INTEGER NOT NULL, FOREIGN KEY (hnum) REFERENCES "
                        "'Packages'(hnum))")
            con.execute(f"CREATE INDEX '{table}_key_idx' ON '{table}'(key ASC)")
        rows = con.execute("SELECT hnum, blob FROM Packages").fetchall()
        con.executemany("INSERT INTO Name (key, hnum, idx) VALUES (?, ?, 0)",
                        [((rpmdb.parse_header(blob) or {}).get("name", ""), hnum)
                         for hnum, blob in rows])
        con.commit()
    finally:
        con.close()


def _rpm_sqlite(root: Path, packages: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    (root / "var/lib/rpm").mkdir(parents=True, exist_ok=True)
    db = root / "var/lib/rpm/rpmdb.sqlite"
    rpmdb.write_sqlite(str(db), [(n, v, r, "x86_64") for n, v, r in packages])
    add_rpm_indexes(db)
    return [_pkg(n, 0, v, r, "x86_64") for n, v, r in packages]


def bdb_dump(records: dict[int, bytes]) -> str:
    """``db_load`` input for an rpm ``Packages`` hash database: uint32 (host order,
    little-endian here) header numbers as keys; key 0 holds the next free number."""
    lines = ["VERSION=3", "format=bytevalue", "type=hash", "db_pagesize=4096", "HEADER=END"]
    rows = {0: (max(records) + 1).to_bytes(4, "little"), **records}
    for key, value in rows.items():
        lines += [" " + key.to_bytes(4, "little").hex(), " " + value.hex()]
    return "\n".join([*lines, "DATA=END"]) + "\n"


def write_rpm_bdb(dbdir: Path, packages: list[tuple[str, int | None, str, str, str]]) -> None:
    """A Berkeley DB rpm database (CentOS/RHEL 7): ``Packages`` written by db_load."""
    if shutil.which("db_load") is None:
        raise SetupError("the corpus needs db_load: run `bash pool/bootstrap.sh` (db5.3-util)")
    dbdir.mkdir(parents=True, exist_ok=True)
    records = {i: rpmdb.build_header(n, v, r, a, e)
               for i, (n, e, v, r, a) in enumerate(packages, 1)}
    r = subprocess.run(["db_load", str(dbdir / "Packages")], input=bdb_dump(records),
                       capture_output=True, text=True)
    if r.returncode:
        raise SetupError(f"db_load failed: {r.stderr.strip()[:300]}")


def pacman_desc(name: str, version: str, arch: str = "x86_64") -> str:
    return (f"%NAME%\n{name}\n\n%VERSION%\n{version}\n\n%BASE%\n{name}\n\n"
            f"%DESC%\n{name} package\n\n%ARCH%\n{arch}\n\n%BUILDDATE%\n1700000000\n\n"
            f"%INSTALLDATE%\n1700000001\n\n%SIZE%\n1024\n\n")


def _pacman(root: Path, packages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    local = "/var/lib/pacman/local"
    _write(root, f"{local}/ALPM_DB_VERSION", "9\n")
    for name, version in packages:
        _write(root, f"{local}/{name}-{version}/desc", pacman_desc(name, version))
        _write(root, f"{local}/{name}-{version}/files", f"%FILES%\nusr/share/doc/{name}/\n\n")
    return [_pkg(n, *_evr(v), "x86_64") for n, v in packages]


def _apk(root: Path, packages: list[tuple[str, str]]) -> list[dict[str, Any]]:
    recs = [f"C:Q1corpus=\nP:{n}\nV:{v}\nA:x86_64\nS:1000\nI:2000\nT:{n}\no:{n}\n"
            for n, v in packages]
    _write(root, "/lib/apk/db/installed", "\n".join(recs) + "\n")
    # libguestfs splits an apk version at "-r": 1.36.1-r29 is version 1.36.1, release 29
    split = [(n, *v.rsplit("-r", 1)) for n, v in packages]
    return [_pkg(n, 0, ver, rel, "x86_64") for n, ver, rel in split]


# -- filesystems and disks ----------------------------------------------------------

def _protofile(tree: Path) -> str:
    """An mkfs.xfs protofile that copies ``tree`` (files, dirs, symlinks; owned by root)."""
    out = ["/dev/null", "0 0", "d--755 0 0"]

    def walk(d: Path, depth: int) -> None:
        for p in sorted(d.iterdir()):
            ind = " " * depth
            mode = f"{p.lstat().st_mode & 0o777:03o}"
            if p.is_symlink():
                out.append(f"{ind}{p.name} l--{mode} 0 0 {os.readlink(p)}")
            elif p.is_dir():
                out.append(f"{ind}{p.name} d--{mode} 0 0")
                walk(p, depth + 1)
                out.append(f"{ind}$")
            else:
                out.append(f"{ind}{p.name} ---{mode} 0 0 {p}")
    walk(tree, 1)
    return "\n".join([*out, "$", ""])


XFS_MB = 300  # xfsprogs 5.19+ refuses smaller filesystems


def _mkfs_host(kind: str, tree: Path, out: Path, size_mb: int, fs_uuid: str, label: str
               ) -> None:
    """A filesystem image of ``tree`` made by host tools alone."""
    if kind in ("ext4", "btrfs"):
        _mkfs(kind, tree, out, size_mb, fs_uuid, label)
        return
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    if kind == "xfs":
        proto = out.with_suffix(".proto")
        proto.write_text(_protofile(tree))
        _run(["mkfs.xfs", "-q", "-f", "-m", f"uuid={fs_uuid}", "-L", label, "-p", str(proto),
              str(out)])
        proto.unlink()
    elif kind == "vfat":
        _run(["mkfs.vfat", "-n", label, "-i", fs_uuid.replace("-", "")[:8], str(out)])
    else:
        raise ValueError(kind)


@dataclass
class Part:
    """One partition: ``size_mb`` (None: the rest), sfdisk type, and the host-made
    filesystem it holds (if any): (kind, tree, uuid, label)."""

    size_mb: int | None
    type: str = "83"
    fs: tuple[str, Path, str, str] | None = None
    name: str | None = None
    bootable: bool = False


def _disk(out: Path, size_mb: int, parts: list[Part], label: str = "dos",
          label_id: str | None = None, extended_after: int | None = None) -> None:
    """A partitioned raw disk whose host-made filesystems are written in place.
    With ``extended_after`` = n, partitions after the n-th are logical ones."""
    out.unlink(missing_ok=True)
    with open(out, "wb") as f:
        f.truncate(size_mb * MiB)
    lines = [f"label: {label}"] + ([f"label-id: {label_id}"] if label_id else [])
    number = 0
    for i, p in enumerate(parts):
        if extended_after is not None and i == extended_after:
            lines.append(f"{out}{i + 1} : type=5")
            number = 4
        number += 1
        fields = [f"size={p.size_mb}MiB" if p.size_mb else "", f"type={p.type}",
                  f'name="{p.name}"' if p.name else "", "bootable" if p.bootable else ""]
        lines.append(f"{out}{number} : " + ", ".join(x for x in fields if x))
    r = subprocess.run(["sfdisk", "-q", str(out)], input="\n".join(lines) + "\n",
                       capture_output=True, text=True)
    if r.returncode:
        raise SetupError(f"sfdisk failed: {r.stderr.strip()[:300]}")
    table = json.loads(subprocess.run(["sfdisk", "--json", str(out)], capture_output=True,
                                      text=True, check=True).stdout)["partitiontable"]
    placed = [p for p in table["partitions"] if p.get("type") not in ("5", "f")]
    with tempfile.TemporaryDirectory(prefix="gp-corpus-fs-") as tmp:
        fd = os.open(out, os.O_WRONLY)
        try:
            for part, entry in zip(parts, placed, strict=True):
                if part.fs is None:
                    continue
                kind, tree, fs_uuid, fs_label = part.fs
                image = Path(tmp) / "fs"
                _mkfs_host(kind, tree, image, entry["size"] * 512 // MiB, fs_uuid, fs_label)
                _copy_data(image, fd, entry["start"] * 512)
                image.unlink()
        finally:
            os.close(fd)


def _tar(tree: Path, out: Path) -> Path:
    """A tarball of ``tree`` owned by root, for ``tar_in`` into an appliance mount."""
    def owner(t: tarfile.TarInfo) -> tarfile.TarInfo:
        t.uid = t.gid = 0
        t.uname = t.gname = "root"
        return t
    with tarfile.open(out, "w") as tf:
        for p in sorted(tree.iterdir()):
            tf.add(p, arcname=p.name, filter=owner)
    return out


# -- appliance steps ------------------------------------------------------------

#: API disk name -> the kernel's, per appliance handle (see _kernel_names)
_KERNEL_NAMES: dict[int, dict[str, str]] = {}


def _sh(g: Any, script: str) -> str:
    """Run a shell script in the appliance (``debug sh``); fails on the first error.

    The script names disks as the API does (``/dev/sda`` = the first drive added);
    the shell sees the kernel's names, which follow the order its SCSI scan
    finished in, not the order the drives were added. So each API disk name is
    replaced by the kernel's before the script runs."""
    names = _KERNEL_NAMES.get(id(g), {})
    script = re.sub(r"/dev/sd[a-z]+", lambda m: names.get(m.group(0), m.group(0)), script)
    return str(g.debug("sh", ["set -e; " + script]))


def _kernel_names(g: Any, count: int, api: list[str]) -> dict[str, str]:
    """The kernel's name of each API disk, through the udev links of the labels."""
    try:
        kernel = kernel_disks(g, [drive_label(i, "c") for i in range(count)])
    except ValueError as e:
        raise SetupError(f"corpus: {e}") from None
    return dict(zip(api, kernel, strict=True))


def _lvm(disks: list[str]) -> str:
    """An lvm --config that sees only ``disks``: two VMs of the corpus share a VG name."""
    accept = ", ".join(f'"a|^{d}|"' for d in disks)
    return f"--config 'devices {{ filter=[{accept}, \"r|.*|\"] }}'"


def _fill(g: Any, dev: str, kind: str, fs_uuid: str, label: str, tree: Path,
          tmp: Path, options: str = "") -> None:
    """Make a filesystem on an appliance device and copy ``tree`` into it."""
    if kind == "ext4":
        _sh(g, f"mke2fs -q -F -t ext4 -U {fs_uuid} -L {label} {dev}")
    elif kind == "ntfs":
        _sh(g, f"mkntfs -q -F -Q -L {label} {dev}")
    else:
        raise ValueError(kind)
    if options:
        g.mount_options(options, dev, "/")
    else:
        g.mount(dev, "/")
    g.tar_in(str(_tar(tree, tmp / f"{label}.tar")), "/")
    g.umount_all()


def _luks_format(g: Any, dev: str, key: str, luks_uuid: str) -> str:
    """LUKS2 with a cheap pbkdf2 (fast to open under TCG), opened as luks-UUID."""
    _sh(g, f"printf %s '{key}' | cryptsetup luksFormat -q --type luks2 --pbkdf pbkdf2 "
           f"--pbkdf-force-iterations 1000 --uuid {luks_uuid} --key-file - {dev}; "
           f"printf %s '{key}' | cryptsetup open --key-file - {dev} luks-{luks_uuid}")
    return f"/dev/mapper/luks-{luks_uuid}"


# -- the corpus VMs -------------------------------------------------------------

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


WIN_DISK_ID = 0x5EED0C0D
WIN_APPS = [("{7C5A40EF-A0FB-4BFC-874A-C0F2E0B9FA8E}", "Microsoft Visual C++ 2019 X64 Runtime",
             "14.29.30133", "Microsoft Corporation", ""),
            ("{23170F69-40C1-2702-2301-000001000000}", "7-Zip 23.01 (x64 edition)", "23.01.00.0",
             "Igor Pavlov", "C:\\Program Files\\7-Zip\\"),
            ("{AC76BA86-7AD7-1033-7B44-AC0F074E4100}", "Adobe Acrobat Reader DC", "23.008.20470",
             "Adobe", "C:\\Program Files\\Adobe\\Reader\\")]


def pe_executable() -> bytes:
    """The smallest file `file` calls "PE32+ executable (console) x86-64"."""
    b = bytearray(1024)
    b[0:2] = b"MZ"
    b[0x3C:0x40] = (0x80).to_bytes(4, "little")
    b[0x80:0x84] = b"PE\0\0"
    b[0x84:0x98] = (0x8664).to_bytes(2, "little") + bytes(14) + (240).to_bytes(2, "little") \
        + (0x22).to_bytes(2, "little")
    b[0x98:0x9A] = (0x20B).to_bytes(2, "little")
    b[0x98 + 68:0x98 + 70] = (3).to_bytes(2, "little")
    return bytes(b)


def windows_hives(c_offset: int) -> tuple[bytes, bytes]:
    """SOFTWARE and SYSTEM hives of a Windows Server 2019 whose C: starts at byte
    ``c_offset`` of the disk with signature WIN_DISK_ID."""
    K = regf.Key
    current = K("CurrentVersion", values={
        "ProductName": "Windows Server 2019 Standard", "CurrentMajorVersionNumber": 10,
        "CurrentMinorVersionNumber": 0, "CurrentVersion": "6.3", "CurrentBuildNumber": "17763",
        "EditionID": "ServerStandard", "InstallationType": "Server",
        "SystemRoot": "C:\\Windows", "PathName": "C:\\Windows"})
    apps = [K(guid, values={"DisplayName": name, "DisplayVersion": ver, "Publisher": pub,
                            "InstallLocation": loc,
                            "UninstallString": regf.Expand("%SystemRoot%\\uninst.exe")})
            for guid, name, ver, pub, loc in WIN_APPS]
    software = regf.hive(K("ROOT", children=[K("Microsoft", children=[
        K("Windows NT", children=[current]),
        K("Windows", children=[K("CurrentVersion", children=[K("Uninstall", children=apps)])])])]))
    mapping = WIN_DISK_ID.to_bytes(4, "little") + c_offset.to_bytes(8, "little")
    cs = K("ControlSet001", children=[
        K("Control", children=[K("ComputerName", children=[
            K("ComputerName", values={"ComputerName": "WIN-CORPUS01"})])]),
        K("Services", children=[K("Tcpip", children=[
            K("Parameters", values={"Hostname": "win-corpus01", "Domain": "",
                                    "SearchList": ["corp.example"]})])])])
    system = regf.hive(K("ROOT", children=[
        K("Select", values={"Current": 1, "Default": 1, "LastKnownGood": 1}), cs,
        K("MountedDevices", values={"\\DosDevices\\C:": mapping})]))
    return software, system


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


# -- building ------------------------------------------------------------------

def _run_appliance(d: Path, vms: list[CorpusVM], progress: Progress) -> None:
    """Every VM's appliance work in one session, all their disks attached."""
    from guestpool.appliance._accel import resolve_accel

    try:
        import guestfs
    except ImportError as e:
        raise SetupError("libguestfs Python bindings missing: run `bash pool/bootstrap.sh`") from e
    busy = [vm for vm in vms if vm.work is not None]
    if progress:
        progress(f"corpus: one appliance session for {len(busy)} VMs (a minute under TCG)")
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if resolve_accel().accel == "tcg":
        g.set_backend_settings(["force_tcg"])
    g.set_memsize(768)
    order: list[str] = []
    for vm in busy:
        for disk in vm.disks:
            g.add_drive_opts(str(d / disk), format="raw", label=drive_label(len(order), "c"))
            order.append(disk)
    g.launch()
    try:
        devices = g.list_devices()
        where = dict(zip(order, devices, strict=True))
        _KERNEL_NAMES[id(g)] = _kernel_names(g, len(order), devices)
        for vm in busy:
            assert vm.work is not None
            started = time.monotonic()
            try:
                vm.work(g, [where[x] for x in vm.disks])
            except RuntimeError as e:
                raise SetupError(f"corpus VM {vm.name}: {e}") from e
            if progress:
                progress(f"corpus: {vm.name} in the appliance, "
                         f"{time.monotonic() - started:.1f} s")
        g.sync()
    finally:
        _KERNEL_NAMES.pop(id(g), None)
        g.shutdown()
        g.close()


def _build(d: Path, progress: Progress) -> list[CorpusVM]:
    missing = [t for t in ("mke2fs", "mkfs.btrfs", "mkfs.xfs", "mkfs.vfat", "sfdisk",
                           "qemu-img", "db_load") if shutil.which(t) is None]
    if missing:
        raise SetupError(f"the corpus needs {', '.join(missing)}: run `bash pool/bootstrap.sh`")
    vms: list[CorpusVM] = []
    with tempfile.TemporaryDirectory(prefix="gp-corpus-") as tmp_s:
        for i, build in enumerate(BUILDERS):
            t = Path(tmp_s) / str(i)
            t.mkdir()
            made = build(d, t)
            vms += made if isinstance(made, list) else [made]
        _run_appliance(d, vms, progress)
    for vm in vms:
        if vm.qcow2:
            vm.disks = [Path(_finish(d / x, "qcow2")).name for x in vm.disks]
    for x in d.glob("*.img"):
        _run(["fallocate", "--dig-holes", str(x)])
    return vms


def _manifest_entry(vm: CorpusVM) -> dict[str, Any]:
    fmt = "qcow2" if vm.qcow2 else "raw"
    entry = VM(vm.name, tuple(Disk(x, fmt) for x in vm.disks), tags=("corpus",),
               trust_group="corpus").to_dict()
    if vm.keys:
        entry["keys"] = vm.keys  # paths relative to the manifest's folder, like disks
    return entry


def _write_cache(d: Path, progress: Progress) -> None:
    vms = _build(d, progress)
    (d / "corpus.json").write_text(json.dumps({"vms": [_manifest_entry(v) for v in vms]},
                                              indent=1))
    (d / "expected.json").write_text(json.dumps({v.name: v.expected for v in vms}, indent=1))


def build_corpus(outdir: Path, progress: Progress = None) -> Path:
    """Build (or reuse) the fidelity corpus in ``outdir``; return ``outdir/corpus.json``.

    The images are made once per generator version in the cache (one appliance
    session) and copied sparsely into ``outdir``; a stamp makes a second call free.
    """
    outdir = outdir.resolve()
    try:
        writable_dir(outdir)
    except OSError as e:
        raise FleetError(f"cannot write to {outdir}: {e.strerror}") from None
    manifest, stamp = outdir / "corpus.json", outdir / ".corpus-stamp"
    if stamp.exists() and stamp.read_text() == GENERATOR_VERSION and manifest.exists():
        return manifest
    cached = cache_dir() / "corpus" / f"v{GENERATOR_VERSION}"
    if not (cached / ".done").exists():
        shutil.rmtree(cached, ignore_errors=True)
        cached.mkdir(parents=True)
        started = time.monotonic()
        _write_cache(cached, progress)
        (cached / ".done").write_text("")
        if progress:
            progress(f"corpus: built in {time.monotonic() - started:.0f} s ({cached})")
    if outdir != cached:
        for src in sorted(cached.iterdir()):
            if src.name.startswith("."):
                continue
            _run(["cp", "--sparse=always", "--reflink=auto", str(src), str(outdir / src.name)])
    stamp.write_text(GENERATOR_VERSION)
    return manifest


def corpus_vms(manifest: Path) -> list[VM]:
    """The corpus's VMs as the fleet loader reads them (keys are not part of VM yet)."""
    data = json.loads(manifest.read_text())
    return [VM.from_dict(e, manifest.parent) for e in data["vms"]]

