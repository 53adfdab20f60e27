"""A generated demo fleet: real disk images with the variety inspection must handle.

Images are built with host tools (``mke2fs -d``, ``mkfs.btrfs --rootdir``,
``sfdisk``, ``qemu-img``), not by booting an appliance per VM. The one thing
host tools cannot make without touching the host's device mapper, an LVM
physical volume, is made once by an appliance and reused as a header.

Kinds: debian (raw, clones of one template sharing its filesystem UUID),
fedora (qcow2, separate /boot, btrfs root), alpine (qcow2, apk db), lvm
(root on a logical volume), twodisk (root + data disk mounted via fstab),
data (no operating system).

Hard kinds (``HARD_KINDS``, see ``_hard``): layouts of real fleets taken
from the fidelity corpus (pool/demo/_corpus.py), each VM a qcow2 overlay on a
template copied once into the fleet folder. The first ``QUICKSTART`` VMs (what
``guestpool quickstart`` scans) are easy kinds only, exactly as before hard
kinds existed, so the quickstart stays fast and needs no corpus. Right after
them come the hard kinds once each (a fleet of 31 holds every kind), then every
``HARD_EVERY``-th VM is a hard kind in turn: about 10 % of a large fleet (104
of 1,000). The corpus is built (one appliance, cached) only for a fleet with
hard kinds.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from guestpool._cache import build_lock, write_atomically
from guestpool._errors import FleetError, SetupError
from guestpool._paths import cache_dir, writable_dir
from guestpool.fleet._model import VM, Disk, write_manifest
from guestpool.inspectors import _rpmdb as rpmdb
from guestpool.inspectors._osfacts import distro_of_os_release_id

from ._hard import build_hard_vm, prepare_templates
from ._images import MiB, _assemble, _finish, _mkfs, _need_tools, _write
from ._kinds import HARD_KINDS, Spec, plan

GENERATOR_VERSION = "8"  # 7: fedora has /usr/bin/dnf; 8: hard kinds after the first 24


TEMPLATE_UUID = "5e1ec7ed-0000-4000-8000-000000000001"  # shared by every debian clone


ROOT_MB = 64


DEBIAN_PACKAGES = [
    ("base-files", "12.4+deb12u5"), ("bash", "5.2.15-2+b2"), ("coreutils", "9.1-1"),
    ("dpkg", "1.21.22"), ("libc6", "2.36-9+deb12u4"), ("openssh-server", "1:9.2p1-2+deb12u2"),
    ("systemd", "252.22-1~deb12u1"), ("sudo", "1.9.13p3-1+deb12u1"), ("curl", "7.88.1-10+deb12u5"),
    ("openssl", "3.0.11-1~deb12u2"), ("libssl3", "3.0.11-1~deb12u2"), ("nginx", "1.22.1-9"),
    ("cron", "3.0pl1-162"), ("apt", "2.6.1"), ("tzdata", "2024a-0+deb12u1"),
    ("vim-tiny", "2:9.0.1378-2"),
]


#: dpkg's Source field where it differs from the package name; "name (version)"
#: when the binary was rebuilt without a source change (a binNMU: bash's +b2)
DEBIAN_SOURCES = {"bash": "bash (5.2.15-2)", "libc6": "glibc", "openssh-server": "openssh",
                  "libssl3": "openssl", "vim-tiny": "vim"}


#: planted versions, each in about half the VMs: one upload before a security
#: fix (the tests' OSV fixture and README name the advisories)
DEBIAN_VULNERABLE = {"openssl": "3.0.11-1~deb12u1", "libssl3": "3.0.11-1~deb12u1",
                     "openssh-server": "1:9.2p1-2+deb12u1"}


ALPINE_VULNERABLE = {"openssh-server": "9.7_p1-r3"}


FEDORA_PACKAGES = [
    ("bash", "5.2.26", "3.fc40"), ("coreutils", "9.4", "6.fc40"), ("glibc", "2.39", "8.fc40"),
    ("openssh-server", "9.6p1", "1.fc40.4"), ("systemd", "255.4", "1.fc40"),
    ("sudo", "1.9.15", "2.p5.fc40"), ("kernel-core", "6.8.5", "301.fc40"),
]


ALPINE_PACKAGES = [
    ("alpine-baselayout", "3.6.5-r0"), ("busybox", "1.36.1-r29"), ("musl", "1.2.5-r0"),
    ("openssh-server", "9.7_p1-r4"), ("apk-tools", "2.14.4-r0"), ("ca-certificates", "20240226-r0"),
]


#: apk's origin (the aport a package was built from), written for every package
ALPINE_ORIGINS = {"openssh-server": "openssh"}


OS_RELEASE = {
    "debian": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\n'
              'VERSION_ID="12"\nVERSION="12 (bookworm)"\nID=debian\n',
    "fedora": 'NAME="Fedora Linux"\nVERSION="40 (Server Edition)"\nID=fedora\nVERSION_ID=40\n'
              'PRETTY_NAME="Fedora Linux 40 (Server Edition)"\n',
    "alpine": 'NAME="Alpine Linux"\nID=alpine\nVERSION_ID=3.20.1\n'
              'PRETTY_NAME="Alpine Linux v3.20"\n',
}


DISTRO = {"debian": "debian", "lvm": "debian", "twodisk": "debian", "fedora": "fedora",
          "alpine": "alpine"}


PKG = {"debian": ("deb", "apt"), "fedora": ("rpm", "dnf"), "alpine": ("apk", "apk")}


def _users(rng: random.Random, spec: Spec) -> list[dict[str, Any]]:
    names = ["alice", "bob", "carol", "dave", "erin", "frank"]
    users = [{"name": n, "uid": 1000 + i} for i, n in enumerate(rng.sample(names, 2))]
    for u in users:
        u["keys"] = [f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{spec.index:08d}{u['uid']:05d}"
                     f"{'x' * 28} {u['name']}@{spec.name}"]
    return users


def _linux_tree(root: Path, spec: Spec, distro: str, fstab: str) -> dict[str, Any]:
    rng = random.Random(spec.seed)
    hostname = f"{spec.name}.demo.example"
    users = _users(rng, spec)
    _write(root, "/etc/os-release", OS_RELEASE[distro])
    _write(root, "/etc/hostname", hostname + "\n")
    _write(root, "/etc/fstab", fstab)
    passwd = ["root:x:0:0:root:/root:/bin/sh", "daemon:x:1:1:daemon:/usr/sbin:/sbin/nologin"]
    shadow = ["root:$6$demo$hash:19000:0:99999:7:::", "daemon:*:19000:0:99999:7:::"]
    for u in users:
        passwd.append(f"{u['name']}:x:{u['uid']}:{u['uid']}::/home/{u['name']}:/bin/sh")
        shadow.append(f"{u['name']}:$6$demo$hash:19000:0:99999:7:::")
        _write(root, f"/home/{u['name']}/.ssh/authorized_keys", "\n".join(u["keys"]) + "\n", 0o600)
    if spec.index % 7 == 3:  # a planted second uid-0 account
        passwd.append("toor:x:0:0::/root:/bin/sh")
        shadow.append("toor::19000:0:99999:7:::")
    _write(root, "/etc/passwd", "\n".join(passwd) + "\n")
    _write(root, "/etc/shadow", "\n".join(shadow) + "\n", 0o640)
    _write(root, "/etc/sudoers", f"root ALL=(ALL:ALL) ALL\n{users[0]['name']} ALL=(ALL) ALL\n",
           0o440)
    _write(root, "/etc/ssh/sshd_config",
           f"Port 22\nPermitRootLogin {'yes' if spec.index % 5 == 0 else 'no'}\n")
    _write(root, "/etc/crontab", f"17 * * * * root /usr/local/bin/report-{spec.index}\n")
    planted = spec.index % 4 == 1  # a hardening finding: world-writable file, SUID binary
    _write(root, "/etc/guestpool-demo", json.dumps({"vm": spec.name, "seed": spec.seed}) + "\n",
           0o666 if planted else 0o644)
    elf = Path("/usr/bin/true").read_bytes()
    _write(root, "/usr/bin/sh", elf, 0o755)
    if distro == "fedora":  # libguestfs says dnf (not yum) only when it is there
        _write(root, "/usr/bin/dnf", "#!/usr/bin/python3\n", 0o755)
    if planted:
        _write(root, "/usr/local/bin/helper", elf, 0o4755)
    (root / "bin").symlink_to("usr/bin")
    units = ["ssh.service", "cron.service"] + (["nginx.service"] if spec.index % 2 else [])
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    for unit in units:
        (wants / unit).symlink_to(f"/lib/systemd/system/{unit}")
    files = {p: hashlib.sha256((root / p.lstrip("/")).read_bytes()).hexdigest()
             for p in ("/etc/passwd", "/etc/ssh/sshd_config", "/etc/guestpool-demo")}
    packages = _packages(root, distro, rng)
    fmt, mgr = PKG[distro]
    return {
        "os": {"type": "linux", "distro": distro_of_os_release_id(distro) or distro,
               "version": _version_id(distro),
               "hostname": hostname, "arch": "x86_64", "package_format": fmt,
               "package_management": mgr},
        "users": [{"name": u["name"], "uid": u["uid"], "keys": len(u["keys"])} for u in users],
        "extra_uid0": ["toor"] if spec.index % 7 == 3 else [],
        "packages": packages, "files": files,
        "services": {"multi-user.target": sorted(units)},
        "cron": [f"17 * * * * root /usr/local/bin/report-{spec.index}"],
        "world_writable": ["/etc/guestpool-demo"] if planted else [],
        "setid": ["/usr/local/bin/helper"] if planted else [],
    }


def _version_id(distro: str) -> str:
    line = next(ln for ln in OS_RELEASE[distro].splitlines() if ln.startswith("VERSION_ID="))
    return line.split("=", 1)[1].strip('"')


def _packages(root: Path, distro: str, rng: random.Random) -> dict[str, str]:
    out: dict[str, str] = {}
    if distro == "debian":
        stanzas = []
        nginx_fixed = rng.random() < 0.5
        planted = {src for src in ("openssl", "openssh") if rng.random() < 0.5}
        for name, ver in DEBIAN_PACKAGES:
            if name == "nginx" and nginx_fixed:
                ver = "1.22.1-9+deb12u1"
            if name in DEBIAN_VULNERABLE and DEBIAN_SOURCES.get(name, name) in planted:
                ver = DEBIAN_VULNERABLE[name]
            out[name] = ver
            source = f"Source: {DEBIAN_SOURCES[name]}\n" if name in DEBIAN_SOURCES else ""
            stanzas.append(f"Package: {name}\nStatus: install ok installed\nPriority: optional\n"
                           f"Architecture: amd64\n{source}Version: {ver}\nDescription: {name}\n")
        _write(root, "/var/lib/dpkg/status", "\n".join(stanzas))
    elif distro == "alpine":
        recs = []
        vulnerable = rng.random() < 0.5
        for name, ver in ALPINE_PACKAGES:
            if vulnerable and name in ALPINE_VULNERABLE:
                ver = ALPINE_VULNERABLE[name]
            out[name] = ver
            recs.append(f"C:Q1demo=\nP:{name}\nV:{ver}\nA:x86_64\nS:1000\nI:2000\nT:{name}\n"
                        f"o:{ALPINE_ORIGINS.get(name, name)}\n")
        _write(root, "/lib/apk/db/installed", "\n".join(recs) + "\n")
        _write(root, "/etc/alpine-release", "3.20.1\n")
    else:
        for name, ver, rel in FEDORA_PACKAGES:
            out[name] = f"{ver}-{rel}"
        (root / "var/lib/rpm").mkdir(parents=True)
        rpmdb.write_sqlite(str(root / "var/lib/rpm/rpmdb.sqlite"),
                           [(n, v, r, "x86_64") for n, v, r in FEDORA_PACKAGES])
    return out


def build_vm(spec: Spec, outdir: Path, lvm_header: tuple[str, int] | None) -> dict[str, Any]:
    """Build one VM's disks; return its manifest entry and ground truth."""
    with tempfile.TemporaryDirectory(prefix="gp-demo-") as tmp_s:
        tmp = Path(tmp_s)
        stage = tmp / "root"
        stage.mkdir()
        root_uuid = TEMPLATE_UUID if spec.kind == "debian" else str(uuid.UUID(int=spec.seed))
        disk0 = outdir / f"{spec.name}.img"
        truth: dict[str, Any] = {"kind": spec.kind}
        disks: list[Disk] = []
        fs_truth: list[dict[str, str]] = []
        if spec.kind == "data":
            _write(stage, "/backups/README", f"data disk of {spec.name}\n")
            _mkfs("ext4", stage, tmp / "fs", 32, root_uuid, "data")
            _assemble(disk0, 34, [(MiB, tmp / "fs")], None, "start=2048, type=83\n")
            disks.append(Disk(str(_finish(disk0, "qcow2")), "qcow2"))
            truth["os"] = {"type": "none"}
            fs_truth.append({"type": "ext4", "uuid": root_uuid, "label": "data"})
        elif spec.kind == "fedora":
            boot_uuid = str(uuid.UUID(int=spec.seed + 10**9))
            fstab = (f"UUID={root_uuid} / btrfs defaults 0 0\n"
                     f"UUID={boot_uuid} /boot ext4 defaults 1 2\n")
            truth.update(_linux_tree(stage, spec, "fedora", fstab))
            (stage / "boot").mkdir()
            bstage = tmp / "boot"
            _write(bstage, "/vmlinuz-6.8.5-301.fc40.x86_64", b"\0" * 512)
            _mkfs("ext4", bstage, tmp / "bootfs", 32, boot_uuid, "boot")
            _mkfs("btrfs", stage, tmp / "fs", 128, root_uuid, "fedora")
            _assemble(disk0, 162, [(MiB, tmp / "bootfs"), (33 * MiB, tmp / "fs")], None,
                      "start=2048, size=65536, type=83\nstart=67584, type=83\n")
            disks.append(Disk(str(_finish(disk0, "qcow2")), "qcow2"))
            truth["os"]["mountpoints"] = {"/": "p2", "/boot": "p1"}
            fs_truth += [{"type": "ext4", "uuid": boot_uuid, "label": "boot"},
                         {"type": "btrfs", "uuid": root_uuid, "label": "fedora"}]
        elif spec.kind == "lvm":
            assert lvm_header is not None
            fstab = "/dev/mapper/vg0-root / ext4 defaults 0 1\n"
            truth.update(_linux_tree(stage, spec, "debian", fstab))
            _mkfs("ext4", stage, tmp / "fs", ROOT_MB, root_uuid, "root")
            header, offset = Path(lvm_header[0]), lvm_header[1]
            _assemble(disk0, LVM_DISK_MB, [(offset, tmp / "fs")], (header, 0), None)
            disks.append(Disk(str(_finish(disk0, "raw")), "raw"))
            fs_truth.append({"type": "ext4", "uuid": root_uuid, "label": "root"})
        else:
            distro = "alpine" if spec.kind == "alpine" else "debian"
            fstab = f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
            data_uuid = str(uuid.UUID(int=spec.seed + 2 * 10**9))
            if spec.kind == "twodisk":
                fstab += f"UUID={data_uuid} /srv ext4 defaults 0 2\n"
            truth.update(_linux_tree(stage, spec, distro, fstab))
            if spec.kind == "twodisk":
                (stage / "srv").mkdir()
            _mkfs("ext4", stage, tmp / "fs", ROOT_MB, root_uuid, "root")
            _assemble(disk0, ROOT_MB + 2, [(MiB, tmp / "fs")], None, "start=2048, type=83\n")
            fmt = "raw" if spec.kind == "debian" else "qcow2"
            disks.append(Disk(str(_finish(disk0, fmt)), fmt))
            fs_truth.append({"type": "ext4", "uuid": root_uuid, "label": "root"})
            if spec.kind == "twodisk":
                dstage = tmp / "data"
                _write(dstage, "/www/index.html", f"<h1>{spec.name}</h1>\n")
                _mkfs("ext4", dstage, tmp / "datafs", 32, data_uuid, "srv")
                disk1 = outdir / f"{spec.name}-data.img"
                _assemble(disk1, 32, [(0, tmp / "datafs")], None, None)
                disks.append(Disk(str(_finish(disk1, "qcow2")), "qcow2"))
                fs_truth.append({"type": "ext4", "uuid": data_uuid, "label": "srv"})
                truth["os"]["mountpoints"] = {"/": "root", "/srv": "disk1"}
        truth["filesystems"] = fs_truth
    vm = VM(spec.name, tuple(Disk(os.path.relpath(d.path, outdir), d.format) for d in disks),
            tags=(spec.kind,), trust_group=f"tenant-{spec.index % 3}",
            clone_of={"debian": "debian-template", "lvm": "lvm-template"}.get(spec.kind))
    return {"vm": vm.to_dict(), "truth": truth}


LVM_DISK_MB = 80


def _build_any(spec: Spec, outdir: Path, lvm_header: tuple[str, int] | None,
               templates: dict[str, Any]) -> dict[str, Any]:
    if spec.kind in HARD_KINDS:

        return build_hard_vm(spec, outdir, templates)
    return build_vm(spec, outdir, lvm_header)


def lvm_header(progress: Callable[[str], None] | None = None) -> tuple[str, int]:
    """A disk header holding an LVM PV with VG ``vg0`` and LV ``root`` (64 MiB),
    made once by an appliance and cached: (header file, LV data offset)."""

    cdir = cache_dir() / "demo"
    cdir.mkdir(exist_ok=True)
    path, meta = cdir / "lvm-header.raw", cdir / "lvm-header.json"
    if meta.exists():  # written last: the header is whole
        return str(path), int(json.loads(meta.read_text())["offset"])
    with build_lock(path):
        if meta.exists():  # another process built it while this one waited
            return str(path), int(json.loads(meta.read_text())["offset"])
        return _build_lvm_header(path, meta, progress)


def _build_lvm_header(path: Path, meta: Path, progress: Callable[[str], None] | None
                      ) -> tuple[str, int]:
    from guestpool.appliance._accel import resolve_accel

    if progress:
        progress("building the LVM header once with an appliance (about 30 s under TCG)")
    try:
        import guestfs
    except ImportError as e:
        raise SetupError("libguestfs Python bindings missing: run `bash pool/bootstrap.sh`") from e
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.truncate(LVM_DISK_MB * MiB)
    g = guestfs.GuestFS(python_return_dict=True)
    g.set_backend("direct")
    if resolve_accel().accel == "tcg":
        g.set_backend_settings(["force_tcg"])
    g.add_drive_opts(str(tmp), format="raw")
    g.launch()
    try:
        g.part_disk("/dev/sda", "mbr")
        g.pvcreate("/dev/sda1")
        g.vgcreate("vg0", ["/dev/sda1"])
        g.lvcreate("root", "vg0", ROOT_MB)
        pe_start = int(g.pvs_full()[0]["pe_start"])
        part_start = int(g.part_list("/dev/sda")[0]["part_start"])
        g.vg_activate(False, ["vg0"])
    finally:
        g.shutdown()
        g.close()
    tmp.replace(path)
    offset = part_start + pe_start
    write_atomically(meta, json.dumps({"offset": offset}).encode())
    return str(path), offset


def generate(outdir: Path, count: int, progress: Callable[[str], None] | None = None,
             workers: int | None = None) -> Path:
    """Build (or reuse) a demo fleet of ``count`` VMs; return the manifest path."""
    if count < 1:
        raise FleetError(f"--count must be at least 1, got {count}")
    _need_tools()
    outdir = outdir.resolve()
    try:
        writable_dir(outdir)
    except OSError as e:
        raise FleetError(f"cannot write to {outdir}: {e.strerror}") from None
    manifest, stamp = outdir / "fleet.json", outdir / ".demo-stamp"
    want = f"{GENERATOR_VERSION}:{count}"
    if stamp.exists() and stamp.read_text() == want and manifest.exists():
        return manifest
    with build_lock(outdir / ".demo"):  # a second run into this folder waits, then reuses it
        if stamp.exists() and stamp.read_text() == want and manifest.exists():
            return manifest
        stamp.unlink(missing_ok=True)  # what follows rewrites the folder
        _generate(outdir, count, progress, workers)
        stamp.write_text(want)
    return manifest


def _generate(outdir: Path, count: int, progress: Callable[[str], None] | None,
              workers: int | None) -> None:
    manifest, truth_path = outdir / "fleet.json", outdir / "truth.json"
    specs = plan(count)
    header = lvm_header(progress) if any(s.kind == "lvm" for s in specs) else None
    hard = [s for s in specs if s.kind in HARD_KINDS]
    templates: dict[str, Any] = {}
    if hard:

        templates = prepare_templates(outdir, progress)
        if progress:
            progress(f"templates of {len(templates)} hard kinds ready for {len(hard)} VMs")
    start = time.monotonic()
    entries: list[dict[str, Any]] = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as ex:
        futures = [ex.submit(_build_any, s, outdir, header, templates) for s in specs]
        for i, fut in enumerate(futures, 1):
            entries.append(fut.result())
            if progress and (i % 100 == 0 or i == count):
                progress(f"built {i}/{count} VMs in {time.monotonic() - start:.0f} s")
    write_manifest(manifest, [VM.from_dict(e["vm"]) for e in entries])
    truth_path.write_text(json.dumps({e["vm"]["name"]: e["truth"] for e in entries}, indent=1))
