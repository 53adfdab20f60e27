"""The accelerator verdict: overrides and its cache."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guestpool import SetupError
from guestpool.appliance._accel import resolve_accel


def test_accel_override(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUESTPOOL_ACCEL", "tcg")
    assert resolve_accel().accel == "tcg"
    assert resolve_accel("kvm").source == "override"
    with pytest.raises(SetupError, match="unknown accelerator"):
        resolve_accel("hvf")


def test_accel_cache_is_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUESTPOOL_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("GUESTPOOL_ACCEL", raising=False)
    calls = []
    monkeypatch.setattr("guestpool.appliance._accel.probe_kvm",
                        lambda: calls.append(1) or (False, "hangs"))
    assert resolve_accel().source == "probe"
    assert resolve_accel().source == "cache"
    assert resolve_accel().accel == "tcg"
    assert len(calls) == 1


@pytest.mark.appliance
def test_the_kvm_probe_answers_within_its_deadline() -> None:
    """The probe itself, on this host: it boots the host kernel under KVM and reports
    in time either way (KVM hangs silently on some hosts), leaving no qemu behind."""
    import subprocess
    import time

    from guestpool.appliance._accel import probe_kvm

    t = time.monotonic()
    ok, why = probe_kvm(deadline=8)
    assert time.monotonic() - t < 15
    assert why
    if not os.path.exists("/dev/kvm"):
        assert not ok and "does not exist" in why
    elif ok:
        assert why == "host kernel started under KVM"
    else:
        assert "KVM" in why or "kvm" in why
    left = subprocess.run(["pgrep", "-f", "-P", str(os.getpid()), "qemu-system"],
                          capture_output=True, text=True)
    assert left.stdout == ""
