"""What SBOMs and vulnerability matching need from one VM's stored results:
the distribution (os-release style id and version), the package format, and
each package's full version string as its package manager writes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from guestpool._errors import GuestpoolError

# libguestfs distro names (what the os inspector stores) -> os-release ID
_FROM_LIBGUESTFS = {
    "alpinelinux": "alpine", "archlinux": "arch", "kalilinux": "kali", "voidlinux": "void",
    "oraclelinux": "ol", "opensuse": "opensuse-leap", "redhat-based": "rhel",
    "centos": "centos", "rocky": "rocky", "almalinux": "almalinux",
}
# products libguestfs folds into one name, told apart by the product name
_BY_PRODUCT = {"alma": "almalinux", "tumbleweed": "opensuse-tumbleweed", "rocky": "rocky",
               "centos": "centos"}


@dataclass(frozen=True)
class Distro:
    """A VM's distribution: os-release ``ID`` and ``VERSION_ID``, package format."""

    id: str
    version: str
    package_format: str  # deb, rpm, apk, or what the packages inspector said
    arch: str = ""
    product_name: str = ""


def distro(latest: Mapping[str, Any]) -> Distro:
    """The distribution of one VM's latest result (``Store.latest`` shape)."""
    results = latest.get("results") or {}
    os_entry = results.get("os") or {}
    os_value = os_entry.get("value") if os_entry.get("ok") else None
    os_value = os_value if isinstance(os_value, Mapping) else {}
    pkg_format = str(os_value.get("package_format") or "")
    packages_value = _packages_value(latest)
    if packages_value is not None and packages_value.get("format") in ("deb", "rpm", "apk"):
        pkg_format = str(packages_value["format"])
    name = str(os_value.get("distro") or "unknown")
    os_id = _FROM_LIBGUESTFS.get(name, name)
    product = str(os_value.get("product_name") or "")
    if name in ("redhat-based", "opensuse"):
        os_id = next((v for k, v in _BY_PRODUCT.items() if k in product.lower()), os_id)
    return Distro(id=os_id, version=str(os_value.get("version") or ""),
                  package_format=pkg_format or "unknown", arch=str(os_value.get("arch") or ""),
                  product_name=product)


def _packages_value(latest: Mapping[str, Any]) -> Mapping[str, Any] | None:
    entry = (latest.get("results") or {}).get("packages") or {}
    value = entry.get("value") if entry.get("ok") else None
    return value if isinstance(value, Mapping) else None


def packages(latest: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The VM's package list; a GuestpoolError when it has none to work on."""
    vm = latest.get("vm", "?")
    value = _packages_value(latest)
    if value is None:
        raise GuestpoolError(f"VM {vm} has no successful `packages` result: scan it with the "
                             "packages inspector first (guestpool scan --inspectors os,packages)")
    if value.get("format") not in ("deb", "rpm", "apk"):
        raise GuestpoolError(f"VM {vm} has no package database guestpool can read "
                             f"(format {value.get('format')!r}); nothing to list")
    return [p for p in value.get("packages") or [] if isinstance(p, Mapping) and p.get("name")]


def full_version(package: Mapping[str, Any], package_format: str) -> str:
    """The version string the package manager shows: ``[epoch:]version[-release]``
    for deb and rpm (rpm's epoch 0 is left out, as ``rpm -q`` does), and
    ``version-rRELEASE`` for apk (whose release is stored as libguestfs lists it,
    without the ``r``; results stored before kept it)."""
    version = str(package.get("version") or "")
    release = str(package.get("release") or "")
    if package_format == "apk" and release and not release.startswith("r"):
        release = "r" + release
    text = f"{version}-{release}" if release else version
    epoch = package.get("epoch")
    if package_format != "apk" and epoch not in (None, "", 0, "0"):
        text = f"{epoch}:{text}"
    return text
