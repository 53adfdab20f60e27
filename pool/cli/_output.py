"""Where the command line writes, its exit codes, and how a round reads on a terminal."""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Any

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: markup off: VM names, paths and guest strings are printed as they are (a
#: "[/x]" in one would otherwise raise or restyle); styles are given as Text
console = Console(stderr=True, markup=False)
out = Console(markup=False)
#: the width tables get with ``--wide``, or when output is not a terminal (a pipe or
#: a file keeps every VM name and drift key whole)
UNBOUNDED = 100_000


wide_option = click.option("--wide", is_flag=True,
                           help="Tables as wide as their cells, nothing folded (the default "
                                "when output is not a terminal).")


def fit_output(wide: bool) -> None:
    """Let tables be as wide as their cells with ``--wide`` or off a terminal;
    on a terminal long cells fold onto more lines rather than being cut."""
    if wide or not out.is_terminal:
        out.width = UNBOUNDED


def emit_json(value: Any) -> None:
    """``value`` as JSON on stdout, written as it is encoded: rich's pretty printer
    took 3 GB and 40 s for a 10,000-VM round's report."""
    for chunk in json.JSONEncoder(default=str, indent=1).iterencode(value):
        sys.stdout.write(chunk)
    sys.stdout.write("\n")
    sys.stdout.flush()


def warning(message: str) -> None:
    """One warning line on stderr, the message printed literally."""
    console.print(Text.assemble(("warning:", "yellow"), " ", message), highlight=False,
                  soft_wrap=True)

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_INCOMPLETE = 0, 1, 2, 3


def print_plan(plan: Any) -> None:
    table = Table(title="capacity plan")
    table.add_column("measure")
    table.add_column("value")
    table.add_row("VMs in fleet", str(plan.vms))
    table.add_row("budget", f"{plan.budget:.0f} s")
    table.add_row("appliances", str(plan.pool_size))
    source = "measured mean" if plan.measured else "default: no round measured yet"
    table.add_row(f"boot ({source})", f"{plan.boot:.1f} s")
    table.add_row(f"per-VM job ({source})", f"{plan.job:.1f} s")
    table.add_row("VMs priced by their kind's cost", str(plan.by_kind))
    table.add_row("VMs verified unchanged (no appliance)", str(plan.unchanged))
    table.add_row("trust-group switches", str(plan.group_switches))
    table.add_row("predicted VMs this round", str(plan.predicted))
    table.add_row("appliances for full coverage", str(plan.needed_pool))
    out.print(table)
    if not plan.fits:
        warning(f"the fleet will not fit in one round: about {plan.predicted} of "
                f"{plan.vms} VMs; successive rounds cover the rest (stalest first)")


def print_report(report: Any, as_json: bool) -> None:
    summary = report.summary()
    if as_json:
        summary["vms"] = [r.to_dict() for r in report.results]
        summary["not_reached"] = report.not_reached
        summary["drift"] = report.drift
        emit_json(summary)
        return
    table = Table(title="scan summary")
    table.add_column("measure")
    table.add_column("value")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "none"
        table.add_row(key, "-" if value is None else str(value))
    if report.plan is not None:
        table.add_row("predicted vs covered", f"{report.plan.predicted} predicted, "
                                              f"{len(report.covered)} covered")
    distros = Counter(
        (r.results.get("os", {}).get("value") or {}).get("distro", "none")
        for r in report.covered if "os" in r.results)
    if distros:
        table.add_row("guests by distro", ", ".join(f"{k}: {v}" for k, v in
                                                     sorted(distros.items())))
    if report.boot_seconds:
        mean_boot = sum(report.boot_seconds) / len(report.boot_seconds)
        table.add_row("mean boot", f"{mean_boot:.1f} s")
    if report.drift:
        kinds = Counter(c["kind"] for c in report.drift)
        table.add_row("drift", ", ".join(f"{k}: {v}" for k, v in sorted(kinds.items())))
    for r in report.failed:
        table.add_row(f"failed: {r.vm}", f"{r.error['kind']}: {r.error['message'][:100]}"
                      if r.error else "?")
    out.print(table)


def print_round(n: int, report: Any, as_json: bool) -> None:
    summary = report.summary()
    kinds = Counter(c["kind"] for c in report.drift)
    summary["drift_by_kind"] = dict(kinds)
    if as_json:
        print(json.dumps(summary), flush=True)
        return
    console.print(f"round {n}: covered {summary['covered']} (inspected {summary['inspected']}, "
                  f"unchanged {summary['unchanged']}), failed {summary['failed']}, "
                  f"not reached {summary['not_reached']} in {summary['elapsed_s']} s, "
                  f"{summary['boots']} boots; {_job_and_wait(summary)}drift: "
                  + (", ".join(f"{k} {v}" for k, v in sorted(kinds.items())) or "none"),
                  highlight=False)


def _job_and_wait(summary: dict[str, Any]) -> str:
    """"job p50 0.71 s (p95 1.9 s), wait p50 0.0 s (p95 18.2 s); " or nothing."""
    job, wait = summary.get("job_s"), summary.get("wait_s")
    if not job:
        return ""
    text = f"job p50 {job['p50']:.2f} s (p95 {job['p95']:.2f} s)"
    if wait:
        text += f", wait p50 {wait['p50']:.1f} s (p95 {wait['p95']:.1f} s)"
    return text + "; "
