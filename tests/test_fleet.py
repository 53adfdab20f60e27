"""Fleet manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestpool import FleetError, load_manifest


def test_manifest_parsing(tmp_path: Path) -> None:
    m = tmp_path / "fleet.toml"
    m.write_text('[[vms]]\nname = "a"\ntrust_group = "t1"\n'
                 '[[vms.disks]]\npath = "a.qcow2"\nformat = "qcow2"\n')
    fleet = load_manifest(m)
    assert fleet.vms[0].disks[0].path == str(tmp_path / "a.qcow2")
    assert fleet.vms[0].trust_group == "t1"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"vms": [{"name": "a", "disks": [{"path": "x", "format": "vmdk"}]}]}))
    with pytest.raises(FleetError, match="format 'vmdk'"):
        load_manifest(bad)
    with pytest.raises(FleetError, match="cannot read"):
        load_manifest(tmp_path / "missing.json")
