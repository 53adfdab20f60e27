"""Pool arguments (no appliance)."""

from __future__ import annotations

import pytest

from guestpool import Pool, SetupError, default_pool_size


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(SetupError):
        Pool(0)
    with pytest.raises(SetupError):
        Pool(1, strategy="warm")  # type: ignore[arg-type]
    assert 1 <= default_pool_size() <= 12


def test_workers_inherit_no_credentials() -> None:
    from guestpool._appliance import worker_environment

    env = worker_environment("/tmp/w", {
        "PATH": "/usr/bin", "GUESTPOOL_TOKEN": "s3cret", "GUESTPOOL_ACCEL": "tcg",
        "LIBGUESTFS_BACKEND": "direct", "AWS_SECRET_ACCESS_KEY": "x", "OS_PASSWORD": "y",
        "MY_API_TOKEN": "z", "LD_PRELOAD": "/evil.so", "PYTHONPATH": "/plugins"})
    assert env["PATH"] == "/usr/bin" and env["GUESTPOOL_ACCEL"] == "tcg"
    assert env["LIBGUESTFS_BACKEND"] == "direct" and env["PYTHONPATH"] == "/plugins"
    assert env["TMPDIR"] == env["GUESTPOOL_WORKDIR"] == "/tmp/w"
    for secret in ("GUESTPOOL_TOKEN", "AWS_SECRET_ACCESS_KEY", "OS_PASSWORD", "MY_API_TOKEN",
                   "LD_PRELOAD"):
        assert secret not in env


async def test_a_spawned_worker_process_holds_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    from guestpool import WorkerAppliance

    monkeypatch.setenv("GUESTPOOL_TOKEN", "s3cret-in-the-supervisor")
    app = await WorkerAppliance.spawn()  # a worker process; no appliance boots
    try:
        environ = Path(f"/proc/{app.pid}/environ").read_bytes()
    finally:
        await app.kill()
    assert b"GUESTPOOL_PARENT_PID" in environ
    assert b"s3cret-in-the-supervisor" not in environ
