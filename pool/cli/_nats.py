"""Commands of several hosts: `guestpool agent`, `guestpool nats-config`, and the
``--nats`` runs of `scan` (a one-off round across hosts)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import anyio
import click

from guestpool.appliance._accel import ACCEL_CHOICES
from guestpool.rounds._report import RoundOptions

#: The NATS connection options, shared by agent, scan and serve
nats_options = [
    click.option("--nats", "nats_url", default=None, metavar="URL",
                 help="NATS server(s), comma-separated (nats://, tls://): run across hosts."),
    click.option("--nats-user", "nats_user", default=None,
                 help="NATS user (default: coordinator, or agent-HOST for an agent)."),
    click.option("--nats-password-file", "nats_password_file", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="File holding the NATS user's password (`guestpool nats-config`)."),
    click.option("--nats-token-file", "nats_token_file", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="File holding a NATS token (instead of user and password)."),
    click.option("--nats-nkey", "nats_nkey", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="NKey seed file of this user (`guestpool nats-config --nkeys`)."),
    click.option("--nats-creds", "nats_creds", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="NATS credentials file (JWT and NKey seed)."),
    click.option("--nats-tls-ca", "nats_tls_ca", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="CA that signed the NATS server's certificate."),
    click.option("--nats-tls-cert", "nats_tls_cert", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False),
                 help="Client certificate for NATS (with --nats-tls-key)."),
    click.option("--nats-tls-key", "nats_tls_key", default=None,
                 type=click.Path(path_type=Path, exists=True, dir_okay=False)),
]


def settings_from(kw: dict[str, Any], default_user: str) -> Any:
    """Pop the NATS options out of a command's keyword arguments: the settings,
    or None without ``--nats``."""
    from guestpool.nats._connect import NatsSettings, read_secret

    values = {k: kw.pop(k) for k in list(kw) if k.startswith("nats_")}
    if values["nats_url"] is None:
        return None
    token = read_secret(values["nats_token_file"])
    password = read_secret(values["nats_password_file"])
    settings = NatsSettings(
        values["nats_url"], user=values["nats_user"] or (default_user if password else None),
        password=password, token=token,
        creds=str(values["nats_creds"]) if values["nats_creds"] else None,
        nkey=str(values["nats_nkey"]) if values["nats_nkey"] else None,
        **{k: str(values[f"nats_{k}"]) if values[f"nats_{k}"] else None
           for k in ("tls_ca", "tls_cert", "tls_key")})
    settings.check()
    return settings


def scan_hosts(settings: Any, options: RoundOptions, as_json: bool, store_path: Path | None
               ) -> int:
    """One round across every host whose agent announces itself."""
    from guestpool.nats import HostsRoundReport, HostsTarget, open_coordinator
    from guestpool.rounds._round import run_round
    from guestpool.store._database import Store

    from ._output import EXIT_FAILED, EXIT_INCOMPLETE, EXIT_OK, console, print_report

    store = Store(store_path)

    async def main() -> HostsRoundReport:
        async with open_coordinator(settings, store) as coordinator:
            await coordinator.wait_for_hosts()
            report = await run_round(HostsTarget(coordinator), options, store=store)
            assert isinstance(report, HostsRoundReport)
            return report

    if not as_json:
        console.print(f"scanning every host at {settings.url} within {options.budget:.0f} s; "
                      f"results in {store.path}", highlight=False)
    report = anyio.run(main, backend="asyncio")
    store.close()
    print_report(report, as_json)
    if report.failed:
        return EXIT_FAILED
    return EXIT_INCOMPLETE if report.not_reached or report.hosts_missing else EXIT_OK


def _with(options: list[Any], f: Any) -> Any:
    for opt in reversed(options):
        f = opt(f)
    return f


@click.command()
@click.argument("fleet")
@click.option("--host", "host_name", required=True,
              help="This hypervisor's name: jobs come from guestpool.jobs.HOST.")
@click.option("--pool", type=click.IntRange(min=1), default=None,
              help="Appliances kept booted (default: from cores and memory).")
@click.option("--strategy", type=click.Choice(["pooled", "cold"]), default="pooled",
              show_default=True)
@click.option("--accel", type=click.Choice(ACCEL_CHOICES), default=None)
@click.option("--allow-format-mismatch", is_flag=True)
@click.option("--allow-path", "allow_paths", multiple=True,
              type=click.Path(path_type=Path, file_okay=False),
              help="A folder the fleet's disks may also be in (repeatable).")
@click.option("--heartbeat", type=click.FloatRange(min=0.5), default=2.0, show_default=True,
              help="Seconds between announcements of inventory and capacity.")
def agent(fleet: str, host_name: str, pool: int | None, strategy: str, accel: str | None,
          allow_format_mismatch: bool, allow_paths: tuple[Path, ...], heartbeat: float,
          **kw: Any) -> None:
    """Run this host's agent: keep a pool warm, announce FLEET (local: manifest,
    folder:, nova:, libvirt:) to the coordinator, and inspect the VMs it queues
    for this host. SIGINT/SIGTERM hands held jobs back and stops."""
    from guestpool.fleet._sources import open_source
    from guestpool.nats import run_agent
    from guestpool.nats._config import agent_user
    from guestpool.nats._subjects import check_host
    from guestpool.rounds._periodic import stop_on_signals

    from ._output import console

    check_host(host_name)
    settings = settings_from(kw, agent_user(host_name))
    if settings is None:
        raise click.UsageError("--nats URL is required")
    source = open_source(fleet)
    options = RoundOptions(pool_size=pool, strategy=strategy,  # type: ignore[arg-type]
                           accel=accel, allow_format_mismatch=allow_format_mismatch,
                           allow_paths=tuple(str(p) for p in allow_paths))

    async def main() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(stop_on_signals, stop)
            await run_agent(settings, host_name, source, options, stop=stop, heartbeat=heartbeat)
            tg.cancel_scope.cancel()

    console.print(f"guestpool agent {host_name}: {fleet} via {settings.url}", highlight=False)
    anyio.run(main, backend="asyncio")
    sys.exit(0)


agent = _with(nats_options, agent)


@click.command("nats-config")
@click.option("--hosts", required=True, help="Comma-separated host names (one NATS user each).")
@click.option("--out", "folder", type=click.Path(path_type=Path, file_okay=False),
              default=Path("guestpool-nats"), show_default=True,
              help="Folder for nats-server.conf and the users' password files.")
@click.option("--port", type=click.IntRange(1, 65535), default=4222, show_default=True)
@click.option("--store-dir", default="/var/lib/guestpool-nats", show_default=True,
              help="JetStream's storage folder on the server.")
@click.option("--tls", is_flag=True, help="Add a TLS block (edit its certificate paths).")
@click.option("--nkeys", is_flag=True,
              help="Users by NKey (a seed file each; the server keeps public keys only) "
                   "instead of passwords.")
def nats_config(hosts: str, folder: Path, port: int, store_dir: str, tls: bool,
                nkeys: bool) -> None:
    """Write a nats-server configuration with JetStream and one user per host,
    allowed only its own jobs and results, and a coordinator user."""
    from guestpool.nats import write_config

    from ._output import console

    names = [h.strip() for h in hosts.split(",") if h.strip()]
    for path in write_config(folder, names, port=port, store_dir=store_dir, tls=tls,
                             nkeys=nkeys):
        console.print(f"wrote {path}", highlight=False)
    kind = "nk" if nkeys else "password"
    console.print(f"start it: nats-server -c {folder / 'nats-server.conf'}; give host H "
                  f"{folder}/agent-H.{kind} and the coordinator {folder}/coordinator.{kind}",
                  highlight=False)
