"""Fidelity: the cheap pooled path against libguestfs's own inspection, per field.

The reference is what ``virt-inspector --key`` would say: a fresh handle per
VM, its disks read-only in manifest order (so appliance names are the VM's
own), LUKS opened with the manifest's keys, ``inspect_os`` and every
``inspect_get_*``, then ``inspect_list_applications2`` with the root's
filesystems mounted read-only. The cheap path is one pooled appliance running
the ``os`` and ``packages`` inspectors. Both are reduced to the same shape
(the ``os`` / ``packages`` inspectors' result contract) and compared field by
field.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestpool import VM, load_manifest
from guestpool.inspectors._osfacts import INSPECT_FIELDS, WINDOWS_INSPECT_FIELDS

#: the os fields of one root, named as libguestfs's inspect_get_* calls
OS_FIELDS = (*INSPECT_FIELDS, "root", "mountpoints")
WINDOWS_FIELDS = WINDOWS_INSPECT_FIELDS
PACKAGE_FIELDS = ("package_count", "packages")
COMPARED = (*OS_FIELDS, *WINDOWS_FIELDS, "roots", *PACKAGE_FIELDS)
#: expected.json fields and where each sits in a normalised result
EXPECTED_FIELDS = ("type", "distro", "major_version", "minor_version", "product_name",
                   "hostname", "arch", "root", "mountpoints", "package_format",
                   "package_count", "packages_sample", "roots")


@dataclass(frozen=True)
class Key:
    """A LUKS key of a VM: ``device`` (VM-relative, None: any LUKS device) and the secret."""

    device: str | None
    secret: str


def manifest_keys(manifest: Path) -> dict[str, list[Key]]:
    """The manifest's per-VM ``keys`` (files relative to the manifest, like disks)."""
    data = json.loads(manifest.read_text())
    out: dict[str, list[Key]] = {}
    for entry in data.get("vms", []):
        keys = []
        for k in entry.get("keys", []):
            path = Path(k["file"])
            if not path.is_absolute():
                path = manifest.parent / path
            keys.append(Key(k.get("device"), path.read_text()))
        out[entry["name"]] = keys
    return out


# -- the reference: libguestfs ------------------------------------------------------

def _open_luks(g: Any, keys: list[Key]) -> list[str]:
    """Open every LUKS device a key fits, as virt-inspector --key does, then rescan
    LVM; repeat so LUKS on an LV opened from LUKS (or on LVM) is reached too."""
    tried: set[str] = set()
    opened: list[str] = []
    while True:
        found = False
        for dev in [*g.list_devices(), *g.list_partitions(), *g.list_md_devices(), *g.lvs()]:
            if dev in tried:
                continue
            tried.add(dev)
            try:
                if g.vfs_type(dev) != "crypto_LUKS":
                    continue
                name = f"luks-{g.vfs_uuid(dev)}"
            except RuntimeError:
                continue
            for key in keys:
                if key.device not in (None, dev):
                    continue
                try:
                    g.cryptsetup_open(dev, key.secret, name, readonly=True)
                except RuntimeError:
                    continue
                opened.append(dev)
                found = True
                break
        if not found:
            return opened
        g.lvm_scan(True)


def _md_names(g: Any) -> dict[str, str]:
    """/dev/mdNNN -> /dev/md/NAME (the array's own name, without its homehost)."""
    out = {}
    for dev in g.list_md_devices():
        name = g.md_detail(dev).get("name")
        if name:
            out[dev] = "/dev/md/" + name.split(":")[-1]
    return out


def _rename(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, dict):
        return {k: _rename(v, names) for k, v in value.items()}
    return value


def _root_facts(g: Any, root: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"root": root}
    for f in OS_FIELDS:
        if f in ("root", "mountpoints"):
            continue
        facts[f] = getattr(g, f"inspect_get_{f}")(root)
    facts["mountpoints"] = dict(g.inspect_get_mountpoints(root))
    if facts["type"] == "windows":
        facts["windows_systemroot"] = g.inspect_get_windows_systemroot(root)
        facts["windows_current_control_set"] = g.inspect_get_windows_current_control_set(root)
        facts["drive_mappings"] = dict(g.inspect_get_drive_mappings(root))
    return facts


def _applications(g: Any, root: str, mountpoints: dict[str, str]) -> list[dict[str, Any]]:
    for mp, dev in sorted(mountpoints.items(), key=lambda x: len(x[0])):
        with contextlib.suppress(RuntimeError):  # virt-inspector skips what it cannot mount
            g.mount_ro(dev, mp)
    try:
        apps = g.inspect_list_applications2(root)
    finally:
        g.umount_all()
    return [{"name": a["app2_name"], "epoch": a["app2_epoch"], "version": a["app2_version"],
             "release": a["app2_release"], "arch": a["app2_arch"],
             "display_name": a["app2_display_name"]} for a in apps]


def reference(vm: VM, keys: list[Key]) -> dict[str, Any]:
    """libguestfs's answer for one VM on a fresh handle (a boot per VM)."""
    import guestfs

    from guestpool.appliance._accel import resolve_accel

    start = time.monotonic()
    g = guestfs.GuestFS(python_return_dict=True)
    out: dict[str, Any] = {"vm": vm.name}
    try:
        g.set_backend("direct")
        if resolve_accel().accel == "tcg":
            g.set_backend_settings(["force_tcg"])
        for disk in vm.disks:
            g.add_drive_opts(disk.path, format=disk.format, readonly=True)
        g.launch()
        out["luks_opened"] = _open_luks(g, keys)
        names = _md_names(g)
        roots = []
        for root in g.inspect_os():
            facts = _root_facts(g, root)
            try:
                pkgs = _applications(g, root, facts["mountpoints"])
            except RuntimeError as e:  # libguestfs lists none: record why, keep the OS facts
                pkgs = []
                facts["applications_error"] = str(e)
            roots.append((_rename(facts, names), pkgs))
        if roots:
            first, pkgs = roots[0]
            out["os"] = {**first, "roots": [r for r, _ in roots]}
            out["packages"] = {"format": first["package_format"], "count": len(pkgs),
                               "packages": pkgs}
            if "applications_error" in first:
                out["packages"]["error"] = first["applications_error"]
        else:
            out["os"] = {"type": "none", "roots": []}
            out["packages"] = {"format": None, "count": 0, "packages": []}
    except RuntimeError as e:
        out["error"] = str(e)
    finally:
        g.close()
    out["seconds"] = round(time.monotonic() - start, 2)
    return out


# -- the cheap path: one pooled appliance ------------------------------------------

async def cheap(vms: Iterable[VM]) -> dict[str, dict[str, Any]]:
    """The os and packages inspectors through one pooled appliance, per VM."""
    from guestpool import Pool

    out: dict[str, dict[str, Any]] = {}
    async with Pool(1, max_jobs=10**6) as pool:
        for vm in vms:
            r = await pool.inspect(dataclasses.replace(vm, trust_group="bench"),
                                   ["os", "packages"])
            entry: dict[str, Any] = {"vm": vm.name}
            if not r.ok:
                entry["error"] = (r.error or {}).get("message", "failed")
            for name in ("os", "packages"):
                res = r.results.get(name) or {}
                if res.get("ok"):
                    entry[name] = res["value"]
                elif res:
                    entry.setdefault("error", f"{name}: {res.get('error')}")
            entry["seconds"] = round(sum(r.timings.get(k, 0.0)
                                         for k in ("attach", "inspect", "detach")), 2)
            out[vm.name] = entry
    return out


# -- comparing --------------------------------------------------------------------

def _epoch(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return -1


def package_set(result: dict[str, Any]) -> set[tuple[str, int, str, str, str]]:
    pk = (result.get("packages") or {}).get("packages") or []
    return {(str(p.get("name")), _epoch(p.get("epoch")), str(p.get("version") or ""),
             str(p.get("release") or ""), str(p.get("arch") or "")) for p in pk}


def field_value(result: dict[str, Any], f: str) -> Any:
    """One compared field of a normalised result (reference or cheap)."""
    os_ = result.get("os") or {}
    if f == "roots":
        return sorted(str(r.get("root")) for r in os_.get("roots") or [])
    if f == "package_count":
        return (result.get("packages") or {}).get("count")
    if f == "packages":
        return package_set(result)
    value = os_.get(f)
    if f in ("major_version", "minor_version") and value is not None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return value


def _applies(f: str, ref: dict[str, Any], cheap_: dict[str, Any]) -> bool:
    if f in WINDOWS_FIELDS:
        return "windows" in (field_value(ref, "type"), field_value(cheap_, "type"))
    return True


def _show(v: Any) -> Any:
    if isinstance(v, set):
        return sorted(v)
    return v


def compare(ref: dict[str, dict[str, Any]], cheap_: dict[str, dict[str, Any]]
            ) -> dict[str, Any]:
    """Per field: how many VMs agree, and both values where they do not."""
    fields: dict[str, Any] = {}
    common = [vm for vm in ref if vm in cheap_]
    for f in COMPARED:
        agree, compared, disagree = 0, 0, []
        for vm in common:
            a, b = ref[vm], cheap_[vm]
            if not _applies(f, a, b):
                continue
            compared += 1
            va, vb = field_value(a, f), field_value(b, f)
            if va == vb:
                agree += 1
            elif f == "packages":
                disagree.append({"vm": vm, "reference_only": _show(va - vb),
                                 "cheap_only": _show(vb - va)})
            else:
                disagree.append({"vm": vm, "reference": _show(va), "cheap": _show(vb)})
        fields[f] = {"agree": agree, "compared": compared, "disagree": disagree}
    return fields


def check_expected(expected: dict[str, dict[str, Any]], got: dict[str, dict[str, Any]]
                   ) -> dict[str, Any]:
    """Per expected.json field: which VMs' results differ from the ground truth
    (``packages_sample``: which sample packages are missing; ``findings``: which
    expected finding kinds are missing)."""
    fields: dict[str, Any] = {f: {"agree": 0, "compared": 0, "disagree": []}
                              for f in (*EXPECTED_FIELDS, "findings")}
    for vm, want in expected.items():
        if vm not in got:
            continue
        result, os_ = got[vm], got[vm].get("os") or {}
        for f in fields:
            want_v = want.get(f)
            if want_v is None or (f == "findings" and not want_v):
                continue
            have: Any
            if f == "roots":
                have = len(os_.get("roots") or [])
            elif f == "packages_sample":
                pk = package_set(result)
                have = [p["name"] for p in want_v if (p["name"], _epoch(p["epoch"]),
                        p["version"], p["release"], p["arch"]) not in pk]
                want_v = []
            elif f == "findings":
                kinds = {x.get("kind") for x in os_.get("findings") or []}
                have = [k for k in want_v if k not in kinds]
                want_v = []
            else:
                have = field_value(result, f)
            fields[f]["compared"] += 1
            if have == want_v:
                fields[f]["agree"] += 1
            elif f in ("packages_sample", "findings"):
                fields[f]["disagree"].append({"vm": vm, "missing": have})
            else:
                fields[f]["disagree"].append({"vm": vm, "expected": want_v, "got": _show(have)})
    return fields


def timing(ref: dict[str, dict[str, Any]], cheap_: dict[str, dict[str, Any]]
           ) -> dict[str, Any]:
    per_vm = {vm: {"cheap_s": cheap_.get(vm, {}).get("seconds"),
                   "reference_s": ref.get(vm, {}).get("seconds")}
              for vm in [*ref, *(v for v in cheap_ if v not in ref)]}
    cheap_s = [v["cheap_s"] for v in per_vm.values() if v["cheap_s"] is not None]
    ref_s = [v["reference_s"] for v in per_vm.values() if v["reference_s"] is not None]
    return {"per_vm": per_vm,
            "cheap_median_s": statistics.median(cheap_s) if cheap_s else None,
            "cheap_max_s": max(cheap_s) if cheap_s else None,
            "reference_median_s": statistics.median(ref_s) if ref_s else None}


def run(manifest: Path, only: str | None = None, side: str = "both",
        progress: Callable[[str], None] | None = None,
        stored_reference: Path | None = None) -> dict[str, Any]:
    """Both sides on every VM of a corpus manifest (or one VM), compared. With
    ``stored_reference`` (a ``fidelity-reference.json`` of the same corpus
    version), libguestfs's answers are read from it instead of measured again
    (35 s a VM under TCG)."""
    import anyio

    vms = load_manifest(manifest).vms
    if only is not None:
        vms = [vm for vm in vms if vm.name == only]
    keys = manifest_keys(manifest)
    ref: dict[str, dict[str, Any]] = {}
    cheap_: dict[str, dict[str, Any]] = {}
    if stored_reference is not None:
        stored = json.loads(stored_reference.read_text())
        ref = {vm.name: stored[vm.name] for vm in vms if vm.name in stored}
    elif side in ("both", "reference"):
        for vm in vms:
            ref[vm.name] = reference(vm, keys.get(vm.name, []))
            if progress:
                r = ref[vm.name]
                progress(f"reference {vm.name}: {(r.get('os') or {}).get('type', r.get('error'))} "
                         f"in {r['seconds']:.1f} s")
    if side in ("both", "cheap"):
        cheap_ = anyio.run(lambda: cheap(vms), backend="trio")
    return {"reference": ref, "cheap": cheap_,
            "fields": compare(ref, cheap_) if ref and cheap_ else {},
            "timing": timing(ref, cheap_)}
