"""Fleet sources: manifest, folder, Nova instance folders, a real libvirtd."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.fleet import DemoFleet

from guestpool import VM, FleetError, ImageError, RoundOptions, run_round
from guestpool.fleet._folder import FolderSource
from guestpool.fleet._libvirt import GUESTPOOL_XMLNS, LibvirtSource, check_uri, domain_to_vm
from guestpool.fleet._manifest import ManifestSource
from guestpool.fleet._nova import NovaSource
from guestpool.fleet._safety import check_vm
from guestpool.fleet._sources import open_source, safety_policy

URI = "qemu:///system"
TEST_DOMAINS = "gp-test-"  # every domain a test defines starts so


def by_kind(fleet: DemoFleet, kind: str) -> int:
    return next(i for i, v in enumerate(fleet.vms) if fleet.truth[v.name]["kind"] == kind)


@pytest.fixture(scope="module")
def nova(demo_fleet: DemoFleet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compute node's layout: _base holds raw base images, instances are qcow2 overlays."""
    root = tmp_path_factory.mktemp("nova") / "instances"
    (root / "_base").mkdir(parents=True)
    for i in (by_kind(demo_fleet, "debian"), by_kind(demo_fleet, "alpine")):
        vm = demo_fleet.vms[i]
        base = root / "_base" / f"{i:040x}"
        subprocess.run(["qemu-img", "convert", "-f", vm.disks[0].format, "-O", "raw",
                        vm.disks[0].path, str(base)], check=True)
        inst = root / str(uuid.UUID(int=i + 1))
        inst.mkdir()
        disk = inst / "disk"
        subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", str(base), "-F", "raw",
                        str(disk)], check=True, capture_output=True)
        (inst / "disk.info").write_text(json.dumps({str(disk): "qcow2"}))
        (inst / "libvirt.xml").write_text(
            '<domain xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1"><metadata>'
            f'<nova:instance><nova:owner><nova:project uuid="p{i}">demo</nova:project>'
            f'</nova:owner></nova:instance></metadata><name>{vm.name}</name></domain>')
    (root / "locks").mkdir()
    return root


def test_nova_layout_is_listed(nova: Path) -> None:
    src = open_source(f"nova:{nova}")
    assert isinstance(src, NovaSource)
    vms = src.load()
    assert len(vms) == 2
    assert all(v.disks[0].format == "qcow2" and v.trust_group.startswith("project-p")
               for v in vms)
    assert str(nova / "_base") in src.allowed_roots


def test_folder_source_reads_formats_from_extension_or_sidecar(tmp_path: Path) -> None:
    (tmp_path / "a.qcow2").write_bytes(b"x")
    (tmp_path / "b.img").write_bytes(b"x")
    (tmp_path / "c.disk").write_bytes(b"x")
    (tmp_path / "c.disk.json").write_text('{"format": "qcow2", "trust_group": "t9"}')
    (tmp_path / "d.bin").write_bytes(b"x")  # no declared format: skipped, never guessed
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "root.raw").write_bytes(b"x")
    (tmp_path / "e" / "data.qcow2").write_bytes(b"x")
    vms = {v.name: v for v in FolderSource(tmp_path).load()}
    assert set(vms) == {"a", "b", "c", "e"}
    assert vms["b"].disks[0].format == "raw"
    assert vms["c"].disks[0].format == "qcow2" and vms["c"].trust_group == "t9"
    assert [d.format for d in vms["e"].disks] == ["qcow2", "raw"]


def test_folder_source_checks_names_and_sidecars_like_a_manifest(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A file's name is a VM's name: one with a newline (it would forge a progress
    line or split a CSV row) or a sidecar with wrong fields skips that VM, with a
    warning naming it, and never the others."""
    (tmp_path / "ok.raw").write_bytes(b"x")
    (tmp_path / "forged\nok: 1 covered.raw").write_bytes(b"x")
    (tmp_path / "t.raw").write_bytes(b"x")
    (tmp_path / "t.raw.json").write_text('{"format": "raw", "tags": "web"}')
    (tmp_path / "p.raw").write_bytes(b"x")
    (tmp_path / "p.raw.json").write_text('{"format": "raw", "priority": "high"}')
    (tmp_path / "g.raw").write_bytes(b"x")
    (tmp_path / "g.raw.json").write_text('{"format": "raw", "trust_group": "a/../b"}')
    with caplog.at_level("WARNING", logger="guestpool"):
        vms = FolderSource(tmp_path).load()
    assert [v.name for v in vms] == ["ok"]
    text = caplog.text
    assert "must be printable" in text and "tags: must be a list" in text
    assert "priority: must be a whole number" in text and "trust_group: may not hold" in text


def test_domain_xml_parsing() -> None:
    xml = f"""<domain type='qemu'><name>web</name>
      <metadata><gp:guestpool xmlns:gp='{GUESTPOOL_XMLNS}' trust_group='tenant-x'/></metadata>
      <devices>
        <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
          <source file='/v/web.qcow2'/><target dev='vda'/></disk>
        <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
          <source file='/v/cd.iso'/><target dev='hdc'/></disk>
        <disk type='block' device='disk'><driver name='qemu' type='raw'/>
          <source dev='/dev/sdz'/><target dev='vdb'/></disk>
      </devices></domain>"""
    vm = domain_to_vm(xml, running=True)
    assert vm is not None and vm.name == "web" and vm.live
    assert [d.path for d in vm.disks] == ["/v/web.qcow2"]
    assert vm.trust_group == "tenant-x"


def _virsh(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["virsh", "-c", URI, *args], input=stdin, capture_output=True,
                          text=True, timeout=60)


def _listening(path: str) -> bool:
    """A socket file can outlive its daemon (killed, or a machine restored from a
    snapshot): only a connection says the daemon is there."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(path)
        except OSError:
            return False
    return True


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[str]:
    """A real libvirtd: the running one, or one we start (and stop) ourselves. Yields
    a name prefix of this run's own, after removing what a killed run left defined."""
    started = None
    logd = None
    if not _listening("/run/libvirt/virtlogd-sock") and shutil.which("virtlogd"):
        logd = subprocess.Popen(["virtlogd"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # libvirtd needs it to start domains
        deadline = time.monotonic() + 30
        while not _listening("/run/libvirt/virtlogd-sock"):
            assert logd.poll() is None and time.monotonic() < deadline, \
                "virtlogd did not come up"
            time.sleep(0.2)
    if _virsh("list", "--all").returncode != 0:
        if shutil.which("libvirtd") is None or os.geteuid() != 0:
            pytest.fail("libvirtd is not running and cannot be started: run as root after "
                        "`bash pool/bootstrap.sh`")
        started = subprocess.Popen(["libvirtd"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while _virsh("list", "--all").returncode != 0:
            assert time.monotonic() < deadline, "libvirtd did not come up"
            time.sleep(0.5)
    for stale in _virsh("list", "--all", "--name").stdout.split():
        if stale.startswith(TEST_DOMAINS):
            _virsh("destroy", stale)
            _virsh("undefine", stale)
    yield f"{TEST_DOMAINS}{uuid.uuid4().hex[:8]}-"
    for proc in (started, logd):
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)


def _domain(name: str, disks: list[tuple[str, str]], group: str) -> str:
    devs = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/>"
        f"<source file='{path}'/><target dev='vd{chr(97 + i)}' bus='virtio'/></disk>"
        for i, (path, fmt) in enumerate(disks))
    return (f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>128</memory>"
            f"<metadata><gp:guestpool xmlns:gp='{GUESTPOOL_XMLNS}' trust_group='{group}'/>"
            f"</metadata><os><type arch='x86_64'>hvm</type></os><devices>{devs}</devices>"
            f"</domain>")


@pytest.mark.appliance
async def test_libvirt_and_nova_sources_scan_for_real(libvirtd: str, demo_fleet: DemoFleet,
                                                      nova: Path, tmp_path: Path) -> None:
    two = demo_fleet.vms[by_kind(demo_fleet, "twodisk")]
    alpine = demo_fleet.vms[by_kind(demo_fleet, "alpine")]
    overlay = Path(alpine.disks[0].path).with_name("gp-test-overlay.qcow2")
    subprocess.run(["qemu-img", "create", "-f", "qcow2", "-b", alpine.disks[0].path, "-F",
                    "qcow2", str(overlay)], check=True, capture_output=True)
    twodisk, overlaid = f"{libvirtd}twodisk", f"{libvirtd}overlay"
    names = {twodisk: (two, [(d.path, d.format) for d in two.disks]),
             overlaid: (alpine, [(str(overlay), "qcow2")])}
    try:
        for name, (_, disks) in names.items():
            xml = tmp_path / f"{name}.xml"
            xml.write_text(_domain(name, disks, "test"))
            r = _virsh("define", str(xml))
            assert r.returncode == 0, r.stderr
        source = LibvirtSource(URI)
        listed = {v.name: v for v in source.load() if v.name.startswith(libvirtd)}
        assert set(listed) == set(names)
        assert len(listed[twodisk].disks) == 2
        assert listed[overlaid].disks[0].format == "qcow2"
        assert not any(v.live for v in listed.values())
        nova_vms = NovaSource(nova).load()
        fleet = list(listed.values()) + [dataclasses.replace(v, trust_group="test")
                                         for v in nova_vms]
        report = await run_round(fleet, RoundOptions(budget=150, pool_size=1, inspectors=["os"]),
                                 safety=safety_policy(NovaSource(nova), allow_paths=[
                                     str(demo_fleet.manifest.parent)]))
        assert not report.failed and not report.not_reached, report.summary()
        got = {r.vm: r.results["os"]["value"]["hostname"] for r in report.results}
        assert got[twodisk] == demo_fleet.truth[two.name]["os"]["hostname"]
        assert got[overlaid] == demo_fleet.truth[alpine.name]["os"]["hostname"]
        hostnames = {demo_fleet.truth[v.name]["os"].get("hostname") for v in demo_fleet.vms}
        assert all(got[v.name] in hostnames for v in nova_vms)
    finally:
        for name in names:
            _virsh("undefine", name)
        overlay.unlink(missing_ok=True)


@pytest.mark.appliance
async def test_running_domain_is_read_live_without_its_lock(libvirtd: str,
                                                            demo_fleet: DemoFleet,
                                                            tmp_path: Path) -> None:
    """A tiny guest (the host kernel, which panics and idles) keeps its disk open."""
    alpine = demo_fleet.vms[by_kind(demo_fleet, "alpine")]
    # qemu runs as libvirt-qemu here: the disk must live where that user can reach it
    where = Path(tempfile.mkdtemp(prefix="gp-live-", dir="/var/tmp"))
    where.chmod(0o755)
    disk = where / "live.qcow2"
    shutil.copy(alpine.disks[0].path, disk)
    kernel = sorted(Path("/boot").glob("vmlinuz-*"))[-1]
    xml = tmp_path / "live.xml"
    name = f"{libvirtd}live"
    xml.write_text(
        f"<domain type='qemu'><name>{name}</name>"
        "<memory unit='MiB'>128</memory>"
        f"<os><type arch='x86_64'>hvm</type><kernel>{kernel}</kernel>"
        "<cmdline>console=ttyS0 panic=0</cmdline></os><on_crash>destroy</on_crash>"
        "<devices><disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>")
    r = _virsh("define", str(xml))
    assert r.returncode == 0, r.stderr
    try:
        r = _virsh("start", name)
        assert r.returncode == 0, r.stderr
        (vm,) = [v for v in LibvirtSource(URI).load() if v.name == name]
        assert vm.live
        options = RoundOptions(budget=90, pool_size=1, inspectors=["hostname"])
        report = await run_round([vm], options)
        (res,) = report.results
        assert res.ok, res.error
        assert res.live == "possibly inconsistent"
        assert res.results["hostname"]["value"] == demo_fleet.truth[alpine.name]["os"][
            "hostname"]
        assert "running" in _virsh("domstate", name).stdout  # undisturbed
    finally:
        _virsh("destroy", name)
        _virsh("undefine", name)
        shutil.rmtree(where, ignore_errors=True)


def _refused(vm: VM, source: object) -> str:
    with pytest.raises(ImageError) as e:
        check_vm(vm, safety_policy(source))  # type: ignore[arg-type]
    return str(e.value)


def test_sources_confine_disks_to_their_folders(tmp_path: Path) -> None:
    """A folder source's symlink out, a manifest's ``../`` path and a backing file in
    another VM's folder are refused before qemu sees them."""
    fleet = tmp_path / "fleet"
    (fleet / "a").mkdir(parents=True)
    (fleet / "b").mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(fleet / "b" / "base.qcow2"),
                    "1M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b",
                    str(fleet / "b" / "base.qcow2"), "-F", "qcow2",
                    str(fleet / "a" / "disk.qcow2")], check=True)
    (fleet / "tenant.img").symlink_to("/etc/hostname")
    folder = FolderSource(fleet)
    vms = {v.name: v for v in folder.load()}
    assert "outside the allowed folders" in _refused(vms["tenant"], folder)
    assert "b/base.qcow2" in _refused(vms["a"], folder)  # VM a backs onto VM b's folder
    check_vm(vms["b"], safety_policy(folder))  # its own folder: fine

    manifest = tmp_path / "m" / "fleet.json"
    manifest.parent.mkdir()
    manifest.write_text(json.dumps({"vms": [
        {"name": "up", "disks": [{"path": os.path.relpath("/etc/hostname", manifest.parent),
                                  "format": "raw"}]}]}))
    source = ManifestSource(manifest)
    (vm,) = source.load()
    assert "outside the allowed folders" in _refused(vm, source)
    # an operator can allow a folder explicitly
    check_vm(vm, safety_policy(source, allow_paths=["/etc"]))


def _qcow2(path: Path, backing: Path | None = None, fmt: str = "qcow2") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ["-b", str(backing), "-F", fmt] if backing else []
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *args, str(path), "1M"],
                   check=True)
    return path


def test_no_vm_of_a_folder_source_reaches_another_vm_s_files(tmp_path: Path) -> None:
    """Issue 29, item 2: a top-level image backed by another VM's disk (or any file
    of its folder) is refused; backing files several VMs share live in _base."""
    fleet = tmp_path / "fleet"
    victim = _qcow2(fleet / "victim" / "disk.qcow2")
    (fleet / "victim" / "secret.bin").write_bytes(b"\1" * 4096)  # no format: not a disk
    _qcow2(fleet / "evil.qcow2", victim)
    _qcow2(fleet / "sneaky.qcow2", fleet / "victim" / "secret.bin", "raw")
    _qcow2(fleet / "sibling.qcow2", fleet / "evil.qcow2")  # another top-level VM's image
    (fleet / "peek.raw").symlink_to(fleet / "victim" / "secret.bin")  # a link is not a place
    base = _qcow2(fleet / "_base" / "debian.qcow2")
    _qcow2(fleet / "web.qcow2", base)
    _qcow2(fleet / "db" / "disk.qcow2", base)
    source = FolderSource(fleet)
    vms = {v.name: v for v in source.load()}
    assert set(vms) == {"victim", "evil", "sneaky", "sibling", "peek", "web", "db"}  # _base: no VM
    for name in ("evil", "sneaky", "sibling", "peek"):
        assert "outside the allowed folders" in _refused(vms[name], source), name
    for name in ("victim", "web", "db"):
        check_vm(vms[name], safety_policy(source))


def test_no_vm_of_a_manifest_reads_another_vm_s_disk(tmp_path: Path) -> None:
    """A manifest's folder tree is shared, but one VM's backing (or data) file may
    not be another VM's disk."""
    victim = _qcow2(tmp_path / "victim.qcow2")
    evil = _qcow2(tmp_path / "evil.qcow2", victim)
    base = _qcow2(tmp_path / "base.qcow2")
    ok = _qcow2(tmp_path / "ok.qcow2", base)
    manifest = tmp_path / "fleet.json"
    manifest.write_text(json.dumps({"vms": [
        {"name": n, "trust_group": n, "disks": [{"path": str(p), "format": "qcow2"}]}
        for n, p in (("victim", victim), ("evil", evil), ("ok", ok))]}))
    source = ManifestSource(manifest)
    vms = {v.name: v for v in source.load()}
    assert "is the disk of VM 'victim' (trust group 'victim')" in _refused(vms["evil"], source)
    check_vm(vms["ok"], safety_policy(source))
    check_vm(vms["victim"], safety_policy(source))


def test_no_nova_instance_reads_another_instance_s_disk(tmp_path: Path) -> None:
    root = tmp_path / "instances"
    base = _qcow2(root / "_base" / "b")
    victim = _qcow2(root / "victim" / "disk", base)
    evil = _qcow2(root / "evil" / "disk", victim)
    for disk in (victim, evil):
        (disk.parent / "disk.info").write_text(json.dumps({str(disk): "qcow2"}))
    source = NovaSource(root)
    vms = {v.name: v for v in source.load()}
    assert "outside the allowed folders" in _refused(vms["evil"], source)
    check_vm(vms["victim"], safety_policy(source))


@pytest.mark.appliance  # libvirtd probes the real qemu to define a domain
def test_no_libvirt_domain_reads_another_domain_s_disk(libvirtd: str, tmp_path: Path) -> None:
    """libvirt's folders are shared by every domain (its storage pools): a real
    libvirtd lists two domains, one backed by the other's disk, which is refused."""
    pool = tmp_path / "images"
    victim = _qcow2(pool / "victim.qcow2")
    evil = _qcow2(pool / "evil.qcow2", victim)
    base = _qcow2(pool / "base.qcow2")
    ok = _qcow2(pool / "ok.qcow2", base)
    names = {f"{libvirtd}{n}": p for n, p in (("victim", victim), ("evil", evil), ("ok", ok))}
    try:
        for name, disk in names.items():
            xml = tmp_path / f"{name}.xml"
            xml.write_text(_domain(name, [(str(disk), "qcow2")], name))
            assert _virsh("define", str(xml)).returncode == 0
        source = LibvirtSource(URI)
        vms = {v.name: v for v in source.load() if v.name in names}
        assert f"is the disk of VM '{libvirtd}victim'" in _refused(vms[f"{libvirtd}evil"],
                                                                     source)
        check_vm(vms[f"{libvirtd}ok"], safety_policy(source))  # a shared base: fine
    finally:
        for name in names:
            _virsh("undefine", name)


def test_libvirt_uris_are_local_drivers_only(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    prog = tmp_path / "prog.sh"
    prog.write_text(f"#!/bin/sh\ntouch {marker}\n")
    prog.chmod(0o755)
    for uri in (f"qemu+ext:///system?command={prog}", "qemu+ssh://elsewhere/system",
                "qemu:///system?socket=/tmp/x", "test:///default", "qemu+tcp://h/system"):
        with pytest.raises(FleetError, match="not a local driver"):
            open_source(f"libvirt:{uri}")
    assert check_uri("qemu:///session") == "qemu:///session"
    r = subprocess.run([sys.executable, "-m", "guestpool", "scan",
                        f"libvirt:qemu+ext:///system?command={prog}", "--budget", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--allow-remote-libvirt" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    assert not marker.exists()


def test_allow_format_mismatch_reaches_the_policy(tmp_path: Path) -> None:
    """The CLI option flows through RoundOptions into the source's safety policy."""
    from guestpool.cli._main import _round_options

    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(tmp_path / "x.img"), "1M"],
                   check=True)
    source = FolderSource(tmp_path)
    (vm,) = source.load()  # .img: declared raw, but it carries a qcow2 header
    strict = _round_options(60, None, None, "pooled", None, 1, False, ())
    with pytest.raises(ImageError, match="declared raw but starts with a qcow2 header"):
        check_vm(vm, strict.safety(source))
    lenient = _round_options(60, None, None, "pooled", None, 1, True, ())
    assert check_vm(vm, lenient.safety(source)).disks[0].format == "raw"
