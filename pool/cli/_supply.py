"""The command line of SBOMs and vulnerabilities: ``guestpool vulns``, the
SBOM formats of ``guestpool export`` and the exposure part of ``report``."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from guestpool._errors import GuestpoolError
from guestpool.store._database import Store
from guestpool.supply._findings import all_vms

from ._output import console, out, warning

SBOM_FORMATS = ("cyclonedx", "spdx")
SUFFIX = {"cyclonedx": ".cdx.json", "spdx": ".spdx.json"}
SEVERITY_STYLE = {"critical": "bold red", "high": "red", "medium": "yellow", "low": "cyan",
                  "unknown": "dim"}


def file_name(vm: str, fmt: str) -> str:
    """A file name for ``vm``'s SBOM that cannot leave the output folder."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", vm).lstrip(".") or "_"
    return safe + SUFFIX[fmt]


def export_sbom(store: Store, fmt: str, spec: str, vms: Sequence[str], out_dir: Path | None
                ) -> int:
    """One VM's SBOM to stdout (without ``out_dir``), or every named VM's (all
    by default) to ``out_dir``/{vm}.cdx.json or .spdx.json. Returns the exit
    code: 1 when some VM had no SBOM to give (each said on stderr)."""
    from guestpool.supply._sbom import sbom

    names = list(vms) or list(all_vms(store))
    if out_dir is None:
        if len(names) != 1:
            raise GuestpoolError(f"{len(names)} VMs give {len(names)} documents: name one VM, "
                                 "or write them to a folder with --out DIR")
        click.echo(json.dumps(sbom(_latest(store, names[0]), fmt,  # type: ignore[arg-type]
                                   cyclonedx_version=spec), indent=1))
        return 0
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in names:
        try:
            doc = sbom(_latest(store, name), fmt, cyclonedx_version=spec)  # type: ignore[arg-type]
        except GuestpoolError as e:
            console.print(f"guestpool: {e}", highlight=False, soft_wrap=True)
            failed += 1
            continue
        (out_dir / file_name(name, fmt)).write_text(json.dumps(doc, indent=1) + "\n")
    console.print(f"wrote {len(names) - failed} {fmt} documents to {out_dir}"
                  + (f"; {failed} VMs without one" if failed else ""), highlight=False)
    return 1 if failed else 0


def _latest(store: Store, vm: str) -> dict[str, Any]:
    latest = store.latest(vm)
    if latest is None:
        raise GuestpoolError(f"no successful result for VM {vm!r}: scan it with "
                             "--inspectors os,packages first")
    return latest


@click.command()
@click.argument("vms", nargs=-1)
@click.option("--osv", type=click.Path(path_type=Path), required=True, metavar="DIR",
              help="Folder of OSV advisory exports (e.g. DIR/Debian/all.zip); never fetched.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Results store (SQLite; default: the data folder's guestpool.db).")
def vulns(vms: tuple[str, ...], osv: Path, as_json: bool, store_path: Path | None) -> None:
    """Known vulnerabilities of the stored package lists (all VMs, or VMS), offline.

    Matches each VM's latest `packages` result against the OSV advisories in
    DIR by ecosystem, package or source package, and version ranges compared
    with the distribution's own rules. Prints one row per advisory, worst first.
    """
    from guestpool.supply import _findings

    with console.status(f"reading OSV advisories in {osv}..."):
        index = _findings.index_for(osv)
    if (stale := _findings.osv_info(index)["stale"]) is not None:
        warning(stale)
    store = Store.existing(store_path)
    names = list(vms) or list(all_vms(store))
    reports = _findings.match_latest(store, index, names)
    store.close()
    view = _findings.fleet_view(index, reports)
    if as_json:
        click.echo(json.dumps(view, default=str))
        return
    _print_fleet(view, len(names))


def _print_fleet(view: dict[str, Any], asked: int) -> None:
    reports = view["vms"]
    matched = [r for r in reports if r["skipped"] is None]
    affected = sum(1 for r in matched if r["findings"])
    table = Table(title=f"vulnerabilities: {len(view['advisories'])} advisories, {affected} of "
                        f"{len(matched)} matched VMs affected")
    for col in ("severity", "advisory", "aliases", "VMs", "packages", "fixed in", "summary"):
        table.add_column(col, overflow="fold")
    for row in view["advisories"]:
        sev = row["severity"] + (f" {row['score']:.1f}" if row["score"] is not None else "")
        table.add_row(Text(sev, SEVERITY_STYLE[row["severity"]]), row["id"],
                      ", ".join(row["aliases"][:3]), str(row["vm_count"]),
                      ", ".join(row["packages"]), ", ".join(row["fixed"]) or "no fix yet",
                      row["summary"][:60])
    out.print(table)
    counts = ", ".join(f"{k}: {v}" for k, v in view["counts"].items())
    out.print(f"open findings by severity: {counts}", highlight=False)
    skipped: dict[str, list[str]] = defaultdict(list)
    for r in reports:
        if r["skipped"] is not None:
            skipped[r["skipped"]].append(r["vm"])
    never = asked - len(reports)
    for reason, names in sorted(skipped.items(), key=lambda kv: -len(kv[1])):
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        out.print(f"skipped {len(names)} VMs ({shown}): {reason}", highlight=False)
    if never:
        out.print(f"skipped {never} VMs: no successful result stored; scan them first",
                  highlight=False)


def print_exposure(store: Store) -> list[dict[str, Any]]:
    """The fleet's exposure over time (findings by severity per round), printed
    when any round was matched; returned for ``report --json``."""
    from guestpool.supply._matching import SEVERITIES

    rows = store.exposure()
    if rows:
        table = Table(title="exposure over time (open findings by severity per round)")
        for col in ("round", "matched", "VMs affected", *SEVERITIES):
            table.add_column(col, justify="right")
        for r in rows:
            table.add_row(str(r["round"]), str(r["vms"]), str(r["affected_vms"]),
                          *(str(r["severity"].get(s, 0)) for s in SEVERITIES))
        out.print(table)
    return rows
