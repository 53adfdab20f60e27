"""The accelerator verdict: overrides and its cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from guestpool import SetupError
from guestpool._accel import resolve_accel


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
    monkeypatch.setattr("guestpool._accel.probe_kvm",
                        lambda: calls.append(1) or (False, "hangs"))
    assert resolve_accel().source == "probe"
    assert resolve_accel().source == "cache"
    assert resolve_accel().accel == "tcg"
    assert len(calls) == 1
