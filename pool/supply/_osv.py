"""Reading OSV advisory exports from a folder the user fills, offline.

Layout (any mix; the ecosystem comes from each advisory, not the path)::

    DIR/Debian/all.zip        as published at OSV_URL.format(ecosystem="Debian")
    DIR/Alpine-all.zip        any other *.zip name works too
    DIR/Ubuntu/*.json         an unzipped export: one advisory per file

Advisories are external data: zip members and files are read with size and
count bounds, and a malformed entry is skipped and counted, never fatal.
"""

from __future__ import annotations

import json
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestpool._errors import GuestpoolError

MiB = 1024 * 1024
OSV_URL = "https://osv-vulnerabilities.storage.googleapis.com/{ecosystem}/all.zip"
DISTRO_ECOSYSTEMS = ("Debian", "Ubuntu", "Alpine", "Red Hat", "AlmaLinux", "Rocky Linux",
                     "SUSE", "openSUSE")


@dataclass(frozen=True)
class Limits:
    """Bounds on what a folder of advisories may make guestpool read."""

    max_files: int = 500_000  # zip and JSON files walked (unzipped Ubuntu: ~60,000)
    max_advisories: int = 2_000_000  # JSON documents read, over all zips and files
    max_advisory_bytes: int = 4 * MiB  # one advisory (real ones are a few KiB)
    max_total_bytes: int = 8 * 1024 * MiB  # uncompressed, over everything read


@dataclass
class ReadStats:
    files: int = 0
    advisories: int = 0
    bytes: int = 0
    warnings: Counter[str] = field(default_factory=Counter)


def how_to_fill(folder: Path | str) -> str:
    """One line telling the user how to put advisories in ``folder``."""
    url = OSV_URL.format(ecosystem="Debian")
    return (f"download OSV exports into {folder}, one folder per ecosystem, e.g. "
            f"`mkdir -p {folder}/Debian && curl -fo {folder}/Debian/all.zip {url}` "
            f"(likewise {', '.join(repr(e) for e in DISTRO_ECOSYSTEMS[1:])}; "
            "URL-encode spaces as %20); zips are read as they are, or unzip them there")


def _files(folder: Path, limits: Limits, stats: ReadStats) -> Iterator[Path]:
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            if not name.endswith((".zip", ".json")):
                continue
            stats.files += 1
            if stats.files > limits.max_files:
                stats.warnings[f"more than {limits.max_files} files; rest ignored"] += 1
                return
            yield Path(root, name)


def _parse(data: bytes, stats: ReadStats) -> dict[str, Any] | None:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        stats.warnings["not valid JSON"] += 1
        return None
    if not (isinstance(doc, dict) and isinstance(doc.get("id"), str)
            and isinstance(doc.get("affected", []), list)):
        stats.warnings["not an OSV advisory (no id or affected list)"] += 1
        return None
    return doc


def _take(size: int, limits: Limits, stats: ReadStats) -> bool:
    """Account for one document of ``size`` bytes; False when a bound says skip."""
    if size > limits.max_advisory_bytes:
        stats.warnings[f"advisory over {limits.max_advisory_bytes // MiB} MiB skipped"] += 1
        return False
    if stats.advisories >= limits.max_advisories or stats.bytes + size > limits.max_total_bytes:
        stats.warnings["advisory count or total size bound reached; rest ignored"] += 1
        return False
    stats.advisories += 1
    stats.bytes += size
    return True


def _from_zip(path: Path, limits: Limits, stats: ReadStats) -> Iterator[dict[str, Any]]:
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                if not _take(info.file_size, limits, stats):
                    if stats.advisories >= limits.max_advisories:
                        return
                    continue
                with zf.open(info) as f:  # the header's size may lie: read a bounded amount
                    data = f.read(limits.max_advisory_bytes + 1)
                if len(data) > limits.max_advisory_bytes:
                    stats.warnings["zip member larger than its header said; skipped"] += 1
                    continue
                doc = _parse(data, stats)
                if doc is not None:
                    yield doc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError,
            NotImplementedError, RuntimeError) as e:
        stats.warnings[f"unreadable zip ({type(e).__name__})"] += 1


def read_advisories(folder: Path | str, limits: Limits | None = None,
                    stats: ReadStats | None = None) -> Iterator[dict[str, Any]]:
    """Every advisory document in ``folder`` (zips and JSON files, recursively).
    Raises GuestpoolError, saying how to fill it, when the folder is missing."""
    folder, limits = Path(folder), limits or Limits()
    stats = stats if stats is not None else ReadStats()
    if not folder.is_dir():
        raise GuestpoolError(f"OSV folder {folder} does not exist: {how_to_fill(folder)}")
    for path in _files(folder, limits, stats):
        if path.suffix == ".zip":
            yield from _from_zip(path, limits, stats)
            continue
        try:
            size = path.stat().st_size
            if not _take(size, limits, stats):
                continue
            with path.open("rb") as f:
                data = f.read(limits.max_advisory_bytes + 1)
        except OSError:
            stats.warnings["unreadable file"] += 1
            continue
        doc = _parse(data, stats)
        if doc is not None:
            yield doc


def normalise_ecosystem(name: str) -> str:
    """The key guestpool matches a VM's ecosystem against. Most OSV ecosystem
    names are used as they are (``Debian:12``, ``Alpine:v3.19``,
    ``AlmaLinux:9``); Ubuntu drops ``:LTS`` (``Ubuntu:22.04``), and Red Hat's
    per-repository names fold to the release (``Red Hat:enterprise_linux:9::
    appstream`` -> ``Red Hat:9``). Ubuntu Pro and Red Hat EUS streams keep
    names no VM maps to: their fixes are not in the public repositories."""
    if name.startswith("Ubuntu:"):
        return name.removesuffix(":LTS")
    if name.startswith("Red Hat:"):
        parts = name.split(":")
        if len(parts) >= 3 and parts[1] == "enterprise_linux":
            return f"Red Hat:{parts[2].split('.')[0]}"
    return name


def family(ecosystem: str) -> str | None:
    """Which version rules an ecosystem's versions follow: deb, rpm, apk, or None
    for ecosystems that are not Linux distributions (PyPI, npm, ...)."""
    base = ecosystem.split(":", 1)[0]
    if base in ("Debian", "Ubuntu"):
        return "deb"
    if base == "Alpine":
        return "apk"
    if base in ("Red Hat", "AlmaLinux", "Rocky Linux", "SUSE", "openSUSE", "Mageia",
                "openEuler", "Fedora", "Oracle Linux"):
        return "rpm"
    return None
