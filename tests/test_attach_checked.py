"""Attach exactly what was checked (issue 29, item 1): the worker hands qemu the
checked files as descriptors and names the whole chain itself, so neither an
image swapped after its check nor a header rewritten in place makes qemu read
another file. Real appliances (the session's shared pool); the swap happens
right after the pool's checks, before the worker attaches."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers.pool_thread import PoolThread

from guestpool import VM, Disk
from guestpool.appliance._descriptors import ChainRefused, chain_options, check_nodes
from guestpool.appliance._protocol import DiskRef, Layer
from guestpool.demo._images import image_from_tree


def _tree(tmp: Path, hostname: str) -> Path:
    root = tmp / f"tree-{hostname}"
    (root / "etc").mkdir(parents=True)
    (root / "etc/os-release").write_text('ID=debian\nVERSION_ID=12\n')
    (root / "etc/hostname").write_text(hostname + "\n")
    return root


def _base(tmp: Path, hostname: str) -> Path:
    """A raw disk whose root filesystem names ``hostname``."""
    return Path(image_from_tree(_tree(tmp, hostname), tmp / hostname, 16).path)


def _overlay(path: Path, backing: Path) -> Path:
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(backing),
                    str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("attach")
    vm_dir, outside = tmp / "vm", tmp / "outside"
    vm_dir.mkdir()
    outside.mkdir()
    return {"checked": _base(vm_dir, "checked"), "outside": _base(outside, "outside"),
            "folder": vm_dir}


@pytest.fixture
def after_check(shared_pool: PoolThread, monkeypatch: pytest.MonkeyPatch
                ) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Run a change right after the pool's checks of the next VM, before its attach."""
    pool = shared_pool.pool
    assert pool is not None
    checked = pool._checked

    def arrange(change: Callable[[], None]) -> None:
        async def then_change(vm: VM) -> Any:
            out = await checked(vm)
            change()
            return out
        monkeypatch.setattr(pool, "_checked", then_change)

    yield arrange


def _hostname(shared_pool: PoolThread, vm: VM) -> tuple[Any, Any]:
    r = shared_pool.inspect(vm, ["os"])
    return r, (r.results.get("os", {}).get("value") or {}).get("hostname")


@pytest.mark.appliance
def test_an_image_swapped_after_its_check_is_refused(
        shared_pool: PoolThread, images: dict[str, Path],
        after_check: Callable[[Callable[[], None]], None], tmp_path: Path) -> None:
    disk = _overlay(images["folder"] / "swapped.qcow2", images["checked"])
    swapped = _overlay(tmp_path / "swap.qcow2", images["outside"])  # backed outside the VM
    vm = VM("swapped", (Disk(str(disk), "qcow2"),))
    assert _hostname(shared_pool, vm)[1] == "checked"
    after_check(lambda: os.replace(swapped, disk))
    r, hostname = _hostname(shared_pool, vm)
    assert hostname != "outside"
    assert not r.ok and r.error["kind"] == "image", r.error
    assert "replaced after it was checked" in r.error["message"]


@pytest.mark.appliance
def test_a_header_rewritten_in_place_after_its_check_is_not_followed(
        shared_pool: PoolThread, images: dict[str, Path],
        after_check: Callable[[Callable[[], None]], None]) -> None:
    """The same file (same inode), its header now naming a backing file outside the
    VM: qemu reads the checked backing file, never the one the header names now."""
    disk = _overlay(images["folder"] / "rewritten.qcow2", images["checked"])
    vm = VM("rewritten", (Disk(str(disk), "qcow2"),))

    def rebase() -> None:
        subprocess.run(["qemu-img", "rebase", "-u", "-F", "raw", "-b", str(images["outside"]),
                        str(disk)], check=True)

    after_check(rebase)
    r, hostname = _hostname(shared_pool, vm)
    assert r.ok, r.error
    assert hostname == "checked"


@pytest.mark.appliance
def test_a_backing_chain_is_attached_layer_by_layer(
        shared_pool: PoolThread, images: dict[str, Path], tmp_path: Path) -> None:
    """Three layers (qcow2 on qcow2 on raw) read through the descriptors."""
    base = tmp_path / "base.raw"
    shutil.copy(images["checked"], base)
    middle = _overlay(tmp_path / "middle.qcow2", base)
    top = tmp_path / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(middle),
                    str(top)], check=True)
    r, hostname = _hostname(shared_pool, VM("layers", (Disk(str(top), "qcow2"),)))
    assert r.ok and hostname == "checked", r.error


# -- the pieces, without an appliance -----------------------------------------------------

def _layer(path: str, fmt: str, role: str) -> Layer:
    return Layer(path, fmt, role, 1, 2)


def test_the_chain_is_given_explicitly_to_the_bottom() -> None:
    disk = DiskRef("/f/top.qcow2", "qcow2", chain=[
        _layer("/f/top.qcow2", "qcow2", "disk"), _layer("/f/top.data", "raw", "data"),
        _layer("/f/base.qcow2", "qcow2", "backing"), _layer("/f/base.raw", "raw", "backing")])
    opts = chain_options(disk, "gp-d0", [7, 8, 9, 10], {})
    assert opts["node-name"] == "gp-d0" and opts["driver"] == "qcow2"
    assert opts["file"]["filename"] == "/dev/fdset/7"
    assert opts["data-file"]["filename"] == "/dev/fdset/8"
    middle = opts["backing"]
    assert middle["driver"] == "qcow2" and middle["file"]["filename"] == "/dev/fdset/9"
    bottom = middle["backing"]
    assert bottom["driver"] == "raw" and bottom["file"]["filename"] == "/dev/fdset/10"
    assert "backing" not in bottom and all(o["read-only"] for o in (opts, middle, bottom))
    alone = chain_options(DiskRef("/f/a.qcow2", "qcow2", chain=[
        _layer("/f/a.qcow2", "qcow2", "disk")]), "gp-d1", [3], {"force-share": True})
    assert alone["backing"] is None  # never the header's
    assert alone["force-share"] and alone["file"]["force-share"]


def test_a_node_qemu_opened_by_path_is_refused() -> None:
    disk = DiskRef("/f/a.qcow2", "qcow2")
    before = {"appliance": ("qcow2", "/tmp/overlay")}
    ok = {**before, "gp-d0": ("qcow2", "json:{}"), "#block1": ("file", "/dev/fdset/4")}
    check_nodes(before, ok, [4], disk)
    for extra in (("file", "/etc/shadow"), ("nbd", ""), ("file", "/dev/fdset/5")):
        with pytest.raises(ChainRefused, match="changed after it was checked"):
            check_nodes(before, {**ok, "#block2": extra}, [4], disk)
