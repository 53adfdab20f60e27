"""Image safety: the malicious image set, made here, each refused or failing cleanly."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet, sha256
from helpers.qemu_images import CASES, FormatCase, make_image, qemu_img

from guestpool import VM, Disk, ImageError, RoundOptions, Store, run_round
from guestpool.fleet._manifest import ManifestSource
from guestpool.fleet._safety import SafetyPolicy, check_disk, confine

SECRET = "guestpool-host-secret-7f3a9c"


@pytest.fixture(scope="module")
def malicious(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Disk]:
    root = tmp_path_factory.mktemp("malicious")
    fleet = root / "fleet"
    fleet.mkdir()
    host = root / "host"  # outside the fleet's folder: a host file guests must not reach
    host.mkdir()
    secret = host / "secret.raw"
    secret.write_text((SECRET + "\n") * 10000)
    good = fleet / "good.qcow2"
    qemu_img("create", "-f", "qcow2", str(good), "16M")
    d: dict[str, Disk] = {}
    qemu_img("create", "-f", "qcow2", "-b", str(secret), "-F", "raw",
             str(fleet / "host-backing.qcow2"), "16M")
    d["backing-host-file"] = Disk(str(fleet / "host-backing.qcow2"), "qcow2")
    qemu_img("create", "-f", "qcow2", "-b", "/etc/shadow", "-F", "raw",
             str(fleet / "shadow-backing.qcow2"), "16M")
    d["backing-etc-shadow"] = Disk(str(fleet / "shadow-backing.qcow2"), "qcow2")
    shutil.copy(good, fleet / "qcow2-as-raw.img")
    d["raw-with-qcow2-header"] = Disk(str(fleet / "qcow2-as-raw.img"), "raw")
    qemu_img("create", "-f", "qcow2", str(fleet / "loop-b.qcow2"), "16M")
    qemu_img("create", "-f", "qcow2", "-b", str(fleet / "loop-b.qcow2"), "-F", "qcow2",
             str(fleet / "loop-a.qcow2"), "16M")
    qemu_img("rebase", "-u", "-f", "qcow2", "-b", str(fleet / "loop-a.qcow2"), "-F", "qcow2",
             str(fleet / "loop-b.qcow2"))
    d["backing-loop"] = Disk(str(fleet / "loop-a.qcow2"), "qcow2")
    (fleet / "truncated.qcow2").write_bytes(good.read_bytes()[:300])
    d["truncated-qcow2"] = Disk(str(fleet / "truncated.qcow2"), "qcow2")
    (fleet / "empty.raw").touch()
    d["zero-length"] = Disk(str(fleet / "empty.raw"), "raw")
    qemu_img("create", "-f", "qcow2", str(fleet / "huge.qcow2"), "64T")
    d["huge-virtual-size"] = Disk(str(fleet / "huge.qcow2"), "qcow2")
    (fleet / "plain.raw").write_bytes(b"\0" * 65536)
    d["wrong-declared-format"] = Disk(str(fleet / "plain.raw"), "qcow2")
    qemu_img("create", "-f", "qcow2", "-b", str(fleet / "plain.raw"), "-F", "raw",
             str(fleet / "nofmt.qcow2"), "16M")
    # qemu-img no longer writes such images: drop the backing-format header extension
    raw = bytearray((fleet / "nofmt.qcow2").read_bytes())
    at = raw.find(b"\xe2\x79\x2a\xca", 0, 4096)
    assert at > 0
    raw[at:at + 4] = b"\0\0\0\0"  # becomes the end-of-extensions marker
    (fleet / "nofmt.qcow2").write_bytes(bytes(raw))
    d["backing-without-format"] = Disk(str(fleet / "nofmt.qcow2"), "qcow2")
    os.mkfifo(fleet / "fifo.raw")
    d["fifo"] = Disk(str(fleet / "fifo.raw"), "raw")
    os.symlink("/dev/null", fleet / "devnode.raw")
    d["device-node-via-symlink"] = Disk(str(fleet / "devnode.raw"), "raw")
    # an external data file naming a host file: its bytes would be the guest's disk
    qemu_img("create", "-f", "qcow2", "-o",
             f"data_file={fleet / 'datafile.data'},data_file_raw=on",
             str(fleet / "datafile.qcow2"), "16M")
    qemu_img("amend", "-f", "qcow2", "-o", f"data_file={secret}", str(fleet / "datafile.qcow2"))
    d["data-file-host-file"] = Disk(str(fleet / "datafile.qcow2"), "qcow2")
    d["good"] = Disk(str(good), "qcow2")
    return d


EXPECTED = {
    "backing-host-file": "outside the allowed folders",
    "backing-etc-shadow": "outside the allowed folders",
    "raw-with-qcow2-header": "declared raw but starts with a qcow2 header",
    "backing-loop": "infinite loop",
    "truncated-qcow2": "truncated",
    "zero-length": "empty",
    "huge-virtual-size": "over the limit",
    "wrong-declared-format": "declared qcow2 but has no qcow2 header",
    "backing-without-format": "without its format",
    "fifo": "not a regular file",
    "device-node-via-symlink": "device node",
    "data-file-host-file": "outside the allowed folders",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_malicious_image_is_refused(malicious: dict[str, Disk], name: str) -> None:
    with pytest.raises(ImageError, match=EXPECTED[name]) as err:
        check_disk(malicious[name], SafetyPolicy(allowed_roots=[]))
    assert SECRET not in str(err.value)


def test_good_image_and_explicit_allowances_pass(malicious: dict[str, Disk]) -> None:
    assert check_disk(malicious["good"], SafetyPolicy()).path == malicious["good"].path
    relaxed = SafetyPolicy(allow_format_mismatch=True)
    assert check_disk(malicious["raw-with-qcow2-header"], relaxed).format == "raw"
    host_dir = str(Path(malicious["good"].path).parent.parent / "host")
    assert check_disk(malicious["backing-host-file"], SafetyPolicy(allowed_roots=[host_dir]))



# --- format headers: every format this qemu-img writes, declared raw -------------------------

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_raw_declared_image_with_a_format_header_is_refused(
        case: FormatCase, tmp_path: Path) -> None:
    try:
        image = str(make_image(case, tmp_path))
    except LookupError as e:
        pytest.skip(str(e))
    where = ("ends with a vpc footer" if case.id == "vpc-fixed-footer-only"
             else f"starts with a {case.expected} header")
    with pytest.raises(ImageError, match=f"declared raw but {where}"):
        check_disk(Disk(image, "raw"), SafetyPolicy())
    assert check_disk(Disk(image, "raw"), SafetyPolicy(allow_format_mismatch=True)).format == "raw"
    if case.expected == "qcow2":  # the only such format guestpool attaches
        assert check_disk(Disk(image, "qcow2"), SafetyPolicy()).path == image
    else:
        with pytest.raises(ImageError, match="declared qcow2 but has no qcow2 header"):
            check_disk(Disk(image, "qcow2"), SafetyPolicy())


def test_raw_image_without_a_header_passes(tmp_path: Path) -> None:
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(8192).replace(b"conectix", b"xxxxxxxx"))
    assert check_disk(Disk(str(image), "raw"), SafetyPolicy()).path == str(image)


# --- backing chains -----------------------------------------------------------------------------

def _chain(folder: Path, depth: int) -> Path:
    """A qcow2 with ``depth`` backing files below it, all in ``folder``."""
    folder.mkdir()
    below = folder / "layer0.qcow2"
    qemu_img("create", "-f", "qcow2", str(below), "1M")
    for i in range(1, depth + 1):
        top = folder / f"layer{i}.qcow2"
        qemu_img("create", "-f", "qcow2", "-b", str(below), "-F", "qcow2", str(top), "1M")
        below = top
    return below


def test_backing_chain_of_8_passes_and_9_is_refused(tmp_path: Path) -> None:
    eight = _chain(tmp_path / "eight", 8)
    assert check_disk(Disk(str(eight), "qcow2"), SafetyPolicy(allowed_roots=[]))
    nine = _chain(tmp_path / "nine", 9)
    with pytest.raises(ImageError, match="backing chain of more than 8 files"):
        check_disk(Disk(str(nine), "qcow2"), SafetyPolicy(allowed_roots=[]))


def test_backing_loop_is_one_clear_error_at_once(malicious: dict[str, Disk]) -> None:
    started = time.monotonic()
    with pytest.raises(ImageError, match="infinite loop") as err:
        check_disk(malicious["backing-loop"], SafetyPolicy(allowed_roots=[]))
    assert time.monotonic() - started < 10
    assert "\n" not in str(err.value)


def test_backing_file_that_is_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    (tmp_path / "base.raw").write_bytes(b"\0" * 65536)
    qemu_img("create", "-f", "qcow2", "-b", str(tmp_path / "base.raw"), "-F", "raw",
             str(tmp_path / "top.qcow2"), "1M")
    (tmp_path / "base.raw").unlink()
    os.mkfifo(tmp_path / "base.raw")
    result = _check_within(Disk(str(tmp_path / "top.qcow2"), "qcow2"), SafetyPolicy())
    assert isinstance(result, ImageError), result
    assert re.search(r"backing file .*base\.raw is a FIFO, not a regular file", str(result))


def test_raw_backing_file_with_a_format_header_is_refused(tmp_path: Path) -> None:
    qemu_img("create", "-f", "vdi", str(tmp_path / "base.raw"), "1M")
    qemu_img("create", "-f", "qcow2", "-b", str(tmp_path / "base.raw"), "-F", "raw",
             str(tmp_path / "top.qcow2"), "1M")
    top = Disk(str(tmp_path / "top.qcow2"), "qcow2")
    with pytest.raises(ImageError, match=r"backing file .*base\.raw is declared raw but starts "
                                         "with a vdi header"):
        check_disk(top, SafetyPolicy())
    assert check_disk(top, SafetyPolicy(allow_format_mismatch=True)).path == top.path


def test_backing_file_in_another_format_than_raw_or_qcow2_is_refused(tmp_path: Path) -> None:
    # a vmdk layer's descriptor names further files (extents) qemu would open
    qemu_img("create", "-f", "vmdk", str(tmp_path / "base.vmdk"), "1M")
    qemu_img("create", "-f", "qcow2", "-b", str(tmp_path / "base.vmdk"), "-F", "vmdk",
             str(tmp_path / "top.qcow2"), "1M")
    with pytest.raises(ImageError, match=r"backing file .*base\.vmdk in format vmdk"):
        check_disk(Disk(str(tmp_path / "top.qcow2"), "qcow2"), SafetyPolicy(allowed_roots=[]))


def test_backing_file_named_by_a_qemu_pseudo_protocol_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    top = tmp_path / "json-backing.qcow2"
    qemu_img("create", "-f", "qcow2", "-u", "-F", "raw", "-b",
             'json:{"file":{"driver":"file","filename":"/etc/hostname"}}', str(top), "1M")
    monkeypatch.chdir(tmp_path)  # a relative reading of the name would land inside the roots
    with pytest.raises(ImageError, match="not an absolute file path"):
        check_disk(Disk(str(top), "qcow2"),
                   SafetyPolicy(allowed_roots=[], disk_roots=[str(tmp_path)]))


# --- files that are not regular files -----------------------------------------------------------

def _check_within(disk: Disk, policy: SafetyPolicy, seconds: float = 5.0) -> object:
    """``check_disk``'s result or exception; fails the test if it blocks (a FIFO open)."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(check_disk(disk, policy))
        except BaseException as e:
            outcome.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        for path in Path(disk.path).parent.iterdir():  # open the write side: releases the reader
            if stat.S_ISFIFO(path.lstat().st_mode):
                os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail(f"check_disk blocked for over {seconds:.0f} s on {disk.path}")
    return outcome[0]


def _make_odd(kind: str, path: Path) -> None:
    if kind == "socket":
        sock, cwd = socket.socket(socket.AF_UNIX), os.getcwd()
        os.chdir(path.parent)  # a relative name: socket paths are limited to 107 bytes
        try:
            sock.bind(path.name)
        finally:
            os.chdir(cwd)
            sock.close()  # the socket file stays
    elif kind == "FIFO":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "character device node":
        try:
            os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # like /dev/null
        except PermissionError:
            pytest.skip("mknod needs CAP_MKNOD; /dev/null is tested instead")


@pytest.mark.parametrize("kind", ["socket", "FIFO", "folder", "character device node"])
def test_image_that_is_not_a_regular_file_is_refused_without_blocking(
        kind: str, tmp_path: Path) -> None:
    path = tmp_path / "disk.img"
    _make_odd(kind, path)
    for fmt in ("raw", "qcow2"):
        result = _check_within(Disk(str(path), fmt), SafetyPolicy())
        assert isinstance(result, ImageError), result
        assert f"is a {kind}, not a regular file" in str(result)


def test_dev_null_is_refused() -> None:
    with pytest.raises(ImageError, match="is a character device node, not a regular file"):
        check_disk(Disk("/dev/null", "raw"), SafetyPolicy())


# --- qcow2 external data files ------------------------------------------------------------------

@pytest.fixture
def data_files(tmp_path: Path) -> dict[str, Path]:
    """qcow2 images with external data files, inside and outside the fleet folder."""
    fleet, host = tmp_path / "fleet", tmp_path / "host"
    fleet.mkdir()
    host.mkdir()
    made: dict[str, Path] = {}

    def qcow2(name: str, data_file: str, *extra: str) -> Path:
        path = fleet / f"{name}.qcow2"
        qemu_img("create", "-f", "qcow2", "-o", f"data_file={data_file},data_file_raw=on",
                 *extra, str(path), "1M")
        made[name] = path
        return path

    qcow2("inside", str(fleet / "inside.data"))
    qcow2("outside", str(host / "secret.raw"))
    (host / "secret.raw").write_text((SECRET + "\n") * 40000)  # after qemu-img made it
    qcow2("symlink-out", str(fleet / "link.data"))
    (fleet / "link.data").unlink()
    (fleet / "link.data").symlink_to(host / "secret.raw")
    qcow2("fifo", str(fleet / "fifo.data"))
    (fleet / "fifo.data").unlink()
    os.mkfifo(fleet / "fifo.data")
    # qemu opens a relative data file name against its working directory, not the image's
    relative = qcow2("relative", str(fleet / "relative.data"))
    qemu_img("amend", "-f", "qcow2", "-o", "data_file=relative.data", str(relative))
    # the data file of a backing layer counts as much as the top's
    qcow2("base-outside", str(host / "base-secret.raw"))
    qemu_img("create", "-f", "qcow2", "-b", str(made["base-outside"]), "-F", "qcow2",
             str(fleet / "over-outside.qcow2"), "1M")
    made["over-outside"] = fleet / "over-outside.qcow2"
    return made


def _fleet_policy(fleet: Path, confined: bool) -> SafetyPolicy:
    """Backing and data files allowed in ``fleet`` only: as ``disk_roots``, or as before."""
    if confined:
        return SafetyPolicy(allowed_roots=[], disk_roots=[str(fleet)])
    return SafetyPolicy(allowed_roots=[])  # the image's own folder is implied


DATA_FILE_REFUSALS = {
    "outside": "data file .*secret.raw outside the allowed folders",
    "symlink-out": "data file .*link.data outside the allowed folders",
    "fifo": "data file .*fifo.data is a FIFO, not a regular file",
    "relative": "data file 'relative.data', not an absolute file path",
    "over-outside": "data file .*base-secret.raw outside the allowed folders",
}


@pytest.mark.parametrize("confined", [False, True], ids=["legacy-roots", "disk_roots"])
@pytest.mark.parametrize("name", sorted(DATA_FILE_REFUSALS))
def test_qcow2_data_file_outside_the_allowed_folders_is_refused(
        data_files: dict[str, Path], name: str, confined: bool) -> None:
    policy = _fleet_policy(data_files["inside"].parent, confined)
    result = _check_within(Disk(str(data_files[name]), "qcow2"), policy)
    assert isinstance(result, ImageError), result
    assert re.search(DATA_FILE_REFUSALS[name], str(result)), str(result)
    assert SECRET not in str(result)


@pytest.mark.parametrize("confined", [False, True], ids=["legacy-roots", "disk_roots"])
def test_qcow2_data_file_inside_the_allowed_folders_passes(
        data_files: dict[str, Path], confined: bool) -> None:
    policy = _fleet_policy(data_files["inside"].parent, confined)
    assert check_disk(Disk(str(data_files["inside"]), "qcow2"), policy).format == "qcow2"


# --- confinement to the source's folders (issue 13) ---------------------------------------------

@pytest.fixture
def tenants(tmp_path: Path) -> Path:
    """fleet/tenant-a and fleet/tenant-b, and a host folder beside the fleet."""
    for sub in ("fleet/tenant-a", "fleet/tenant-b", "host"):
        (tmp_path / sub).mkdir(parents=True)
    (tmp_path / "host" / "secret.raw").write_text(SECRET * 1000)
    return tmp_path


def test_confine_resolves_symlinks_and_refuses_what_lands_outside(tenants: Path) -> None:
    a = tenants / "fleet" / "tenant-a"
    (a / "disk.raw").write_bytes(b"\0" * 4096)
    (a / "tenant.img").symlink_to("/etc/hostname")
    (tenants / "fleet-link").symlink_to(tenants / "fleet")
    assert confine(str(a / "disk.raw"), [str(a)]) == str(a / "disk.raw")
    assert confine(str(a / "disk.raw"), [str(tenants / "fleet-link")]) == str(a / "disk.raw")
    with pytest.raises(ImageError, match="resolves to /etc/hostname, outside the allowed folders"):
        confine(str(a / "tenant.img"), [str(a)])
    with pytest.raises(ImageError, match="outside the allowed folders"):
        confine(str(a / ".." / ".." / "host" / "secret.raw"), [str(a)])
    with pytest.raises(ImageError, match="outside the allowed folders"):
        confine(str(a / "disk.raw"), [])
    with pytest.raises(ImageError, match="outside the allowed folders"):  # a prefix, not a parent
        confine(str(a / "disk.raw"), [str(tenants / "fleet" / "tenant")])


def test_disk_roots_confine_the_disk_itself(tenants: Path) -> None:
    a = tenants / "fleet" / "tenant-a"
    (a / "tenant.img").symlink_to("/etc/hostname")
    policy = SafetyPolicy(disk_roots=[str(a)])
    with pytest.raises(ImageError, match=r"tenant\.img resolves to /etc/hostname, outside"):
        check_disk(Disk(str(a / "tenant.img"), "raw"), policy)
    with pytest.raises(ImageError, match="outside the allowed folders") as err:
        check_disk(Disk(f"{a}/../../host/secret.raw", "raw"), policy)
    assert SECRET not in str(err.value)
    # without disk_roots, as before: not confined
    assert check_disk(Disk(str(a / "tenant.img"), "raw"), SafetyPolicy()).path == "/etc/hostname"


def test_disk_roots_confine_backing_files_to_the_roots_only(tenants: Path) -> None:
    a, b = tenants / "fleet" / "tenant-a", tenants / "fleet" / "tenant-b"
    qemu_img("create", "-f", "qcow2", str(b / "base.qcow2"), "1M")
    qemu_img("create", "-f", "qcow2", "-b", str(b / "base.qcow2"), "-F", "qcow2",
             str(a / "top.qcow2"), "1M")
    top = Disk(str(a / "top.qcow2"), "qcow2")
    with pytest.raises(ImageError, match=r"backing file .*tenant-b/base\.qcow2 outside"):
        check_disk(top, SafetyPolicy(disk_roots=[str(a)]))
    # allowed_roots (DEFAULT_BASE_DIRS by default) are not consulted once disk_roots is set
    with pytest.raises(ImageError, match=r"backing file .*tenant-b/base\.qcow2 outside"):
        check_disk(top, SafetyPolicy(disk_roots=[str(a)], allowed_roots=[str(b)]))
    assert check_disk(top, SafetyPolicy(disk_roots=[str(a), str(b)])).path == top.path
    # a symlink inside tenant-a pointing at tenant-b's base is resolved, then refused
    (a / "base-link.qcow2").symlink_to(b / "base.qcow2")
    qemu_img("create", "-f", "qcow2", "-b", str(a / "base-link.qcow2"), "-F", "qcow2",
             str(a / "top-link.qcow2"), "1M")
    with pytest.raises(ImageError, match="outside"):
        check_disk(Disk(str(a / "top-link.qcow2"), "qcow2"), SafetyPolicy(disk_roots=[str(a)]))

@pytest.mark.appliance
async def test_scan_of_malicious_set_leaks_nothing_and_writes_nothing(
        malicious: dict[str, Disk], demo_fleet: DemoFleet, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Every malicious image is refused before qemu starts; inspectors that read
    files (services, users, files) see no byte of the host's secret; nothing is
    written to any image."""
    caplog.set_level(logging.DEBUG)
    vms = [VM(name, (disk,)) for name, disk in sorted(malicious.items())
           if name not in ("fifo", "device-node-via-symlink")]
    vms.append(dataclasses.replace(demo_fleet.vms[0], trust_group="default"))
    secret = Path(malicious["good"].path).parent.parent / "host" / "secret.raw"
    files = [d.path for vm in vms for d in vm.disks] + [str(secret)]
    before = {p: sha256(p) for p in files}
    fleet = Path(malicious["good"].path).parent
    source = ManifestSource(fleet / "fleet.json")
    options = RoundOptions(budget=150, pool_size=1,
                           inspectors=["os", "filesystems", "services", "users", "files"],
                           allow_paths=(str(demo_fleet.manifest.parent),))
    store = Store(tmp_path / "leak.db")
    report = await run_round(vms, options, store=store, safety=options.safety(source))
    store.close()
    assert not report.not_reached
    by_name = {r.vm: r for r in report.results}
    for name in EXPECTED:
        if name in by_name:
            assert not by_name[name].ok and by_name[name].error["kind"] == "image", name
            assert EXPECTED[name] in by_name[name].error["message"], by_name[name].error
    assert by_name[demo_fleet.vms[0].name].ok
    assert by_name["good"].ok
    dump = json.dumps([r.to_dict() for r in report.results]) + caplog.text
    assert SECRET not in dump
    assert SECRET.encode() not in (tmp_path / "leak.db").read_bytes()
    for wal in tmp_path.glob("leak.db-*"):
        assert SECRET.encode() not in wal.read_bytes()
    assert {p: sha256(p) for p in files} == before
