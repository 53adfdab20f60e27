"""The command line of the operator's view: ``guestpool vms``, the fleet part of
``report`` and ``show VM``. Every figure comes from ``_fleetview`` (the console's
code path); guest-derived strings are printed as plain text, never as markup."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from guestpool._errors import GuestpoolError
from guestpool.store import _fleetview as fv
from guestpool.store._database import Store

from ._output import fit_output, out, wide_option

STATE_STYLE = {"inspected": "green", "unchanged": "cyan", "failed": "red", "never": "yellow"}


def _t(value: Any) -> Text:
    """A cell from data (guest-derived or not): no markup, no control characters."""
    return Text("" if value is None else str(value))


def _table(title: str, columns: Iterable[str]) -> Table:
    """A table whose cells are never cut: too long for the terminal, they fold."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


class AgeParam(click.ParamType):  # type: ignore[type-arg]
    name = "AGE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None
                ) -> float:
        if isinstance(value, float):
            return value
        try:
            return fv.parse_age(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)


@click.command("vms")
@click.option("--distro", default="",
              help="Only this distro, any case: debian, alpine, rhel, suse (SLES and openSUSE).")
@click.option("--version", "version", default="", help="Only this OS version (e.g. 12).")
@click.option("--search", default="", help="Text in the VM name, hostname or OS name.")
@click.option("--state", type=click.Choice(fv.STATES), default=None,
              help="Only VMs whose latest attempt left them in this state.")
@click.option("--stale", type=AgeParam(), default=None,
              help="Only VMs not inspected or verified unchanged for this long (or never): "
                   "1h, 30m, 2d.")
@click.option("--failed", is_flag=True, help="Only VMs whose latest attempt failed.")
@click.option("--sort", type=click.Choice(list(fv.SORTS)), default="name", show_default=True,
              help="age: stalest first.")
@click.option("--desc", is_flag=True, help="Reverse the order.")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="At most this many VMs (default: all).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Results store (SQLite; default: the data folder's guestpool.db).")
@wide_option
def vms_cmd(distro: str, version: str, search: str, state: str | None, stale: float | None,
            failed: bool, sort: str, desc: bool, limit: int | None, as_json: bool,
            store_path: Path | None, wide: bool) -> None:
    """The fleet, one VM a line: trust group, OS, packages, last inspected, state."""
    fit_output(wide)
    store = Store.existing(store_path)
    now = time.time()
    q = fv.FleetQuery(search=search, distro=distro, version=version, state=state or "",
                      stale_s=stale, failed=failed, sort=sort, desc=desc,
                      limit=limit or 10**9)
    rows, total = fv.fleet_page(store, q, now)
    store.close()
    if as_json:
        click.echo(json.dumps({"total": total, "vms": [
            {**r, "inspected_iso": fv.iso(r["inspected_at"]),
             "verified_iso": fv.iso(r["verified_at"])} for r in rows]}, indent=1))
        return
    failures = any(r["state"] == "failed" for r in rows)
    table = _table(f"VMs ({len(rows)} of {total} matching)",
                   ("VM", "trust group", "OS", "packages", "last inspected", "state",
                    *(("failure (latest attempt)",) if failures else ())))
    for r in rows:
        table.add_row(_t(r["vm"]), _t(r["trust_group"]), _t(fv.os_label(r)),
                      _t(r["packages"]), _t(f"{fv.ago(r['inspected_at'], now)}  "
                                            f"{fv.iso(r['inspected_at'])}"
                                            if r["inspected_at"] else "never"),
                      Text(r["state"], style=STATE_STYLE.get(r["state"], "")),
                      *((_t(failure_text(r, now)),) if failures else ()))
    out.print(table)


def failure_text(row: dict[str, Any], now: float) -> str:
    """"image: qcow2 header corrupt (4 min ago)" for a VM whose latest attempt failed."""
    if row["state"] != "failed":
        return ""
    return f"{row['error_kind'] or 'unknown'}: {row['error'] or ''} ({fv.ago(row['last_at'], now)})"


def print_fleet_report(store: Store, report: dict[str, Any]) -> None:
    """The fleet view of `guestpool report`: distros, freshness, failures, drift."""
    n = report["vms"] or 1
    table = _table(f"fleet: {report['vms']} VMs", ("measure", "VMs", "share"))
    for label, key in (("current as of the last round", "last_round"),
                       ("current as of the last hour (before it)", "last_hour"),
                       ("current as of longer ago", "older"), ("never inspected", "never")):
        v = report["freshness"][key]
        table.add_row(label, str(v), f"{100 * v / n:.0f}%")
    for state, v in report["states"].items():
        table.add_row(f"state: {state}", str(v), f"{100 * v / n:.0f}%")
    out.print(table)
    table = _table("VMs by distro and version", ("OS", "VMs"))
    for d in report["by_distro"]:
        table.add_row(_t(fv.os_label(d) or "(not inspected)"), str(d["vms"]))
    out.print(table)
    if report["failures"]:
        table = _table("failures by reason (latest attempt)", ("reason", "VMs", "e.g.",
                                                               "message"))
        for f in report["failures"]:
            table.add_row(_t(f["reason"]), str(f["vms"]), _t(f["example"]),
                          _t((f["message"] or "")[:80]))
        out.print(table)
    drift = report["most_drift"]
    if drift["vms"]:
        table = _table(f"most drift (last {drift['rounds']} rounds)",
                       ("VM", "changes", "last change"))
        for d in drift["vms"]:
            table.add_row(_t(d["vm"]), str(d["changes"]), fv.ago(d["last_at"]))
        out.print(table)


def show_vm(store: Store, name: str, as_json: bool) -> None:
    """`guestpool show VM`: a readable summary, or everything as JSON."""
    detail = fv.vm_detail(store, name)
    if detail is None:
        raise GuestpoolError(f"no VM {name!r} in {store.path}: see `guestpool vms`")
    if as_json:
        click.echo(json.dumps(detail, indent=1, default=str))
        return
    now = time.time()
    os_ = detail["os"] or {}
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    pkgs = detail["packages"]
    for label, value in (
            ("VM", detail["vm"]), ("trust group", detail["trust_group"]),
            ("state", detail["state"]),
            ("OS", os_.get("product_name") or fv.os_label(os_) or "not inspected"),
            ("hostname", os_.get("hostname")), ("arch", os_.get("arch")),
            ("packages", f"{pkgs['count']} ({pkgs['format']})" if pkgs else "not inspected"),
            ("last inspected", f"{fv.ago(detail['inspected_at'], now)}  "
                               f"{fv.iso(detail['inspected_at'])}"),
            ("verified unchanged", f"{fv.ago(detail['verified_at'], now)}  "
                                   f"{fv.iso(detail['verified_at'])}"
             if detail["state"] == "unchanged" else None),
            ("round", detail["round"])):
        if value is not None:
            head.add_row(label, _t(value))
    if detail["last_error"]:
        e = detail["last_error"]
        head.add_row("last attempt", _t(f"failed {fv.ago(detail['last_attempt_at'], now)}: "
                                        f"{e['kind']}: {e['message']}"))
    out.print(head)
    table = _table("disks", ("path", "format"))
    for d in detail["disks"]:
        table.add_row(_t(d["path"]), _t(d["format"]))
    out.print(table)
    if detail["filesystems"]:
        table = _table("filesystems", ("device", "type", "label", "size", "used"))
        for fs in detail["filesystems"]:
            table.add_row(_t(fs.get("device")), _t(fs.get("type")), _t(fs.get("label")),
                          _t(fv.human_bytes(fs.get("size"))), _t(fv.human_bytes(fs.get("used"))))
        out.print(table)
    if detail["users_with_findings"]:
        table = _table("users with findings", ("user", "findings"))
        for u in detail["users_with_findings"]:
            table.add_row(_t(u["user"]), _t(", ".join(u["findings"])))
        out.print(table)
    table = _table("last drift", ("when", "kind", "what"))
    for c in detail["last_drift"][:10]:
        table.add_row(fv.ago(c["at"], now), _t(c["kind"]), _t(c["key"]))
    if not detail["last_drift"]:
        table.add_row("-", "no drift recorded", "")
    out.print(table)
    if detail["timings"]:
        out.print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in detail["timings"].items()
                                          if isinstance(v, int | float)), highlight=False)

