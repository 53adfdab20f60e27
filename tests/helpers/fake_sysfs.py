"""A fake sysfs and udev database in a folder, for running discovery's shell
scripts with the host's ``sh`` (no appliance)."""

from __future__ import annotations

from pathlib import Path


def add_disk(root: Path, name: str, major_minor: str, record: str | None,
             parts: dict[str, tuple[str, str | None]] | None = None) -> None:
    """A disk under ``root`` (and its partitions: name -> (major:minor, udev record
    or None for "udev has not written it"))."""
    for node, mm, rec in [(f"sys/block/{name}", major_minor, record)] + [
            (f"sys/block/{name}/{p}", pmm, prec) for p, (pmm, prec) in (parts or {}).items()]:
        (root / node).mkdir(parents=True, exist_ok=True)
        (root / node / "dev").write_text(mm + "\n")
        if rec is not None:
            data = root / "run/udev/data"
            data.mkdir(parents=True, exist_ok=True)
            (data / f"b{mm}").write_text(rec, encoding="utf-8")


def in_tree(script: str, root: Path) -> str:
    """``script`` reading the fake tree under ``root`` instead of the real one."""
    return script.replace("/sys/block", f"{root}/sys/block").replace(
        "/run/udev/data", f"{root}/run/udev/data")
