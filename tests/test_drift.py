"""Drift: every kind of change inspectors/README.md names, from the generic diff and the
inspectors' own keys."""

from __future__ import annotations

from typing import Any

from guestpool.store._drift import diff, diff_results


def _entry(value: Any, version: str = "1", ok: bool = True) -> dict[str, Any]:
    return {"version": version, "ok": ok, "value": value}


def _kinds(inspector: str, before: Any, after: Any) -> dict[str, str]:
    return {c["key"]: c["kind"] for c in diff(inspector, before, after)}


def test_user_drift_kinds() -> None:
    before = {"accounts": [{"name": "root", "uid": 0, "shell": "/bin/bash"},
                           {"name": "old", "uid": 1001, "shell": "/bin/sh"}],
              "authorized_keys": {"root": [{"type": "ssh-ed25519", "fingerprint": "SHA256:a"}]},
              "sudoers": [{"rule": "admin ALL=(ALL) ALL", "file": "/etc/sudoers"}]}
    after = {"accounts": [{"name": "root", "uid": 0, "shell": "/bin/zsh"},
                          {"name": "new", "uid": 1002, "shell": "/bin/sh"}],
             "authorized_keys": {"root": [{"type": "ssh-rsa", "fingerprint": "SHA256:b"}]},
             "sudoers": []}
    assert _kinds("users", before, after) == {
        "account:root": "user-changed", "account:old": "user-removed",
        "account:new": "user-added", "key:root:SHA256:a": "user-removed",
        "key:root:SHA256:b": "user-added", "sudo:admin ALL=(ALL) ALL": "user-removed"}


def test_filesystem_drift_ignores_free_space() -> None:
    def fs(device: str, uuid: str, used: int, size: int = 100) -> dict[str, Any]:
        return {"device": device, "type": "ext4", "uuid": uuid, "label": "", "size": size,
                "used": used, "free": size - used}

    before = [fs("/dev/sda1", "u1", 10), fs("/dev/sda2", "u2", 10)]
    after = [fs("/dev/sda1", "u1", 90), fs("/dev/sda2", "u2", 10, size=200),
             fs("/dev/sdb1", "u3", 1)]
    assert _kinds("filesystems", before, after) == {
        "UUID=u2": "filesystem-changed", "UUID=u3": "filesystem-added"}
    assert _kinds("filesystems", after, before)["UUID=u3"] == "filesystem-removed"


def test_filesystem_drift_follows_the_uuid_not_the_device_name() -> None:
    """A disk that moved (or an older scan that named it differently) is no drift;
    two filesystems sharing a UUID (a cloned disk attached twice) keep their names."""
    def fs(device: str, uuid: str) -> dict[str, Any]:
        return {"device": device, "type": "ext4", "uuid": uuid, "label": "", "size": 1}

    assert _kinds("filesystems", [fs("/dev/sdc1", "u1")], [fs("/dev/sda1", "u1")]) == {
        "UUID=u1": "filesystem-changed"}  # the device field itself changed, once
    twins = [fs("/dev/sda1", "same"), fs("/dev/sdb1", "same")]
    assert _kinds("filesystems", twins, twins) == {}


def test_package_and_file_drift() -> None:
    def pkgs(*versions: tuple[str, str]) -> dict[str, Any]:
        return {"packages": [{"name": n, "version": v, "release": "", "epoch": None,
                              "arch": "amd64"} for n, v in versions]}

    assert _kinds("packages", pkgs(("a", "1"), ("b", "1")), pkgs(("a", "2"), ("c", "1"))) == {
        "a:amd64": "package-changed", "b:amd64": "package-removed", "c:amd64": "package-added"}
    assert _kinds("files", {"/etc/x": {"sha256": "1"}}, {"/etc/x": {"sha256": "2"}}) == {
        "/etc/x": "file-changed"}


def test_other_inspectors_drift_by_flattened_keys() -> None:
    assert _kinds("os", {"hostname": "a", "arch": "x86_64"}, {"hostname": "b",
                                                                "arch": "x86_64"}) == {
        "hostname": "value-changed"}
    # a plugin that is not installed here still drifts, generically
    assert _kinds("not-installed-plugin", {"n": 1}, {"n": 2}) == {"n": "value-changed"}


def test_os_drift_names_each_change_once() -> None:
    """The first root's facts are the value's top level and the first entry of
    ``roots``: a hostname change is one change, not two; another root's facts
    are keyed by its device."""
    def root(device: str, hostname: str) -> dict[str, Any]:
        return {"root": device, "type": "linux", "hostname": hostname,
                "mountpoints": {"/": device}}

    def os_value(*roots: dict[str, Any]) -> dict[str, Any]:
        return {**roots[0], "roots": list(roots), "findings": [], "method": "cheap"}

    before = os_value(root("/dev/sda2", "a"), root("/dev/sdb1", "b"))
    after = os_value(root("/dev/sda2", "changed"), root("/dev/sdb1", "b"))
    assert _kinds("os", before, after) == {"hostname": "value-changed"}
    second = os_value(root("/dev/sda2", "a"), root("/dev/sdb1", "other"))
    assert _kinds("os", before, second) == {"roots[/dev/sdb1].hostname": "value-changed"}
    assert _kinds("os", before, os_value(root("/dev/sda2", "a"))) == {
        "roots[/dev/sdb1].hostname": "value-removed", "roots[/dev/sdb1].mountpoints./":
        "value-removed", "roots[/dev/sdb1].root": "value-removed",
        "roots[/dev/sdb1].type": "value-removed"}
    assert _kinds("os", {"type": "none", "roots": []}, {"type": "none", "roots": []}) == {}


def test_upgrades_and_failures_are_not_drift() -> None:
    before = {"os": _entry({"hostname": "a"}), "users": _entry({}, ok=False)}
    after = {"os": _entry({"hostname": "b"}, version="2"), "users": _entry({"accounts": []})}
    assert [c["kind"] for c in diff_results(before, after)] == ["inspector-upgraded"]
