"""`guestpool bench …`: boot analysis, A/B comparison, throughput, simulation, plots,
console pages."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import click
from rich.table import Table

from guestpool import GuestpoolError
from guestpool._paths import data_dir
from guestpool.inspectors._registry import parse_names

from ._options import console, out, results_dir, results_option


@click.group()
def bench() -> None:
    """Benchmarks: boot phases, A/B comparison, throughput, simulation."""


def _add_boot_commands() -> None:
    from ._boot_cli import bench_boot, bench_history

    bench.add_command(bench_boot)
    bench.add_command(bench_history)


_add_boot_commands()


@bench.command("throughput")
@click.option("--budget", type=click.FloatRange(min=20), default=300.0, show_default=True)
@click.option("--pool", type=click.IntRange(min=1), default=None)
@click.option("--count", type=click.IntRange(min=4), default=200, show_default=True,
              help="Demo fleet size (more than a round can cover).")
@click.option("--inspectors", "inspector_names", default="os,filesystems", show_default=True)
@results_option
def bench_throughput(budget: float, pool: int | None, count: int, inspector_names: str,
                     results: Path | None) -> None:
    """Measure B, A, W; predict VMs per budget; run cold and pooled for real."""
    from guestpool import default_pool_size, load_manifest
    from guestpool.demo._fleet import generate
    from guestpool.rounds._plan import SHUTDOWN_RESERVE_S

    from . import throughput
    from .plots import throughput_curves

    folder = results_dir(results)
    size = pool or default_pool_size()
    names = parse_names(inspector_names)
    manifest = generate(data_dir() / f"bench-fleet-{count}", count, progress=console.print)
    vms = load_manifest(manifest).vms
    console.print(f"measuring B, A and W with {size} appliances…")
    m = anyio.run(lambda: throughput.measure(vms, size, names, console.print), backend="trio")
    predicted = m.predict(budget)
    console.print(f"running pooled and cold rounds of {budget:.0f} s each…")
    reports = anyio.run(lambda: throughput.run_both(vms, budget, size, names), backend="trio")
    table = Table(title=f"VMs per {budget:.0f} s budget, P={size} (B={m.boot:.1f} s, "
                        f"A={m.attach_detach:.1f} s, W={m.work:.1f} s, cold W={m.cold_work:.1f} s)")
    for col in ("strategy", "predicted", "measured", "error", "within 25%", "overrun"):
        table.add_column(col)
    rows = {}
    for strategy in ("cold", "pooled"):
        rep = reports[strategy]
        got = len(rep.covered)
        err = (predicted[strategy] - got) / got if got else float("inf")
        rows[strategy] = {"predicted": round(predicted[strategy], 1), "measured": got,
                          "error": round(err, 3), "overrun_s": round(rep.overrun, 2),
                          "failed": len(rep.failed)}
        table.add_row(strategy, f"{predicted[strategy]:.1f}", str(got), f"{100 * err:+.0f}%",
                      "yes" if throughput.within(predicted[strategy], got) else "NO",
                      f"{rep.overrun:.1f} s")
    out.print(table)
    ratio = ((m.boot + m.cold_work) / (m.attach_detach + m.work))
    out.print(f"per-VM cost: cold {m.boot + m.cold_work:.1f} s, pooled "
              f"{m.attach_detach + m.work:.1f} s: pooled is {ratio:.1f}x cheaper per VM")
    result = {"budget": budget, "pool": size, "measured": m.__dict__, "rounds": rows,
              "per_vm_cost": {"cold": m.boot + m.cold_work, "pooled": m.attach_detach + m.work},
              "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (folder / f"throughput-{int(budget)}s.json").write_text(json.dumps(result, indent=1))
    # measured at `budget`; moved to a 300 s budget with the model's own shape
    # (pooled pays boot once, cold pays it per VM)
    usable, usable_300 = budget - SHUTDOWN_RESERVE_S, 300 - SHUTDOWN_RESERVE_S
    scale = {"cold": usable_300 / usable,
             "pooled": max(0.0, usable_300 - m.boot) / max(1e-9, usable - m.boot)}
    points = [{"strategy": s, "boot": m.boot, "vms": round(rows[s]["measured"] * scale[s]),
               "label": f"this host, {s}, P={size}"
                        + ("" if budget == 300 else f" (measured at {budget:.0f} s, "
                                                    "model-scaled to 300 s)")}
              for s in rows]
    files = throughput_curves(folder / "throughput-vs-boot", budget=300.0,
                              attach_detach=m.attach_detach, work=m.work,
                              cold_work=m.cold_work, points=points)
    console.print(f"wrote {folder}/throughput-{int(budget)}s.json, {', '.join(map(str, files))}")


@bench.command("batch")
@click.option("--sizes", default="1,2,4", show_default=True, help="Batch sizes to compare.")
@click.option("--count", type=click.IntRange(min=2), default=12, show_default=True)
@click.option("--inspectors", "inspector_names", default="os,filesystems", show_default=True)
@results_option
def bench_batch(sizes: str, count: int, inspector_names: str, results: Path | None) -> None:
    """Per-VM cost of attaching 1, 2, 4… VMs to one appliance at once."""
    from guestpool import load_manifest
    from guestpool.demo._fleet import generate

    from .batching import measure_batching

    try:
        size_list = [int(x) for x in sizes.split(",") if x]
    except ValueError:
        raise GuestpoolError(f"--sizes takes whole numbers like 1,2,4, got {sizes!r}") from None
    if not size_list or min(size_list) < 1:
        raise GuestpoolError("--sizes must list batch sizes of at least 1")
    folder = results_dir(results)
    vms = load_manifest(generate(data_dir() / f"bench-fleet-{count}", count)).vms
    names = parse_names(inspector_names)
    rows = anyio.run(lambda: measure_batching(vms, size_list, names), backend="trio")
    table = Table(title=f"batching: {count} VMs on one appliance ({inspector_names})")
    for col in ("batch size", "VMs ok", "batches", "seconds", "per VM"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["size"]), str(r["vms"]), str(r["batches"]), f"{r['seconds']:.1f}",
                      f"{r['per_vm']:.2f} s")
    out.print(table)
    (folder / "batching.json").write_text(json.dumps(rows, indent=1))
    console.print(f"wrote {folder / 'batching.json'}")


@bench.command("vulns")
@click.option("--vms", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--packages", type=click.IntRange(min=1), default=400, show_default=True,
              help="Packages per VM.")
@click.option("--advisories", type=click.IntRange(min=1), default=3000, show_default=True)
@click.option("--versions-per-package", type=click.IntRange(min=1), default=6, show_default=True,
              help="Uploads per package VMs choose from (large: little sharing).")
@results_option
def bench_vulns(vms: int, packages: int, advisories: int, versions_per_package: int,
                results: Path | None) -> None:
    """Offline OSV matching of synthetic VMs' package lists (no appliance)."""
    from .vulns import LABEL
    from .vulns import run as run_vulns

    folder = results_dir(results)
    name = "vulns.json" if versions_per_package == 6 else "vulns-distinct.json"
    figures = run_vulns(vms, packages, advisories, versions_per_package)
    table = Table(title=f"{LABEL}: {vms} VMs x {packages} packages, {advisories} advisories")
    table.add_column("measure")
    table.add_column("value")
    for key in ("load_seconds", "match_seconds", "table_seconds", "findings",
                "vms_with_findings", "distinct_lookups"):
        table.add_row(key, str(figures[key]))
    out.print(table)
    (folder / name).write_text(json.dumps(figures, indent=2) + "\n")
    console.print(f"wrote {folder / name}")


@bench.command("inspectors")
@click.option("--count", type=click.IntRange(min=1), default=12, show_default=True)
@results_option
def bench_inspectors(count: int, results: Path | None) -> None:
    """Per-VM cost of each built-in inspector; cheap `os` against full inspect_os."""
    from guestpool import load_manifest
    from guestpool.demo._fleet import generate

    from .inspectors import measure_inspectors

    folder = results_dir(results)
    vms = load_manifest(generate(data_dir() / f"bench-fleet-{count}", count)).vms
    res = anyio.run(lambda: measure_inspectors(vms), backend="trio")
    table = Table(title=f"inspector cost per VM under {count} demo VMs (one appliance)")
    table.add_column("measure")
    table.add_column("seconds")
    for name, sec in res["per_inspector_mean_s"].items():
        table.add_row(f"inspector {name}", f"{sec:.2f}")
    table.add_row("whole job (attach + all inspectors + detach)", f"{res['job_mean_s']:.2f}")
    table.add_row("os, cheap path", f"{res['os_cheap_mean_s']:.2f}")
    table.add_row("os, full inspect_os", f"{res['os_full_inspect_os_mean_s']:.2f}")
    table.add_row("cheap and full agree on", res["os_answers_agree"])
    out.print(table)
    (folder / "inspectors.json").write_text(json.dumps(res, indent=1))
    console.print(f"wrote {folder / 'inspectors.json'}")


@bench.command("service-load")
@click.option("--requests", "load", type=click.IntRange(min=1, max=100_000), default=1000,
              show_default=True)
@click.option("--count", type=click.IntRange(min=2), default=12, show_default=True)
@results_option
def bench_service_load(load: int, count: int, results: Path | None) -> None:
    """A scan through `guestpool serve`, quiet and under LOAD status requests (loopback)."""
    from guestpool import load_manifest
    from guestpool.demo._fleet import generate

    from .service_load import run_load_bench

    folder = results_dir(results)
    manifest = generate(data_dir() / f"bench-fleet-{count}", count)
    vms = [v.name for v in load_manifest(manifest).vms]
    store = folder / "service-load.db"
    for stale in folder.glob("service-load.db*"):
        stale.unlink()
    res = run_load_bench(manifest, vms, store, load)
    table = Table(title=f"scan of {len(vms)} VMs through guestpool serve, pool of 1")
    for col in ("run", "state", "covered", "job mean", "elapsed", "requests", "errors",
                "p50 latency", "max latency"):
        table.add_column(col)
    for name in ("quiet", "loaded"):
        r = res[name]
        table.add_row(name, r["state"], str(r["covered"]), f"{r['job_mean_s']:.2f} s",
                      f"{r['elapsed_s']:.1f} s", str(r["requests"]), str(r["errors"]),
                      f"{r['p50_ms']:.1f} ms" if r["p50_ms"] else "-",
                      f"{r['max_ms']:.1f} ms" if r["max_ms"] else "-")
    out.print(table)
    out.print(f"slowdown of the per-VM job under load: {100 * (res['slowdown'] or 0):+.1f}%")
    store.unlink(missing_ok=True)
    (folder / "service-load.json").write_text(json.dumps(res, indent=1))
    for stale in folder.glob("service-load.db*"):
        stale.unlink()
    console.print(f"wrote {folder / 'service-load.json'}")


@bench.command("console")
@click.option("--vms", type=click.IntRange(min=10), default=10_000, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--store", "store_path", type=click.Path(path_type=Path), default=None,
              help="Reuse (or keep) this synthetic store; default: a fresh one, deleted after.")
@results_option
def bench_console(vms: int, rounds: int, repeat: int, store_path: Path | None,
                  results: Path | None) -> None:
    """SYNTHETIC: console page render times over a store of VMS × ROUNDS rows."""
    import tempfile

    from .console import LABEL, fill_store, measure

    folder = results_dir(results)
    with tempfile.TemporaryDirectory(prefix="gp-console-") as tmp:
        path = store_path or Path(tmp) / "console.db"
        if not path.exists():
            start = time.monotonic()
            fill_store(path, vms, rounds)
            console.print(f"{LABEL}: filled {path} with {vms} VMs × {rounds} rounds in "
                          f"{time.monotonic() - start:.0f} s")
        res = {"vms": vms, "rounds": rounds, **measure(path, repeat, vms=vms)}
    table = Table(title=f"{LABEL}: console pages, {vms:,} VMs × {rounds} rounds "
                        f"({repeat} GETs each, loopback)")
    for col in ("page", "path", "median", "p95"):
        table.add_column(col)
    for label, p in res["pages"].items():
        table.add_row(label, p["path"], f"{p['median_ms']:.1f} ms", f"{p['p95_ms']:.1f} ms")
    out.print(table)
    out.print(f"read models built from nothing (serve does it at start): "
              f"{res['build_read_models_ms']:.0f} ms; first page: {res['first_read_ms']:.0f} ms;"
              f" first page after one more round: {res['after_new_round_ms']:.0f} ms")
    (folder / "console.json").write_text(json.dumps(res, indent=1))
    console.print(f"wrote {folder / 'console.json'}")


@bench.command("simulate")
@click.option("--vms", type=click.IntRange(min=1), default=10_000, show_default=True)
@click.option("--pool", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--boot", type=click.FloatRange(min=0.01), default=1.2, show_default=True)
@click.option("--attach", type=click.FloatRange(min=0.0), default=0.3, show_default=True)
@click.option("--inspect", "inspect_s", type=click.FloatRange(min=0.01), default=3.0,
              show_default=True)
@click.option("--detach", type=click.FloatRange(min=0.0), default=0.4, show_default=True)
@click.option("--budget", type=click.FloatRange(min=5), default=300.0, show_default=True)
@click.option("--strategy", type=click.Choice(["pooled", "cold", "both"]), default="both")
@click.option("--json", "as_json", is_flag=True)
def bench_simulate(vms: int, pool: int, boot: float, attach: float, inspect_s: float,
                   detach: float, budget: float, strategy: str, as_json: bool) -> None:
    """SIMULATION: the real scheduler on a virtual clock with drawn costs (sd = 10%)."""
    from .simulate import LABEL, Costs, simulate

    costs = Costs(boot=(boot, boot / 10), attach=(attach, attach / 10),
                  inspect=(inspect_s, inspect_s / 10), detach=(detach, detach / 10))
    rows = {}
    start = time.monotonic()
    for s in (["pooled", "cold"] if strategy == "both" else [strategy]):
        rep = simulate(vms, pool, budget, costs, s)  # type: ignore[arg-type]
        rows[s] = {"covered": len(rep.covered), "not_reached": len(rep.not_reached),
                   "boots": rep.boots}
    result = {"label": LABEL, "vms": vms, "pool": pool, "budget": budget,
              "costs": costs.to_dict(), "results": rows,
              "wall_seconds": round(time.monotonic() - start, 2)}
    if as_json:
        out.print_json(json.dumps(result))
        return
    table = Table(title=f"{LABEL}: {vms} VMs, {pool} appliances, boot {boot} s, "
                        f"budget {budget:.0f} s")
    for col in ("strategy", "VMs covered", "not reached", "boots"):
        table.add_column(col)
    for s, r in rows.items():
        table.add_row(s, str(r["covered"]), str(r["not_reached"]), str(r["boots"]))
    out.print(table)
    console.print(f"{LABEL} (no appliance booted), {result['wall_seconds']} s of wall time")


@bench.command("fidelity")
@click.argument("corpus", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--only", default=None, help="Run one VM of the manifest.")
@click.option("--side", type=click.Choice(["both", "reference", "cheap"]), default="both",
              show_default=True, help="Run libguestfs (reference), the pooled path, or both.")
@click.option("--expected", "expected_path", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), default=None,
              help="Also check each side against a ground truth (the corpus's expected.json).")
@click.option("--reference", "stored_reference", type=click.Path(
              exists=True, dir_okay=False, path_type=Path), default=None,
              help="libguestfs's answers from an earlier run (fidelity-reference.json of the "
                   "same corpus version) instead of running it again.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole result as JSON.")
@results_option
def bench_fidelity(corpus: Path, only: str | None, side: str, expected_path: Path | None,
                   stored_reference: Path | None, as_json: bool, results: Path | None) -> None:
    """The cheap os+packages path against libguestfs's inspect_os, field by field.

    CORPUS is a manifest such as the one `build_corpus` writes (`keys` per VM are
    honoured on the reference side as virt-inspector --key does).
    """
    from . import fidelity

    folder = results_dir(results)
    res = fidelity.run(corpus, only=only, side=side, progress=console.print,
                       stored_reference=stored_reference)
    if expected_path is not None:
        expected = json.loads(expected_path.read_text())
        res["expected"] = {s: fidelity.check_expected(expected, res[s])
                           for s in ("reference", "cheap") if res[s]}
    (folder / "fidelity.json").write_text(json.dumps(res, indent=1, default=sorted))
    if res["reference"] and only is None and stored_reference is None:
        (folder / "fidelity-reference.json").write_text(
            json.dumps(res["reference"], indent=1, default=sorted))
    if as_json:
        out.print_json(json.dumps(res, default=sorted))
        return
    if res["fields"]:
        out.print(_agreement_table("cheap path vs libguestfs, per field", res["fields"],
                                   ("reference", "cheap")))
    for s, fields in res.get("expected", {}).items():
        out.print(_agreement_table(f"{s} vs expected.json", fields, ("expected", "got")))
    times = Table(title="seconds per VM (cheap: attach + os + packages + detach; "
                        "reference: a fresh appliance, inspect_os and applications)")
    for col in ("VM", "cheap s", "reference s"):
        times.add_column(col)
    for vm, t in res["timing"]["per_vm"].items():
        times.add_row(vm, *(f"{t[k]:.1f}" if t[k] is not None else "-"
                            for k in ("cheap_s", "reference_s")))
    out.print(times)
    console.print(f"wrote {folder / 'fidelity.json'}")


def _agreement_table(title: str, fields: dict[str, Any], sides: tuple[str, str]) -> Table:
    table = Table(title=title)
    for col in ("field", "agree", "disagreeing VMs"):
        table.add_column(col, overflow="fold")
    for name, f in fields.items():
        if not f["compared"]:
            continue
        detail = "; ".join(
            f"{d['vm']}: " + ", ".join(f"{k}={v!r}" for k, v in d.items() if k != "vm")
            for d in f["disagree"])
        table.add_row(name, f"{f['agree']}/{f['compared']}", detail[:2000])
    return table
