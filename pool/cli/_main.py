"""The `guestpool` command line."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import click
from rich.table import Table
from rich.text import Text

from guestpool._errors import GuestpoolError
from guestpool._paths import data_dir
from guestpool.appliance._accel import ACCEL_CHOICES
from guestpool.inspectors._registry import parse_names
from guestpool.rounds._report import DEFAULT_BATCH, RoundOptions

from ._nats import nats_options
from ._output import (
    EXIT_ERROR,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_OK,
    console,
    emit_json,
    fit_output,
    out,
    print_plan,
    print_report,
    print_round,
    wide_option,
)


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
    from ._doctor import as_json as to_json
    from ._doctor import run_checks

    with console.status("checking (a first KVM probe takes up to 20 s)..."):
        checks = run_checks(accel, refresh)
    if as_json:
        emit_json(to_json(checks))
    else:
        table = Table(title="guestpool doctor")
        for col in ("check", "status", "value"):
            table.add_column(col)
        for c in checks:
            table.add_row(c.name, Text("ok", "green") if c.ok else Text("FAIL", "red"), c.value)
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
    from guestpool.demo._fleet import generate

    manifest = generate(directory, count, progress=lambda m: console.print(m))
    out.print(f"demo fleet of {count} VMs: {manifest}")


@cli.group()
def inspectors() -> None:
    """Inspectors: built-ins and installed plugins."""


@inspectors.command("list")
def inspectors_list() -> None:
    """Show every inspector with its version, source, description and options."""
    from guestpool.inspectors._registry import available, broken_plugins

    table = Table(title="inspectors")
    for col in ("name", "version", "source", "description", "options"):
        table.add_column(col)
    for name, found in sorted(available().items()):
        opts = ", ".join(f"{o['name']}={o['default']!r}" for o in found.cls.describe_options())
        table.add_row(name, found.cls.version, found.source, found.cls.description, opts)
    for name, err in broken_plugins().items():
        table.add_row(name, "-", Text("broken plugin", "red"), err, "")
    out.print(table)


def _round_options(budget: float, inspector_names: str | None, pool: int | None,
                   strategy: str, accel: str | None, batch: int,
                   allow_format_mismatch: bool, allow_paths: tuple[Path, ...],
                   osv: Path | None = None, skip_unchanged: bool = True,
                   max_age: float = RoundOptions.max_age) -> RoundOptions:
    """The scan options of the command line as one checked value (names resolved here)."""
    from guestpool.inspectors._registry import resolve_specs
    from guestpool.supply._findings import check_folder

    return RoundOptions(budget=budget, inspectors=resolve_specs(parse_names(inspector_names)),
                        pool_size=pool, strategy=strategy,  # type: ignore[arg-type]
                        accel=accel, batch=batch, allow_format_mismatch=allow_format_mismatch,
                        allow_paths=tuple(str(p) for p in allow_paths),
                        osv=check_folder(osv) if osv is not None else None,
                        skip_unchanged=skip_unchanged, max_age=max_age)


def _scan(fleet: str, options: RoundOptions, as_json: bool, store_path: Path | None,
          plan_only: bool = False, allow_remote_libvirt: bool = False) -> int:
    from guestpool.appliance._sizing import default_pool_size
    from guestpool.fleet._sources import open_source
    from guestpool.rounds._periodic import stop_on_signals
    from guestpool.rounds._progress import ScanProgress
    from guestpool.rounds._round import preview, run_round
    from guestpool.store._database import Store

    source = open_source(fleet, allow_remote_libvirt=allow_remote_libvirt)
    vms = source.load()
    store = Store(store_path)
    if plan_only:
        plan = preview(vms, options, store, options.safety(source),
                       options.pool_size or default_pool_size())
        if as_json:
            emit_json(plan.to_dict())
        else:
            print_plan(plan)
        return EXIT_OK
    progress = ScanProgress(console, len(vms), options.budget, quiet=as_json)
    safety = options.safety(source)
    the_pool = options.pool(safety, on_event=progress.on_event)
    progress.pool = the_pool
    if not as_json:
        console.print(f"scanning {len(vms)} VMs from {fleet} within {options.budget:.0f} s "
                      f"({options.strategy}); results in {store.path}", highlight=False)
    async def one_round() -> Any:
        # SIGINT/SIGTERM: in-flight jobs finish, the round ends and is stored as it
        # stands (a second signal stops at once; the next round closes what was left)
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, stop, lambda name: console.print(
                f"guestpool scan: {name}: finishing in-flight jobs, then stopping"))
            report = await run_round(vms, options, pool=the_pool, safety=safety, store=store,
                                     on_result=progress.on_result, stop=stop)
            tg.cancel_scope.cancel()
        return report

    with progress.running():
        report = anyio.run(one_round, backend="trio")
    store.close()
    print_report(report, as_json)
    if report.failed:
        return EXIT_FAILED
    return EXIT_INCOMPLETE if report.not_reached else EXIT_OK


round_options = [
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
    click.option("--batch", type=click.IntRange(min=1), default=DEFAULT_BATCH, show_default=True,
                 help="VMs attached to one appliance at once (compatible VMs only)."),
    click.option("--allow-format-mismatch", is_flag=True,
                 help="Accept raw-declared images that carry another format's header."),
    click.option("--allow-path", "allow_paths", multiple=True,
                 type=click.Path(path_type=Path, file_okay=False),
                 help="A folder the fleet's disks, backing and data files may also be in "
                      "(repeatable); by default only the source's own folders."),
    click.option("--osv", type=click.Path(path_type=Path), default=None, metavar="DIR",
                 help="OSV advisory folder: match covered VMs' packages at each round's end "
                      "and keep the findings as history (see `guestpool vulns`)."),
    click.option("--skip-unchanged/--no-skip-unchanged", default=True, show_default=True,
                 help="Verify VMs whose disk files did not change since their last good "
                      "inspection (no appliance, ~1 ms) and carry their results forward."),
    click.option("--max-age", default="24h", show_default=True, metavar="AGE",
                 callback=lambda ctx, param, value: _age(value, "--max-age"),
                 help="Inspect a VM again after AGE (s, m, h, d) even if its disks did "
                      "not change."),
]
store_option = click.option("--store", "store_path", type=click.Path(path_type=Path),
                            default=None, help="Results store (SQLite; default: the data "
                                               "folder's guestpool.db).")
remote_libvirt_option = click.option(
    "--allow-remote-libvirt", is_flag=True,
    help="Accept libvirt URIs other than qemu:///system and qemu:///session (remote hosts, "
         "transports, query strings): they can run programs or reach other hosts.")
scan_options = [*round_options,
                click.option("--json", "as_json", is_flag=True, help="Machine-readable output."),
                store_option, remote_libvirt_option]


F = TypeVar("F", bound=Callable[..., Any])


def _with(options: list[Any]) -> Callable[[F], F]:
    def deco(f: F) -> F:
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def _options_from(kw: dict[str, Any]) -> RoundOptions:
    """Pop the round options out of a command's keyword arguments (not the source's)."""
    return _round_options(*(kw.pop(k) for k in (
        "budget", "inspector_names", "pool", "strategy", "accel", "batch",
        "allow_format_mismatch", "allow_paths", "osv", "skip_unchanged", "max_age")))


@cli.command()
@click.argument("fleet", required=False)
@_with(scan_options)
@click.option("--plan", "plan_only", is_flag=True, help="Print the capacity plan only.")
@_with(nats_options)
def scan(fleet: str | None, **kw: Any) -> None:
    """Inspect a fleet within a time budget.

    FLEET is a manifest (.json/.toml), folder:PATH, nova:PATH (a Nova instances
    folder) or libvirt:URI (libvirt: alone means qemu:///system). With --nats
    and no FLEET: one round across every host whose `guestpool agent` runs.
    """
    from ._nats import scan_hosts, settings_from

    options = _options_from(kw)
    settings = settings_from(kw, "coordinator")
    if settings is not None:
        if fleet is not None:
            raise click.UsageError("with --nats the fleets are the agents': give no FLEET")
        sys.exit(scan_hosts(settings, options, kw["as_json"], kw["store_path"]))
    if fleet is None:
        raise click.UsageError("give a FLEET (or --nats URL to scan every host)")
    sys.exit(_scan(fleet, options, **kw))


@cli.command()
@click.argument("fleet")
@click.option("--interval", type=click.FloatRange(min=10), default=300.0, show_default=True,
              help="Seconds from one round's start to the next.")
@click.option("--rounds", type=click.IntRange(min=1), default=None,
              help="Stop after this many rounds (default: run until SIGINT/SIGTERM).")
@_with(scan_options)
def monitor(fleet: str, interval: float, rounds: int | None, as_json: bool,
            store_path: Path | None, allow_remote_libvirt: bool, **kw: Any) -> None:
    """Scan the fleet every INTERVAL seconds, keep history, report drift.

    SIGINT or SIGTERM lets in-flight jobs finish, then stops cleanly.
    """
    import dataclasses

    from guestpool.fleet._safety import SafetyPolicy
    from guestpool.fleet._sources import open_source
    from guestpool.rounds._periodic import run_periodic, stop_on_signals
    from guestpool.rounds._round import run_round
    from guestpool.store._database import Store

    options = _options_from(kw)
    options = dataclasses.replace(options, budget=min(options.budget, interval))
    source = open_source(fleet, allow_remote_libvirt=allow_remote_libvirt)
    store = Store(store_path)

    def stopping(name: str) -> None:
        console.print(f"guestpool monitor: {name}: finishing in-flight jobs, then stopping")

    async def main() -> None:
        stop = anyio.Event()
        # one pool for every round, kept booted in between: rounds pay boots only for
        # replacements (each round gives it the source's safety policy of the moment)
        pool = options.pool(SafetyPolicy())

        async def one_round(n: int) -> None:
            # the source is read again every round: the fleet changes
            report = await run_round(source, options, store=store, stop=stop, pool=pool)
            print_round(n, report, as_json)

        async with pool.warm(), anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, stop, stopping)
            await run_periodic(interval, one_round, rounds=rounds, stop=stop)
            tg.cancel_scope.cancel()

    anyio.run(main, backend="trio")
    store.close()
    sys.exit(EXIT_OK)


def _open_store(path: Path | None, vms: Sequence[str] = ()) -> Any:
    """The store a read command reads: it must exist, and so must every VM named."""
    from guestpool.store._database import Store

    store = Store.existing(path)
    unknown = [vm for vm in vms if not store.has_vm(vm)]
    if unknown:
        store.close()
        raise GuestpoolError(f"no VM {', '.join(map(repr, unknown))} in {store.path}: "
                             "see `guestpool vms`")
    return store


@cli.command()
@store_option
@click.option("--json", "as_json", is_flag=True)
@wide_option
def report(store_path: Path | None, as_json: bool, wide: bool) -> None:
    """Summary of the last round, the fleet (distros, freshness, failures by
    reason, most drift) and its exposure over time (rounds matched with --osv)."""
    from guestpool.store._fleetview import fleet_report

    fit_output(wide)
    store = _open_store(store_path)
    last = store.last_round()
    if last is None:
        raise click.ClickException("no round recorded yet: run `guestpool scan` first")
    fleet_view = fleet_report(store)
    if as_json:
        emit_json({**last, "exposure": store.exposure(), "fleet": fleet_view})
        return
    from ._fleet import print_fleet_report
    from ._supply import print_exposure

    table = Table(title=f"round {last['id']}")
    table.add_column("measure")
    table.add_column("value")
    for k, v in (last["summary"] or {"state": "unfinished (interrupted?)"}).items():
        table.add_row(k, str(v))
    out.print(table)
    print_fleet_report(store, fleet_view)
    print_exposure(store)


@cli.command()
@click.argument("vm")
@store_option
@click.option("--json", "as_json", is_flag=True,
              help="Everything as JSON (the stored results under \"results\").")
@wide_option
def show(vm: str, store_path: Path | None, as_json: bool, wide: bool) -> None:
    """One VM: OS, disks and filesystems, packages, users with findings, last
    drift, timings."""
    from ._fleet import show_vm

    fit_output(wide)
    show_vm(_open_store(store_path, [vm]), vm, as_json)


AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _age(value: str, param: str) -> float:
    """Seconds in an age such as 90, 30m, 24h or 1d."""
    number, unit = (value[:-1], value[-1]) if value[-1:] in AGE_UNITS else (value, "s")
    if not number.replace(".", "", 1).isdigit():
        raise click.BadParameter(f"{value!r}: use an age like 3600, 30m, 24h or 1d",
                                 param_hint=param)
    return float(number) * AGE_UNITS[unit]


def _since(value: str | None) -> float | None:
    if value is None:
        return None
    import datetime as dt
    import time as _time

    from guestpool.store._fleetview import parse_age

    with contextlib.suppress(ValueError):
        return _time.time() - parse_age(value)
    try:
        return dt.datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise click.BadParameter(f"{value!r}: use an ISO time or an age like 2h, 30m, 1d",
                                 param_hint="--since") from None


@cli.command()
@click.argument("vm", required=False)
@click.option("--since", default=None, help="ISO time, or an age such as 2h or 1d.")
@click.option("--format", "fmt", type=click.Choice(["table", "jsonl", "csv"]), default="table")
@store_option
@wide_option
def drift(vm: str | None, since: str | None, fmt: str, store_path: Path | None,
          wide: bool) -> None:
    """Changes between successive inspections (all VMs, or one)."""
    from guestpool.store._export import export

    fit_output(wide)
    changes = _open_store(store_path, [vm] if vm else []).drift(vm, _since(since))
    if fmt != "table":
        click.echo(export(changes, fmt), nl=False)
        return
    table = Table(title=f"drift ({len(changes)} changes)")
    for col in ("vm", "inspector", "kind", "key", "before", "after"):
        table.add_column(col, overflow="fold")
    for c in changes:
        table.add_row(c["vm"], c["inspector"], c["kind"], str(c["key"]), str(c["before"])[:40],
                      str(c["after"])[:40])
    out.print(table)


@cli.command("export")
@click.argument("vms", nargs=-1)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv", "cyclonedx", "spdx"]),
              default="jsonl", show_default=True)
@click.option("--vm", default=None, help="One VM (jsonl and csv; same as naming it).")
@click.option("--spec", type=click.Choice(["1.5", "1.6"]), default="1.6", show_default=True,
              help="CycloneDX specification version.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="SBOMs: write DIR/{vm}.cdx.json or DIR/{vm}.spdx.json (needed for more "
                   "than one VM).")
@store_option
def export_cmd(vms: tuple[str, ...], fmt: str, vm: str | None, spec: str, out_dir: Path | None,
               store_path: Path | None) -> None:
    """Stored results as JSON Lines or CSV, or SBOMs (CycloneDX, SPDX 2.3) of VMs.

    jsonl/csv: every stored result (or the named VMs'). cyclonedx/spdx: one
    document per VM with the OS as the root component, from its latest
    `packages` result; one VM to stdout, several (all by default) to --out DIR.
    """
    import itertools

    from guestpool.store._export import export

    from ._supply import export_sbom

    names = [*vms, *([vm] if vm else [])]
    store = _open_store(store_path, names)
    if fmt in ("cyclonedx", "spdx"):
        sys.exit(export_sbom(store, fmt, spec, names, out_dir))
    rows = itertools.chain.from_iterable(store.results(n) for n in names) if names \
        else store.results()
    click.echo(export(rows, fmt), nl=False)


@cli.command()
@click.option("--count", type=click.IntRange(min=1), default=24, show_default=True)
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where the demo fleet lives (default: the data folder).")
@_with(scan_options)
def quickstart(count: int, directory: Path | None, **kw: Any) -> None:
    """Generate a demo fleet (if absent) and scan it within the budget."""
    from guestpool.demo._fleet import generate

    directory = directory or data_dir() / "demo-fleet"
    manifest = generate(directory, count, progress=lambda m: console.print(m))
    options = _options_from(kw)
    code = _scan(str(manifest), options, **kw)
    # a demo round that ran out of budget did its job; failures still count
    sys.exit(EXIT_OK if code == EXIT_INCOMPLETE else code)


def _fleet_option(items: tuple[str, ...], positional: str | None) -> dict[str, str]:
    fleets: dict[str, str] = {}
    for item in items:
        name, sep, spec = item.partition("=")
        if not sep or not name or not spec or not name.replace("-", "").replace("_", "").isalnum():
            raise click.BadParameter(f"{item!r}: use NAME=FLEET, NAME of letters, digits, - and _",
                                     param_hint="--fleet")
        if name in fleets:
            raise click.BadParameter(f"fleet {name!r} is given twice", param_hint="--fleet")
        fleets[name] = spec
    if positional is not None:
        if "default" in fleets:
            raise click.BadParameter("FLEET is the fleet named 'default'; --fleet names it too")
        fleets["default"] = positional
    return fleets


@cli.command()
@click.argument("fleet", required=False)
@click.option("--fleet", "fleet_items", multiple=True, metavar="NAME=FLEET",
              help="A fleet the service may scan (repeatable); FLEET alone is 'default'.")
@click.option("--bind", default="127.0.0.1:8080", show_default=True, help="HOST:PORT to listen on.")
@click.option("--token-file", type=click.Path(path_type=Path, exists=True), default=None,
              help="File holding the bearer token (default: env GUESTPOOL_TOKEN).")
@click.option("--open-reads", is_flag=True, help="Serve GET endpoints without a token.")
@click.option("--public-name", "public_names", multiple=True, metavar="HOST[:PORT]",
              help="A name clients reach the service by (repeatable): the Host headers "
                   "accepted on requests served without a token (needed with --open-reads "
                   "on a non-loopback bind).")
@click.option("--interval", type=click.FloatRange(min=10), default=None,
              help="Also scan every fleet every INTERVAL seconds (the monitor loop).")
@click.option("--paused", is_flag=True, help="Accept and queue scans but start none.")
@_with(round_options)
@store_option
@remote_libvirt_option
@_with(nats_options)
def serve(fleet: str | None, fleet_items: tuple[str, ...], bind: str, token_file: Path | None,
          open_reads: bool, public_names: tuple[str, ...], interval: float | None,
          paused: bool, store_path: Path | None, allow_remote_libvirt: bool,
          **kw: Any) -> None:
    """HTTP API (POST /scans → 202), Prometheus /metrics and a status page at /.

    The service scans only the fleets it is started with: a request names one,
    never a path or URI. The round options are the defaults of every scan; a
    request may set its own budget and inspectors (registered names only).
    """
    import os

    from guestpool.service import serve as run_service

    from ._nats import settings_from

    options = _options_from(kw)
    fleets = _fleet_option(fleet_items, fleet)
    nats = settings_from(kw, "coordinator")
    if nats is not None and fleets:
        raise click.UsageError("with --nats the fleets are the agents': give no FLEET")
    host, _, port_s = bind.rpartition(":")
    if not host or not port_s.isdigit():
        raise click.BadParameter(f"{bind!r}: use HOST:PORT", param_hint="--bind")
    token = (token_file.read_text().strip() if token_file else
             os.environ.get("GUESTPOOL_TOKEN")) or None
    if interval is not None and not fleets and nats is None:
        raise click.BadParameter("--interval needs a fleet to scan", param_hint="--interval")
    console.print(f"guestpool serve: http://{host}:{port_s}/ "
                  f"({'token required' if token else 'no token: loopback only'}; "
                  f"fleets: {'hosts at ' + nats.url if nats else ', '.join(fleets) or 'none'})",
                  highlight=False)
    anyio.run(lambda: run_service(host=host.strip("[]"), port=int(port_s), store_path=store_path,
                                  fleets=fleets, token=token, open_reads=open_reads,
                                  paused=paused, options=options, interval=interval,
                                  allow_remote_libvirt=allow_remote_libvirt, nats=nats,
                                  public_names=public_names),
              backend="trio" if nats is None else "asyncio")


def _add_commands() -> None:
    """Commands defined in their own modules."""
    from guestpool.bench.cli import bench

    from ._fleet import vms_cmd
    from ._nats import agent, nats_config
    from ._supply import vulns

    cli.add_command(bench)
    cli.add_command(vulns)
    cli.add_command(agent)
    cli.add_command(nats_config)
    cli.add_command(vms_cmd)


_add_commands()


def main() -> None:
    try:
        cli(standalone_mode=True)
    except GuestpoolError as e:
        console.print(f"guestpool: error: {e}", highlight=False, soft_wrap=True)  # one line
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        console.print("guestpool: interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
