"""Inventory inspectors: packages, users, files, services. Each parses small
guest files itself, with caps, rather than going through Augeas."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from guestpool._errors import InspectorError

from . import _rpmdb as rpmdb
from ._api import Inspector
from ._bdb import BDBError, hash_values
from ._files import GuestReadError
from ._guest import Guest
from ._ndb import NDBError, ndb_blobs
from ._sandbox import sqlite_blobs

MiB = 1024 * 1024


def _split_deb_version(full: str) -> tuple[int | None, str, str]:
    epoch: int | None = None
    if ":" in full:
        e, _, full = full.partition(":")
        epoch = int(e) if e.isdigit() else None
    version, _, release = full.rpartition("-") if "-" in full else (full, "", "")
    return epoch, version, release


class PackagesInspector(Inspector):
    name = "packages"
    version = "4"
    description = ("Installed packages (name, epoch, version, release, arch) from dpkg, rpm "
                   "(sqlite, ndb, Berkeley DB), apk, pacman, or Windows's Uninstall keys")
    deadline = 90.0
    drift_noun = "package"

    @staticmethod
    def drift_keys(value: Any) -> dict[str, Any]:
        out = {}
        for p in (value or {}).get("packages", []):
            v = (f"{p.get('version')}-{p.get('release')}" if p.get("release")
                 else str(p.get("version")))
            out[f"{p['name']}:{p.get('arch', '')}"] = f"{p['epoch']}:{v}" if p.get("epoch") else v
        return out

    @dataclass
    class Options:
        max_packages: int = 20_000
        max_db_mb: int = 128

    def run(self, guest: Guest, options: PackagesInspector.Options) -> Any:
        root = guest.mount()
        if root is None:
            return {"format": "none", "count": 0, "packages": []}
        cap = options.max_db_mb * MiB
        found: list[dict[str, Any]] | None
        if root.kind == "windows":
            from ._guest import windows_systemroot
            from ._windows import windows_applications

            systemroot = windows_systemroot(guest)
            fmt, found = "windows", windows_applications(guest, systemroot) if systemroot else []
        elif guest.is_file("/var/lib/dpkg/status"):
            fmt, found = "deb", self._dpkg(guest.read_text("/var/lib/dpkg/status", cap),
                                           options.max_packages)
        elif guest.is_file("/lib/apk/db/installed"):
            fmt, found = "apk", self._apk(guest.read_text("/lib/apk/db/installed", cap),
                                          options.max_packages)
        elif guest.is_dir("/var/lib/pacman/local"):
            fmt, found = "pacman", self._pacman(guest, options.max_packages)
        else:
            fmt, found = "rpm", self._rpm(guest, cap, options.max_packages)
        if found is None:
            return {"format": "unknown", "count": 0, "packages": []}
        truncated = len(found) > options.max_packages
        pkgs = sorted(_bounded(found[: options.max_packages]),
                      key=lambda p: (p["name"], p["version"]))
        out = {"format": fmt, "count": len(pkgs), "packages": pkgs}
        if truncated:  # said, never silent: the list is not the whole database
            out["truncated"] = f"more than {options.max_packages} packages; the first " \
                               f"{options.max_packages} listed (option max_packages)"
        return out

    @staticmethod
    def _dpkg(text: str, limit: int = 20_000) -> list[dict[str, Any]]:
        """Installed packages, at most ``limit`` + 1 (more says the list is cut):
        stanzas are read one at a time, so a huge database of tiny stanzas costs
        its text and ``limit`` rows, never a list of every stanza."""
        out: list[dict[str, Any]] = []
        for stanza in _records(text):
            if len(out) > limit:
                break
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "\t")):
                    fields[key] = value.strip()
            # installed: "install ok installed", and minimal stanzas' "installed ok"
            # (what virt-inspector counts); not "not-installed" or "config-files"
            if "Package" in fields and "installed" in fields.get("Status", "").split():
                epoch, version, release = _split_deb_version(fields.get("Version", ""))
                row: dict[str, Any] = {"name": fields["Package"], "version": version,
                                       "release": release, "epoch": epoch,
                                       "arch": fields.get("Architecture", "")}
                # Debian's advisories name source packages: libssl3 is openssl's
                source, _, source_version = fields.get("Source", "").partition(" ")
                if source:
                    row["source"] = source
                    if source_version.startswith("("):  # a binNMU: "bash (5.2.15-2)"
                        row["source_version"] = source_version.strip("()")
                out.append(row)
        return out

    @staticmethod
    def _apk(text: str, limit: int = 20_000) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for record in _records(text):
            if len(out) > limit:
                break
            fields = dict(line.split(":", 1) for line in record.splitlines() if ":" in line[:2])
            if "P" in fields:
                # "1.36.1-r29": version 1.36.1, release 29 (as libguestfs lists it)
                version, _, release = fields.get("V", "").rpartition("-")
                release = release[1:] if re.fullmatch(r"r[0-9]+", release) else release
                row: dict[str, Any] = {"name": fields["P"], "version": version,
                                       "release": release, "epoch": None,
                                       "arch": fields.get("A", "")}
                if fields.get("o"):  # origin: the aport Alpine's advisories name
                    row["source"] = fields["o"]
                out.append(row)
        return out

    @staticmethod
    def _pacman(guest: Guest, limit: int) -> list[dict[str, Any]]:
        """Arch's database: one folder per package, its ``desc`` holding
        ``%NAME%``, ``%VERSION%`` (``[epoch:]version-release``), ``%ARCH%``."""
        out = []
        for entry in guest.listdir("/var/lib/pacman/local", limit=limit):
            if entry in ("ALPM_DB_VERSION", ".", ".."):
                continue
            try:
                lines = guest.read_lines(f"/var/lib/pacman/local/{entry}/desc", 256 * 1024)
            except GuestReadError:
                continue
            fields: dict[str, str] = {}
            for i, line in enumerate(lines[:-1]):
                if line in ("%NAME%", "%VERSION%", "%ARCH%"):
                    fields[line.strip("%")] = lines[i + 1]
            if "NAME" not in fields:
                continue
            full = fields.get("VERSION", "")
            epoch: int | None = None
            if ":" in full:
                e, _, full = full.partition(":")
                epoch = int(e) if e.isdigit() and len(e) < 10 else None
            version, _, release = full.rpartition("-") if "-" in full else (full, "", "")
            out.append({"name": fields["NAME"], "version": version, "release": release,
                        "epoch": epoch, "arch": fields.get("ARCH", "")})
        return out

    @staticmethod
    def _rpm(guest: Guest, cap: int, limit: int) -> list[dict[str, Any]] | None:
        """The rpm database: SQLite (Fedora 33+, RHEL 9), read in a sandbox; else
        SUSE's ndb ``Packages.db`` (Leap/SLES 15+), else the Berkeley DB ``Packages``
        of CentOS/RHEL 7 and older, both walked in Python."""
        paths = [d + f for f in ("rpmdb.sqlite", "Packages.db", "Packages")
                 for d in ("/var/lib/rpm/", "/usr/lib/sysimage/rpm/")]
        kinds = guest.kinds(paths)  # one round trip per folder
        path = next((p for p in paths if kinds.get(p) == "file"), None)
        if path is None:
            return None
        data = guest.read_bytes(path, cap)
        blobs: list[bytes]
        if path.endswith(".sqlite"):
            blobs = sqlite_blobs(data, limit=limit, deadline=min(30.0, guest.time_left()))
        else:
            try:
                blobs = (ndb_blobs if path.endswith(".db") else hash_values)(data, limit=limit)
            except (NDBError, BDBError) as e:
                capped = f" (only its first {cap // MiB} MiB read)" if len(data) >= cap else ""
                raise InspectorError(f"{path}: {e}{capped}") from None
        pkgs = [p for blob in blobs if (p := rpmdb.parse_header(blob)) is not None]
        return [{"name": p["name"], "version": p.get("version", ""),
                 "release": p.get("release", ""), "epoch": p.get("epoch"),
                 "arch": p.get("arch", "")} for p in pkgs]


#: Longest name, version, release or arch a package database may hold: real ones
#: are under 300 bytes; anything longer is a hostile database, not a package.
MAX_FIELD = 4096


def _records(text: str) -> Iterator[str]:
    """The blank-line-separated records of ``text``, one at a time."""
    start = 0
    while start < len(text):
        end = text.find("\n\n", start)
        if end < 0:
            end = len(text)
        yield text[start:end]
        start = end + 2


def _bounded(packages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for p in packages:
        for key in ("name", "version", "release", "arch"):
            if len(str(p.get(key) or "")) > MAX_FIELD:
                raise InspectorError(f"package database holds a {key} of "
                                     f"{len(str(p[key]))} characters (over {MAX_FIELD}): "
                                     "refusing a hostile database")
    return packages


def fingerprint(key_b64: str) -> str | None:
    """OpenSSH's SHA256 fingerprint of a base64 public key blob."""
    try:
        blob = base64.b64decode(key_b64 + "=" * (-len(key_b64) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


_KEY_TYPES = re.compile(r"^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-\S+|sk-\S+)$")


def parse_authorized_keys(lines: list[str]) -> list[dict[str, Any]]:
    keys = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        idx = next((i for i, w in enumerate(words) if _KEY_TYPES.match(w)), None)
        if idx is None or idx + 1 >= len(words):
            keys.append({"type": "invalid", "fingerprint": None, "comment": line[:80]})
            continue
        keys.append({"type": words[idx], "fingerprint": fingerprint(words[idx + 1]),
                     "comment": " ".join(words[idx + 2:])[:200],
                     "options": " ".join(words[:idx])[:200] or None})
    return keys


class UsersInspector(Inspector):
    name = "users"
    version = "1"
    description = ("Accounts, extra uid-0 accounts, empty passwords, authorized_keys "
                   "(type, fingerprint) and sudoers grants")
    drift_noun = "user"

    @staticmethod
    def drift_keys(value: Any) -> dict[str, Any]:
        value = value or {}
        out: dict[str, Any] = {f"account:{a['name']}": {"uid": a["uid"], "shell": a.get("shell")}
                               for a in value.get("accounts", [])}
        for user, keys in (value.get("authorized_keys") or {}).items():
            for k in keys:
                out[f"key:{user}:{k.get('fingerprint')}"] = k.get("type")
        for g in value.get("sudoers", []):
            out[f"sudo:{g['rule']}"] = g["file"]
        return out

    @dataclass
    class Options:
        max_accounts: int = 10_000
        max_keys_per_user: int = 100
        #: homes probed for authorized_keys (each probe is an appliance round trip)
        max_key_homes: int = 200

    def run(self, guest: Guest, options: UsersInspector.Options) -> Any:
        if guest.mount() is None:
            return None
        accounts: list[dict[str, Any]] = []
        for line in guest.read_lines("/etc/passwd", 16 * MiB, options.max_accounts):
            f = line.split(":")
            if len(f) >= 7 and f[2].lstrip("-").isdigit():
                accounts.append({"name": f[0], "uid": int(f[2]), "gid": int(f[3])
                                 if f[3].lstrip("-").isdigit() else None,
                                 "home": f[5], "shell": f[6]})
        shadow: dict[str, str] = {}
        try:
            for line in guest.read_lines("/etc/shadow", 16 * MiB, options.max_accounts):
                f = line.split(":")
                if len(f) >= 2:
                    shadow[f[0]] = f[1]
        except GuestReadError:
            pass
        keys: dict[str, list[dict[str, Any]]] = {}
        homes = 0
        for acc in accounts:
            home = acc["home"] if acc["home"].startswith("/") else None
            if home is None or acc["shell"].endswith(("nologin", "false")):
                continue
            homes += 1
            if homes > options.max_key_homes:
                keys["..."] = [{"type": "capped", "fingerprint": None,
                                "comment": f"more than {options.max_key_homes} homes"}]
                break
            path = home.rstrip("/") + "/.ssh/authorized_keys"
            try:
                lines = guest.read_lines(path, MiB, options.max_keys_per_user)
            except GuestReadError:
                continue
            keys[acc["name"]] = parse_authorized_keys(lines)
        return {
            "accounts": accounts,
            "uid0_not_root": sorted(a["name"] for a in accounts
                                    if a["uid"] == 0 and a["name"] != "root"),
            "empty_password": sorted(n for n, h in shadow.items() if h == ""),
            "no_shadow_entry": sorted(a["name"] for a in accounts
                                      if shadow and a["name"] not in shadow),
            "authorized_keys": keys,
            "sudoers": self._sudoers(guest),
        }

    @staticmethod
    def _sudoers(guest: Guest) -> list[dict[str, str]]:
        grants = []
        for path in ["/etc/sudoers", *guest.glob("/etc/sudoers.d/*", limit=100)]:
            try:
                lines = guest.read_lines(path, MiB, 5000)
            except GuestReadError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith(("#", "Defaults")) and "ALL" in line.upper():
                    grants.append({"file": path, "rule": line[:300]})
        return grants[:1000]


DEFAULT_FILES = ["/etc/ssh/sshd_config", "/etc/sudoers", "/etc/passwd", "/etc/crontab"]
DEFAULT_GLOBS = ["/etc/cron.d/*", "/var/spool/cron/crontabs/*", "/var/spool/cron/*"]


class FilesInspector(Inspector):
    name = "files"
    version = "1"
    description = "sha256, size, mode and owner of configured paths and globs"
    drift_noun = "file"

    @staticmethod
    def drift_keys(value: Any) -> dict[str, Any]:
        return {path: e.get("sha256", e.get("error")) for path, e in (value or {}).items()}

    @dataclass
    class Options:
        paths: list[str] = field(default_factory=lambda: list(DEFAULT_FILES))
        globs: list[str] = field(default_factory=lambda: list(DEFAULT_GLOBS))
        max_files: int = 200
        max_size_mb: int = 64

    def run(self, guest: Guest, options: FilesInspector.Options) -> Any:
        if guest.mount() is None:
            return None
        paths = list(options.paths)
        for pattern in options.globs:
            paths += guest.glob(pattern, limit=options.max_files)
        out: dict[str, Any] = {}
        for path in dict.fromkeys(paths):
            if len(out) >= options.max_files:
                out["..."] = {"error": f"more than {options.max_files} files; capped"}
                break
            try:
                st = guest.stat(path)
            except GuestReadError:
                continue  # absent: not a finding
            entry: dict[str, Any] = {"size": st["size"], "mode": oct(st["mode"] & 0o7777),
                                     "uid": st["uid"], "gid": st["gid"]}
            try:
                entry["sha256"] = guest.checksum(path, "sha256", options.max_size_mb * MiB)
            except GuestReadError as e:
                entry["error"] = str(e)[:200]
            out[path] = entry
        return out


class ServicesInspector(Inspector):
    """Chosen because "what starts at boot and what runs on a schedule" is the
    first question of every persistence or compliance check, and it is cheap:
    symlinks under /etc/systemd/system and a few crontab files."""

    name = "services"
    version = "1"
    description = "Enabled systemd units (per target) and cron jobs"

    @dataclass
    class Options:
        max_entries: int = 2000

    def run(self, guest: Guest, options: ServicesInspector.Options) -> Any:
        if guest.mount() is None:
            return None
        units: dict[str, list[str]] = {}
        for wants in guest.glob("/etc/systemd/system/*.wants", limit=200):
            wants = wants.rstrip("/")
            target = wants.rsplit("/", 1)[-1].removesuffix(".wants")
            units[target] = sorted(guest.listdir(wants, limit=options.max_entries))
        cron = []
        files = ["/etc/crontab", *guest.glob("/etc/cron.d/*", limit=200),
                 *guest.glob("/var/spool/cron/crontabs/*", limit=200)]
        for path in files:
            try:
                lines = guest.read_lines(path, MiB, options.max_entries)
            except GuestReadError:
                continue
            for line in lines:
                line = line.strip()
                if line and not line.startswith("#") and not re.match(r"^\w+=", line):
                    cron.append({"file": path, "entry": line[:300]})
        return {"enabled_units": units, "cron": cron[: options.max_entries]}
