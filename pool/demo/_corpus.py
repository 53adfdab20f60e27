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
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guestpool._cache import folder_once
from guestpool._errors import FleetError, SetupError
from guestpool._paths import cache_dir, writable_dir
from guestpool.appliance._hotplug import drive_label
from guestpool.fleet._model import VM, Disk

from ._images import _KERNEL_NAMES, _finish, _kernel_names, _run
from ._layouts import BUILDERS, CorpusVM

GENERATOR_VERSION = "7"  # 2: rpm indexes; 3, 5, 6: expected.json; 4: dpkg final blank;


#                           7: opensuse (ndb rpmdb)
Progress = Callable[[str], None] | None


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
    started = time.monotonic()
    if folder_once(cached, lambda tmp: _write_cache(tmp, progress)) and progress:
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
