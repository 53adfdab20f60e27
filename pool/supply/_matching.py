"""Known vulnerabilities of VMs' stored package lists, matched offline against
OSV advisories (see ``_osv`` for the folder layout).

A package is affected when the advisory names it (or its source package) in
the VM's ecosystem, and its installed version is in one of the advisory's
``ECOSYSTEM`` ranges or ``versions``, compared with that ecosystem's own rules
(univers: Debian with epochs and ``~``, RPM, Alpine), never as strings.

The index is built once; matches are memoised per (ecosystem, package,
version), so a fleet of clones costs little more than one VM.
"""

from __future__ import annotations

import functools
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypedDict

from cvss import CVSS2, CVSS3, CVSS4
from cvss.exceptions import CVSSError
from univers.versions import AlpineLinuxVersion, DebianVersion, InvalidVersion, RpmVersion, Version

from guestpool._errors import GuestpoolError

from . import _distro, _osv

SEVERITIES = ("critical", "high", "medium", "low", "unknown")  # worst first
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_VERSION = {"deb": DebianVersion, "rpm": RpmVersion, "apk": AlpineLinuxVersion}
Change = dict[str, Any]  # the shape of drift.Change


class Finding(TypedDict):
    """One advisory affecting one installed package of one VM."""

    id: str  # OSV id: DSA-5532-1, ALPINE-CVE-2023-5363, RHSA-2024:0001, ...
    aliases: list[str]  # CVE ids and other names of the same advisory
    summary: str
    package: str  # the installed (binary) package
    source: str | None  # the source package the advisory names, when matched through it
    ecosystem: str  # OSV ecosystem key: Debian:12, Alpine:v3.20, Red Hat:9
    installed: str
    fixed: str | None  # first fixed version after the installed one; None: no fix yet
    severity: str  # one of SEVERITIES
    score: float | None  # CVSS base score when the advisory gives a vector
    cvss: str | None  # the CVSS vector


class VmFindings(TypedDict):
    vm: str
    at: Any
    ecosystem: str | None
    packages: int
    findings: list[Finding]
    skipped: str | None  # why the VM was not matched (no packages, no advisories, ...)


# -- severity -------------------------------------------------------------------

_CVSS = {"CVSS_V4": CVSS4, "CVSS_V3": CVSS3, "CVSS_V2": CVSS2}
_WORDS = {"critical": "critical", "important": "high", "high": "high", "moderate": "medium",
          "medium": "medium", "low": "low", "negligible": "low", "minor": "low"}


def _level(score: float) -> str:
    return ("critical" if score >= 9.0 else "high" if score >= 7.0 else
            "medium" if score >= 4.0 else "low" if score > 0 else "unknown")


def severity(advisory: Mapping[str, Any], affected: Mapping[str, Any] | None = None
             ) -> tuple[str, float | None, str | None]:
    """(level, CVSS base score, CVSS vector) of an advisory: the affected
    entry's severity over the top-level one; a CVSS vector's score over a
    database's word (Ubuntu ``medium``, Red Hat ``Important``, GHSA ``HIGH``)."""
    word = None
    for source in (affected or {}, advisory):
        for entry in source.get("severity") or []:
            if not isinstance(entry, Mapping):
                continue
            kind, text = entry.get("type"), str(entry.get("score") or "")
            if kind in _CVSS:
                try:
                    cvss = _CVSS[kind](text)
                    score = float(cvss.base_score)
                except (CVSSError, ValueError, TypeError, KeyError, IndexError):
                    continue
                return _level(score), score, text
            word = word or _WORDS.get(text.lower())
        specific = source.get("database_specific") or source.get("ecosystem_specific")
        if isinstance(specific, Mapping) and isinstance(specific.get("severity"), str):
            word = word or _WORDS.get(specific["severity"].lower())
    return word or "unknown", None, None


# -- the index ------------------------------------------------------------------

@functools.lru_cache(maxsize=1 << 18)
def _parse(fam: str, text: str) -> Version | None:
    try:
        return _VERSION[fam](text)
    except (InvalidVersion, ValueError, TypeError):
        return None


@dataclass(frozen=True)
class _Advisory:
    id: str
    aliases: tuple[str, ...]
    summary: str


@dataclass(frozen=True)
class _Affected:
    advisory: _Advisory
    severity: tuple[str, float | None, str | None]
    versions: frozenset[str]
    # each range: events sorted by version, (kind, parsed or None for "0", text)
    ranges: tuple[tuple[tuple[str, Version | None, str], ...], ...]


_KIND_ORDER = {"introduced": 0, "last_affected": 1, "fixed": 2, "limit": 3}


class OsvIndex:
    """OSV advisories by (ecosystem key, package name), built once per folder."""

    def __init__(self) -> None:
        self._raw: dict[tuple[str, str], list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = (
            defaultdict(list))
        self._compiled: dict[tuple[str, str], list[_Affected]] = {}
        self._memo: dict[tuple[str, str, str], tuple[tuple[_Affected, str | None], ...]] = {}
        self.stats = _osv.ReadStats()
        self.advisories = 0
        self.ecosystems: Counter[str] = Counter()  # affected entries per ecosystem key
        self.newest: datetime | None = None  # newest ``modified`` seen: how fresh the data is
        self.folder: Path | None = None

    @property
    def warnings(self) -> Counter[str]:
        return self.stats.warnings

    def add(self, doc: Mapping[str, Any]) -> None:
        """Index one advisory document; malformed parts are counted in ``warnings``."""
        if doc.get("withdrawn"):
            self.warnings["withdrawn advisory ignored"] += 1
            return
        indexed = False
        for aff in doc.get("affected") or []:
            pkg = aff.get("package") if isinstance(aff, Mapping) else None
            if not (isinstance(pkg, Mapping) and isinstance(pkg.get("ecosystem"), str)
                    and isinstance(pkg.get("name"), str)):
                self.warnings["affected entry without package ecosystem and name"] += 1
                continue
            eco = _osv.normalise_ecosystem(pkg["ecosystem"])
            if _osv.family(eco) is None:
                continue  # PyPI, npm, ...: not a distribution's packages
            self._raw[(eco, pkg["name"])].append((doc, aff))
            self.ecosystems[eco] += 1
            indexed = True
        if indexed:
            self.advisories += 1
            modified = _timestamp(doc.get("modified"))
            if modified and (self.newest is None or modified > self.newest):
                self.newest = modified

    def _compile(self, key: tuple[str, str]) -> list[_Affected]:
        """Parse an entry's versions on first use: most names are never asked for."""
        compiled = self._compiled.get(key)
        if compiled is not None:
            return compiled
        fam = _osv.family(key[0]) or "deb"
        compiled = []
        for doc, aff in self._raw.get(key, []):
            try:
                compiled.append(self._affected(fam, doc, aff))
            except (TypeError, ValueError, AttributeError, KeyError):
                self.warnings["malformed affected entry ignored"] += 1
        self._compiled[key] = compiled
        return compiled

    def _affected(self, fam: str, doc: Mapping[str, Any], aff: Mapping[str, Any]) -> _Affected:
        aliases = doc.get("aliases") or []
        advisory = _Advisory(id=str(doc["id"]),
                             aliases=tuple(str(a) for a in aliases if isinstance(a, str)),
                             summary=str(doc.get("summary") or doc.get("details") or "")[:300])
        ranges = []
        for rng in aff.get("ranges") or []:
            if rng.get("type") != "ECOSYSTEM":
                continue  # GIT and SEMVER ranges say nothing about distribution versions
            events: list[tuple[str, Version | None, str]] = []
            for event in rng.get("events") or []:
                ((kind, text),) = event.items()
                if kind not in _KIND_ORDER or kind == "limit":
                    continue
                text = str(text)
                parsed = None if kind == "introduced" and text == "0" else _parse(fam, text)
                if parsed is None and not (kind == "introduced" and text == "0"):
                    self.warnings[f"unparseable {fam} version in a range ignored"] += 1
                    events = []
                    break
                events.append((kind, parsed, text))
            if events:
                events.sort(key=functools.cmp_to_key(_event_cmp))
                ranges.append(tuple(events))
        return _Affected(advisory=advisory, severity=severity(doc, aff),
                         versions=frozenset(str(v) for v in aff.get("versions") or []),
                         ranges=tuple(ranges))

    def affected(self, ecosystem: str, name: str, version: str
                 ) -> tuple[tuple[_Affected, str | None], ...]:
        """Entries affecting ``name`` at ``version`` in ``ecosystem``, each with its
        fixed version (None when unfixed). Memoised: clones share the work."""
        memo_key = (ecosystem, name, version)
        hit = self._memo.get(memo_key)
        if hit is not None:
            return hit
        entries = self._compile((ecosystem, name)) if (ecosystem, name) in self._raw else []
        out: list[tuple[_Affected, str | None]] = []
        if entries:
            fam = _osv.family(ecosystem) or "deb"
            installed = _parse(fam, version)
            for entry in entries:
                result = _is_affected(entry, installed, version)
                if result is not None:
                    out.append((entry, result[1]))
            if installed is None and not out:
                self.warnings[f"unparseable installed {fam} version"] += 1
        self._memo[memo_key] = hit = tuple(out)
        return hit


def _event_cmp(a: tuple[str, Version | None, str], b: tuple[str, Version | None, str]) -> int:
    if a[1] is None or b[1] is None:  # introduced "0" sorts first
        return (a[1] is not None) - (b[1] is not None)
    if a[1] < b[1]:
        return -1
    if b[1] < a[1]:
        return 1
    return _KIND_ORDER[a[0]] - _KIND_ORDER[b[0]]


def _in_range(events: tuple[tuple[str, Version | None, str], ...], v: Version
              ) -> tuple[bool, str | None]:
    """OSV's evaluation of one sorted ECOSYSTEM range: (affected, fixed version)."""
    affected = False
    for kind, at, text in events:
        if kind == "introduced":
            if at is None or v >= at:
                affected = True
            else:
                break
        elif kind == "fixed":
            assert at is not None
            if v >= at:
                affected = False
            else:
                return affected, text if affected else None
        elif kind == "last_affected":
            assert at is not None
            if v > at:
                affected = False
            else:
                break
    return affected, None


def _is_affected(entry: _Affected, installed: Version | None, text: str
                 ) -> tuple[bool, str | None] | None:
    fixed_for_listed = None
    if installed is not None:
        for events in entry.ranges:
            affected, fixed = _in_range(events, installed)
            if affected:
                return True, fixed
            if text in entry.versions and fixed_for_listed is None:
                fixed_for_listed = next((t for k, at, t in events
                                         if k == "fixed" and at is not None and at > installed),
                                        None)
    if text in entry.versions:
        return True, fixed_for_listed
    return None


def _timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def load_osv(folder: Path | str, limits: _osv.Limits | None = None) -> OsvIndex:
    """Index every advisory in ``folder``. A missing folder, or one without a
    single distribution advisory, is a GuestpoolError saying how to fill it."""
    index = OsvIndex()
    index.folder = Path(folder)
    for doc in _osv.read_advisories(folder, limits, index.stats):
        try:
            index.add(doc)
        except (TypeError, ValueError, AttributeError):
            index.warnings["malformed advisory ignored"] += 1
    if index.advisories == 0:
        raise GuestpoolError(f"no Linux distribution advisories in OSV folder {folder}: "
                             + _osv.how_to_fill(folder))
    return index


def staleness(index: OsvIndex, max_age_days: float = 7.0, now: datetime | None = None
              ) -> str | None:
    """A one-line warning when the newest advisory is older than ``max_age_days``."""
    if index.newest is None:
        return None
    age = ((now or datetime.now(UTC)) - index.newest).total_seconds() / 86400
    if age <= max_age_days:
        return None
    return (f"OSV data in {index.folder} is {age:.0f} days old (newest advisory modified "
            f"{index.newest:%Y-%m-%d}): {_osv.how_to_fill(index.folder or 'DIR')}")


# -- matching VMs ---------------------------------------------------------------

def ecosystem(dist: _distro.Distro) -> str | None:
    """The OSV ecosystem key of a distribution, None when OSV publishes none."""
    parts = dist.version.split(".")
    major = parts[0]
    if not major.isdigit():
        return None
    minor = parts[1] if len(parts) > 1 else ""
    match dist.id:
        case "debian":
            return f"Debian:{major}"
        case "ubuntu":
            return f"Ubuntu:{major}.{minor.zfill(2)}" if minor.isdigit() else None
        case "alpine":
            return f"Alpine:v{major}.{minor}" if minor.isdigit() else None
        case "rhel":
            return f"Red Hat:{major}"
        case "almalinux":
            return f"AlmaLinux:{major}"
        case "rocky":
            return f"Rocky Linux:{major}"
        case "opensuse-leap":
            return f"openSUSE:Leap {major}.{minor}" if minor.isdigit() else None
        case "sles":
            sp = f" SP{minor}" if minor.isdigit() and minor != "0" else ""
            return f"SUSE:Linux Enterprise Server {major}{sp}"
    return None


def _finding(entry: _Affected, fixed: str | None, pkg: str, source: str | None, eco: str,
             installed: str) -> Finding:
    level, score, vector = entry.severity
    adv = entry.advisory
    return Finding(id=adv.id, aliases=list(adv.aliases), summary=adv.summary, package=pkg,
                   source=source, ecosystem=eco, installed=installed, fixed=fixed,
                   severity=level, score=score, cvss=vector)


def match_vm(index: OsvIndex, latest: Mapping[str, Any]) -> VmFindings:
    """Findings of one VM's latest result (``Store.latest`` shape). Raises
    GuestpoolError when the VM has no package list; an ecosystem OSV (or the
    folder) has no advisories for is reported in ``skipped``."""
    packages = _distro.packages(latest)
    dist = _distro.distro(latest)
    eco = ecosystem(dist)
    report = VmFindings(vm=str(latest.get("vm")), at=latest.get("at"), ecosystem=eco,
                        packages=len(packages), findings=[], skipped=None)
    if eco is None:
        report["skipped"] = (
            "no `os` result tells its distribution: scan it with the os inspector"
            if dist.id == "unknown" else
            f"OSV publishes no advisories for {dist.id} {dist.version}".strip() + "; not matched")
        return report
    if not index.ecosystems.get(eco):
        base = eco.split(":", 1)[0]
        report["skipped"] = (f"no {eco} advisories in the OSV folder: add "
                             f"{_osv.OSV_URL.format(ecosystem=base.replace(' ', '%20'))} "
                             f"as {base}/all.zip")
        return report
    fam = _osv.family(eco) or "deb"
    seen: set[tuple[str, str]] = set()
    for p in packages:
        name = str(p["name"])
        installed = _distro.full_version(p, fam)
        source = p.get("source")
        candidates: list[tuple[str, str | None, str]] = [(name, None, installed)]
        if isinstance(source, str) and source and source != name:
            src_version = str(p.get("source_version") or installed)
            candidates.append((source, source, src_version))
        for lookup, via, version in candidates:
            for entry, fixed in index.affected(eco, lookup, version):
                if (entry.advisory.id, name) in seen:
                    continue
                seen.add((entry.advisory.id, name))
                report["findings"].append(_finding(entry, fixed, name, via, eco, version))
    report["findings"].sort(key=_finding_order)
    return report


def _finding_order(f: Finding) -> tuple[int, float, str, str]:
    return _RANK[f["severity"]], -(f["score"] or 0.0), f["id"], f["package"]


def match_fleet(index: OsvIndex, latests: Iterable[Mapping[str, Any] | None]
                ) -> list[VmFindings]:
    """Findings of many VMs with one index; a VM without packages is reported
    as skipped instead of stopping the fleet."""
    out = []
    for latest in latests:
        if latest is None:
            continue
        try:
            out.append(match_vm(index, latest))
        except GuestpoolError as e:
            out.append(VmFindings(vm=str(latest.get("vm")), at=latest.get("at"), ecosystem=None,
                                  packages=0, findings=[], skipped=str(e)))
    return out


def fleet_table(reports: Iterable[VmFindings]) -> list[dict[str, Any]]:
    """One row per advisory: how many VMs it affects, which packages, fixed
    versions; worst first (severity, CVSS score, VMs affected)."""
    rows: dict[str, dict[str, Any]] = {}
    for report in reports:
        for f in report["findings"]:
            row = rows.setdefault(f["id"], {
                "id": f["id"], "aliases": f["aliases"], "severity": f["severity"],
                "score": f["score"], "summary": f["summary"], "vms": set(), "packages": set(),
                "fixed": set()})
            row["vms"].add(report["vm"])
            row["packages"].add(f["package"])
            if f["fixed"]:
                row["fixed"].add(f["fixed"])
    table = [{**r, "vm_count": len(r["vms"]), "vms": sorted(r["vms"]),
              "packages": sorted(r["packages"]), "fixed": sorted(r["fixed"])}
             for r in rows.values()]
    table.sort(key=lambda r: (_RANK[r["severity"]], -(r["score"] or 0.0), -r["vm_count"],
                              r["id"]))
    return table


def severity_counts(reports: Iterable[VmFindings]) -> dict[str, int]:
    """Open findings by severity over the fleet, every level present (for a gauge)."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for report in reports:
        for f in report["findings"]:
            counts[f["severity"]] += 1
    return counts


def finding_key(f: Mapping[str, Any]) -> str:
    return f"{f['id']}:{f['package']}"


def diff_findings(before: Iterable[Mapping[str, Any]], after: Iterable[Mapping[str, Any]]
                  ) -> list[Change]:
    """Drift of one VM's findings between two rounds, as drift.Change dicts:
    ``finding-new`` (after only) and ``finding-fixed`` (before only)."""
    old = {finding_key(f): f for f in before}
    new = {finding_key(f): f for f in after}
    changes: list[Change] = []
    for key in sorted(set(old) | set(new)):
        if key in old and key in new:
            continue
        kind = "finding-new" if key in new else "finding-fixed"
        changes.append({"inspector": "vulns", "kind": kind, "key": key,
                        "before": _brief(old.get(key)), "after": _brief(new.get(key))})
    return changes


def _brief(f: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {k: f.get(k) for k in ("id", "package", "installed", "fixed", "severity")}
