"""The `guestpool` command line."""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from rich.table import Table

from .accel import ACCEL_CHOICES
from .errors import GuestpoolError
from .paths import data_dir

console = Console(stderr=True)
out = Console()

EXIT_OK, EXIT_ERROR, EXIT_INCOMPLETE = 0, 2, 3


@click.group()
@click.option("-v", "--verbose", is_flag=True, help="Log what the pool does.")
def cli(verbose: bool) -> None:
    """Inspect many VM disks inside a time budget with pre-booted libguestfs appliances.

    Exit codes: 0 success; 1 a scan finished with failed VMs; 2 bad input or a host
    that cannot run guestpool; 3 the budget ended before every VM was reached.
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(name)s %(message)s")


accel_option = click.option("--accel", type=click.Choice(ACCEL_CHOICES), default=None,
                            help="Accelerator: auto (probe, cached), kvm or tcg. "
                                 "Env: GUESTPOOL_ACCEL.")


@cli.command()
@accel_option
@click.option("--refresh", is_flag=True, help="Probe KVM again instead of using the cache.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def doctor(accel: str | None, refresh: bool, as_json: bool) -> None:
    """Check libguestfs, qemu, memory and whether KVM really works."""
    from .doctor import as_json as to_json
    from .doctor import run_checks

    with console.status("checking (a first KVM probe takes up to 20 s)..."):
        checks = run_checks(accel, refresh)
    if as_json:
        out.print_json(json.dumps(to_json(checks)))
    else:
        table = Table(title="guestpool doctor")
        for col in ("check", "status", "value"):
            table.add_column(col)
        for c in checks:
            table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]FAIL[/]", c.value)
        out.print(table)
    if not all(c.ok for c in checks):
        sys.exit(EXIT_ERROR)


@cli.group()
def fleet() -> None:
    """Fleet manifests and the demo fleet."""


@fleet.command("demo")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--count", type=int, default=24, show_default=True, help="How many VMs.")
def fleet_demo(directory: Path, count: int) -> None:
    """Generate (or reuse) a demo fleet with a manifest and a ground-truth file."""
    from .demo import generate

    manifest = generate(directory, count, progress=lambda m: console.print(m))
    out.print(f"demo fleet of {count} VMs: {manifest}")


@cli.group()
def inspectors() -> None:
    """Inspectors: built-ins and installed plugins."""


@inspectors.command("list")
def inspectors_list() -> None:
    """Show every inspector with its version, source, description and options."""
    from guestpool.inspectors.registry import available, broken_plugins

    table = Table(title="inspectors")
    for col in ("name", "version", "source", "description", "options"):
        table.add_column(col)
    for name, found in sorted(available().items()):
        opts = ", ".join(f"{o['name']}={o['default']!r}" for o in found.cls.describe_options())
        table.add_row(name, found.cls.version, found.source, found.cls.description, opts)
    for name, err in broken_plugins().items():
        table.add_row(name, "-", "[red]broken plugin[/]", err, "")
    out.print(table)


def _scan(manifest: Path, budget: float, inspector_names: str | None, pool: int | None,
          strategy: str, accel: str | None, as_json: bool) -> int:
    from .dispatch import run_round
    from .fleet import load_manifest

    vms = load_manifest(manifest).vms
    names = [s for s in inspector_names.split(",") if s] if inspector_names else None
    if names is not None:
        from guestpool.inspectors.registry import resolve

        for n in names:
            if ":" not in n:
                resolve(n)  # a typo in a name is an error; a broken plugin path is per VM
    done = Counter[str]()

    def on_result(r: Any) -> None:
        done["ok" if r.ok else "failed"] += 1
        if not as_json:
            status = "ok" if r.ok else f"FAILED ({r.error['kind']}: {r.error['message'][:80]})"
            console.print(f"[{done.total()}/{len(vms)}] {r.vm}: {status} "
                          f"in {r.timings.get('total', 0):.1f} s")

    def on_event(name: str, data: dict[str, Any]) -> None:
        if not as_json and name in ("boot_done", "retire", "boot_failed"):
            console.print(f"  appliance {data.get('appliance')}: {name.replace('_', ' ')} "
                          + (f"in {data['seconds']:.1f} s" if "seconds" in data else
                             str(data.get("reason") or data.get("error", ""))))

    if not as_json:
        console.print(f"scanning {len(vms)} VMs from {manifest} within {budget:.0f} s "
                      f"({strategy})")
    report = anyio.run(lambda: run_round(vms, budget=budget, inspectors=names, pool_size=pool,
                                         strategy=strategy,  # type: ignore[arg-type]
                                         accel=accel, on_result=on_result, on_event=on_event),
                       backend="trio")
    summary = report.summary()
    if as_json:
        summary["vms"] = [r.to_dict() for r in report.results]
        summary["not_reached"] = report.not_reached
        out.print_json(json.dumps(summary))
    else:
        table = Table(title="scan summary")
        table.add_column("measure")
        table.add_column("value")
        for key, value in summary.items():
            table.add_row(key, str(value))
        distros = Counter(
            (r.results.get("os", {}).get("value") or {}).get("distro", "none")
            for r in report.covered if "os" in r.results)
        if distros:
            table.add_row("guests by distro", ", ".join(f"{k}: {v}" for k, v in
                                                         sorted(distros.items())))
        if report.boot_seconds:
            mean_boot = sum(report.boot_seconds) / len(report.boot_seconds)
            table.add_row("mean boot", f"{mean_boot:.1f} s")
        per_vm = [r.timings.get("total", 0) for r in report.covered]
        if per_vm:
            table.add_row("mean job time (wait included)", f"{sum(per_vm) / len(per_vm):.1f} s")
        for r in report.failed:
            table.add_row(f"failed: {r.vm}", f"{r.error['kind']}: {r.error['message'][:100]}"
                          if r.error else "?")
        out.print(table)
    if report.failed:
        return 1
    return EXIT_INCOMPLETE if report.not_reached else EXIT_OK


scan_options = [
    click.option("--budget", type=click.FloatRange(min=5), default=300.0, show_default=True,
                 help="Seconds the round may take, pool start included."),
    click.option("--inspectors", "inspector_names", default=None,
                 help="Comma-separated inspector names or module:Class paths "
                      "(default: os,filesystems)."),
    click.option("--pool", type=click.IntRange(min=1), default=None,
                 help="Appliances (default: from cores and memory)."),
    click.option("--strategy", type=click.Choice(["pooled", "cold"]), default="pooled",
                 show_default=True),
    accel_option,
    click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
]


F = TypeVar("F", bound=Callable[..., Any])


def _with(options: list[Any]) -> Callable[[F], F]:
    def deco(f: F) -> F:
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


@cli.command()
@click.argument("manifest", type=click.Path(path_type=Path))
@_with(scan_options)
def scan(manifest: Path, **kw: Any) -> None:
    """Inspect the VMs of a fleet manifest within a time budget."""
    sys.exit(_scan(manifest, **kw))


@cli.command()
@click.option("--count", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where the demo fleet lives (default: the data folder).")
@_with(scan_options)
def quickstart(count: int, directory: Path | None, **kw: Any) -> None:
    """Generate a demo fleet (if absent) and scan it within the budget."""
    from .demo import generate

    directory = directory or data_dir() / "demo-fleet"
    manifest = generate(directory, count, progress=lambda m: console.print(m))
    code = _scan(manifest, **kw)
    # a demo round that ran out of budget did its job; failures still count
    sys.exit(EXIT_OK if code == EXIT_INCOMPLETE else code)


def main() -> None:
    try:
        cli(standalone_mode=True)
    except GuestpoolError as e:
        console.print(f"guestpool: error: {e}", highlight=False)
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        console.print("guestpool: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
