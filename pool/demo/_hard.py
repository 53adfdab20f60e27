"""The demo fleet's hard kinds: real-fleet layouts taken from the fidelity corpus.

Each chosen corpus VM's disks are moved once into ``templates/`` of the fleet
folder; every VM of that kind is a qcow2 overlay per disk on them (cheap: a
few KiB each), marked ``clone_of`` its template so batching never puts two
of them in one appliance (identical UUIDs; btrfs refuses two devices with one
fsid; md and LVM see the same array and volume group twice). Key files are
copied next to the templates and named in the manifest's ``keys`` as the
corpus manifest does (paths relative to the manifest's folder).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guestpool.fleet._model import VM, Disk

from ._corpus import GENERATOR_VERSION as CORPUS_VERSION
from ._corpus import build_corpus
from ._images import _run
from ._kinds import HARD_KINDS, Spec

TEMPLATES = "templates"


def prepare_templates(outdir: Path, progress: Callable[[str], None] | None = None
                      ) -> dict[str, Any]:
    """Put the chosen corpus VMs' disks and keys under ``outdir/templates`` (once);
    return their corpus manifest entries and expected facts by corpus name."""
    tdir = outdir / TEMPLATES
    meta = tdir / "templates.json"
    if meta.exists():
        done: dict[str, Any] = json.loads(meta.read_text())
        if done.get("corpus_version") == CORPUS_VERSION:
            return dict(done["vms"])
    if progress:
        progress("copying the hard kinds' templates from the corpus (an appliance builds it "
                 "once if it is not cached)")
    shutil.rmtree(tdir, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".corpus-", dir=outdir) as tmp_s:
        tmp = Path(tmp_s)
        manifest = build_corpus(tmp, progress)
        entries = {e["name"]: e for e in json.loads(manifest.read_text())["vms"]}
        expected = json.loads((tmp / "expected.json").read_text())
        staging = tmp / TEMPLATES
        staging.mkdir()
        wanted = set(HARD_KINDS)  # a hard kind is named as its corpus VM
        for name in wanted:
            for ref in [*entries[name]["disks"], *entries[name].get("keys", ())]:
                src = tmp / ref.get("path", ref.get("file", ""))
                if not (staging / src.name).exists():
                    src.rename(staging / src.name)  # same filesystem: a move, not a copy
        chosen = {n: {"entry": entries[n], "expected": expected[n]} for n in sorted(wanted)}
        (staging / "templates.json").write_text(
            json.dumps({"corpus_version": CORPUS_VERSION, "vms": chosen}, indent=1))
        staging.rename(tdir)
    return chosen


def build_hard_vm(spec: Spec, outdir: Path, templates: dict[str, Any]) -> dict[str, Any]:
    """One hard-kind VM: an overlay per template disk; its manifest entry and truth."""
    entry, expected = templates[spec.kind]["entry"], templates[spec.kind]["expected"]
    disks = []
    for i, d in enumerate(entry["disks"]):
        overlay = outdir / f"{spec.name}{'' if i == 0 else f'-{i}'}.qcow2"
        overlay.unlink(missing_ok=True)
        # the backing path is relative to the overlay's folder and stays inside the fleet
        _run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", f"{TEMPLATES}/{d['path']}",
              "-F", d["format"], str(overlay)])
        disks.append(Disk(overlay.name, "qcow2"))
    vm = VM(spec.name, tuple(disks), tags=(spec.kind, "hard"),
            trust_group=f"tenant-{spec.index % 3}", clone_of=f"{spec.kind}-template").to_dict()
    if entry.get("keys"):
        vm["keys"] = [{**k, "file": f"{TEMPLATES}/{k['file']}"} for k in entry["keys"]]
    return {"vm": vm, "truth": hard_truth(spec.kind, expected)}


#: the corpus's exact facts, named as the os inspector names them
OS_FACTS = ("type", "distro", "major_version", "minor_version", "product_name", "hostname",
            "arch", "root", "mountpoints", "package_format")


def hard_truth(kind: str, expected: dict[str, Any]) -> dict[str, Any]:
    """A hard VM's ground truth: ``kind`` and ``os`` as for the easy kinds, but ``os``
    holds the corpus's exact facts (OS_FACTS: no ``version`` or ``package_management``,
    which the corpus does not fix) and ``corpus`` names the VM in expected.json.
    Only facts the corpus wrote are here: no users, files, services, full package
    list or filesystems (those keys are absent, never empty)."""
    truth: dict[str, Any] = {"kind": kind, "corpus": kind,
                             "os": {k: expected[k] for k in OS_FACTS if k in expected}}
    for k in ("roots", "findings", "package_count", "packages_sample", "luks", "windows"):
        if k in expected:
            truth[k] = expected[k]
    return truth
