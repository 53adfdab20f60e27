"""`guestpool bench boot` and `guestpool bench history`.

Phases, every initcall and insmod, the longest activities; A/B variants;
saved baselines and a regression verdict as the exit status (0 none,
1 regression, 2 error), so a CI job can run it as a guard.
"""

from __future__ import annotations

import json
import re
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from guestpool import GuestpoolError

from ._options import console, out, results_dir, results_option

store_option = click.option("--store", "store_path", type=click.Path(path_type=Path),
                            default=None, help="Results store (default: guestpool's own).")


def _runs(store_path: Path | None) -> Any:
    from guestpool.store._database import default_path

    from ._baselines import BootRuns

    return BootRuns(store_path or default_path())


def _folder(results: Path | None) -> Path:
    return results_dir(results)


@click.command("boot")
@click.option("--passes", type=int, default=5, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=3, show_default=True,
              help="Uncounted boots first (upstream used 3).")
@click.option("--set", "set_spec", default=None, metavar="KEY=VALUE,…",
              help="Settings of the one configuration measured (when no --compare).")
@click.option("--compare", "compare_specs", multiple=True,
              help="A variant NAME:key=value,… (repeat; keys: memsize, smp, accel, append, "
                   "cachedir (a folder or 'tmpfs'), machine, cpu, kernel, modules). Two or "
                   "more run interleaved A B A B.")
@click.option("--variants", "variants_file", type=click.Path(path_type=Path), default=None,
              help="TOML file: [variants.NAME] key = value …")
@click.option("--save", "save_name", default=None, metavar="NAME",
              help="Keep this run (every event, host facts) in the results store.")
@click.option("--against", "against_name", default=None, metavar="NAME",
              help="Compare with the newest run saved as NAME; exit 1 on a regression.")
@click.option("--fail-over", "fail_over_text", default="5%", show_default=True,
              help="A phase regresses when slower beyond its 95% interval and by more "
                   "than this share of its baseline mean …")
@click.option("--min-delta", type=click.FloatRange(min=0), default=0.05, show_default=True,
              help="… and by more than this many seconds.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many longest activities to list.")
@click.option("--detail-min", type=click.FloatRange(min=0), default=0.005, show_default=True,
              help="List initcalls and insmods of at least this many seconds (all go to "
                   "the JSON).")
@store_option
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None,
              help="Write every event of every pass to this file.")
@results_option
def bench_boot(passes: int, warmup: int, set_spec: str | None, compare_specs: tuple[str, ...],
               variants_file: Path | None, save_name: str | None, against_name: str | None,
               fail_over_text: str, min_delta: float, top: int, detail_min: float,
               store_path: Path | None, json_out: Path | None, results: Path | None) -> None:
    """Boot real appliances: phases, initcalls, insmods (mean ± sd), baselines."""
    from guestpool.appliance._accel import resolve_accel

    from . import _activities, _boot_plots, _regress, _variants, boot

    if passes < 1:
        raise GuestpoolError(f"--passes must be at least 1, got {passes}")
    fail_over = _regress.parse_threshold(fail_over_text)
    variants = _read_variants(set_spec, compare_specs, variants_file)
    if (save_name or against_name) and len(variants) != 1:
        raise GuestpoolError("--save and --against measure one configuration; use --set "
                             "KEY=VALUE instead of several --compare variants")
    if against_name and passes < 2:
        raise GuestpoolError("--against needs --passes 2 or more for an interval")
    folder = _folder(results)
    runs = _runs(store_path) if (save_name or against_name) else None
    baseline = runs.latest(against_name) if runs and against_name else None
    accel = resolve_accel().accel
    caps = _variants.host_caps(accel)
    for name, settings in variants.items():
        for warning in _variants.validate(name, settings, caps):
            console.print(Text.assemble(("warning:", "yellow"), " ", warning))
    all_passes = boot.run_passes(variants, passes, warmup, progress=console.print)
    summary: dict[str, Any] = {"variants": variants, "passes": passes, "warmup": warmup,
                               "phases": {}, "activities": {}}
    for name, settings in variants.items():
        mine = [p for p in all_passes if p.variant == name]
        _check_applied(mine[0], settings)
        phases, steps, total, sd = boot.summarise(mine)
        out.print(_phase_tree(name, mine, phases, steps, total, sd))
        stats = _activities.summarise(mine)
        out.print(_detail_table(name, stats, detail_min))
        out.print(_longest_table(name, _activities.longest(stats, top)))
        summary["phases"][name] = [(ph.name, ph.start, ph.mean, ph.sd, ph.share)
                                   for ph in phases]
        summary["activities"][name] = [s.__dict__ for s in stats]
        files = _boot_plots.activities(folder / f"boot-activities-{_slug(name)}", name, stats,
                                       total, top)
        console.print(f"wrote {', '.join(map(str, files))}")
    names = list(variants)
    summary["comparisons"] = {}
    for other in names[1:]:
        rows = boot.compare(all_passes, names[0], other)
        summary["comparisons"][other] = rows
        out.print(_ab_table(names[0], other, rows))
        plot_rows = [(r["phase"], r["delta"], r["ci95"][0], r["ci95"][1],
                      _verdict(r["real"], r["delta"])) for r in rows]
        files = _boot_plots.deltas(folder / f"boot-ab-{_slug(other)}-vs-{_slug(names[0])}",
                                   f"{other} against {names[0]}: which deltas are real",
                                   plot_rows)
        console.print(f"wrote {', '.join(map(str, files))}")
    (folder / "boot-latest.json").write_text(json.dumps(summary, indent=1))
    if json_out is not None:
        json_out.write_text(json.dumps([{"variant": p.variant, "total": p.total,
                                         "phases": p.phases, "events": p.events}
                                        for p in all_passes]))
    (name, settings), = variants.items()
    config = {**settings, "passes": passes, "warmup": warmup,
              "appliance kernel": _appliance_kernel(all_passes)}
    host = _variants.host_facts(accel)
    if runs is not None and save_name:
        run_id = runs.save(save_name, config, host, all_passes)
        console.print(f"saved as {save_name!r} (run #{run_id}) in {runs.path}")
    if runs is not None and baseline is not None:
        deltas = _regress.compare_runs(baseline.passes, all_passes, fail_over, min_delta)
        changes = _regress.config_changes({**baseline.config, **baseline.host},
                                          {**config, **host})
        out.print(_regression_table(baseline, deltas, fail_over, min_delta, changes))
        loads = _regress.mean_load(baseline.passes), _regress.mean_load(all_passes)
        console.print("host load average during the passes: baseline "
                      + ", this run ".join("unknown" if x is None else f"{x:.2f}"
                                            for x in loads)
                      + f" ({caps.cores} cores); a busier host boots slower under TCG")
        only_base, only_new = _regress.missing_phases(baseline.passes, all_passes)
        if only_base or only_new:
            console.print(Text.assemble(
                ("phases not in both runs", "yellow"), " (a marker moved): baseline "
                f"only {only_base or '-'}, this run only {only_new or '-'}"))
        files = _boot_plots.deltas(
            folder / f"boot-against-{_slug(baseline.name)}",
            f"this run against {baseline.name!r} (#{baseline.id})",
            [(d.phase, d.delta, d.lo, d.hi,
              "slower" if d.regression else "faster" if d.improvement else "noise")
             for d in deltas])
        console.print(f"wrote {', '.join(map(str, files))}")
        slower = [d.phase for d in deltas if d.regression]
        if slower:
            console.print(Text.assemble(("REGRESSION", "bold red"),
                                        f" against {baseline.name!r}: {', '.join(slower)}"))
            sys.exit(_regress.EXIT_REGRESSION)
        console.print(f"no regression against {baseline.name!r}")
    if runs is not None:
        runs.close()


def _read_variants(set_spec: str | None, compare_specs: tuple[str, ...],
                   variants_file: Path | None) -> dict[str, dict[str, Any]]:
    from . import boot

    variants: dict[str, dict[str, Any]] = {}
    for spec in compare_specs:
        name, settings = boot.parse_variant(spec)
        variants[name] = settings
    if variants_file is not None:
        try:
            data = tomllib.loads(variants_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as e:
            raise GuestpoolError(f"cannot read variants file {variants_file}: {e}") from None
        for name, settings in data.get("variants", {}).items():
            variants[name] = boot.check_variant(name, settings)
    if set_spec is not None:
        if variants:
            raise GuestpoolError("--set describes the one configuration; with --compare or "
                                 "--variants give the settings there")
        variants["default"] = boot.parse_variant(f"default:{set_spec}")[1] if set_spec else {}
    return variants or {"default": {}}


def _check_applied(p: Any, settings: dict[str, Any]) -> None:
    """Machine and CPU go through ``guestfs config``; make sure qemu got them."""
    cmdline = " ".join(line for _t, kind, line in p.events if kind == "appliance"
                       and line.lstrip().startswith("-"))
    for key in ("machine", "cpu"):
        if settings.get(key) and f"-{key} {settings[key]}" not in cmdline:
            raise GuestpoolError(f"qemu was not started with -{key} {settings[key]}; "
                                 "this libguestfs ignores it")


def _appliance_kernel(passes: list[Any]) -> str:
    for _t, _kind, line in passes[0].events:
        if m := re.search(r"\] Linux version (\S+)", line):
            return m[1]
    return "unknown"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _verdict(real: bool, delta: float) -> str:
    return "noise" if not real else "slower" if delta > 0 else "faster"


def _pm(mean: float, sd: float) -> str:
    return f"{mean:6.3f} ± {sd:5.3f}"


def _phase_tree(name: str, mine: list[Any], phases: list[Any], steps: dict[str, Any],
                total: float, sd: float) -> Tree:
    tree = Tree(Text.assemble((name, "bold"), f": total {_pm(total, sd)} s over {len(mine)} "
                              f"passes (phases sum to {sum(ph.mean for ph in phases):.3f} s)"))
    for ph in phases:
        node = tree.add(f"{ph.name:<32} start {ph.start:7.3f}  {_pm(ph.mean, ph.sd)} s"
                        f"  {100 * ph.share:5.1f}%")
        if ph.name == "/init":
            for st in steps.values():
                node.add(f"{st.name:<28} {_pm(st.mean, st.sd)} s {100 * st.share:5.1f}%")
    return tree


def _detail_table(name: str, stats: list[Any], detail_min: float) -> Table:
    """insmods and initcalls in boot order, the short ones counted, not listed."""
    detail = [s for s in stats if s.kind in ("insmod", "initcall")]
    shown = sorted((s for s in detail if s.mean >= detail_min), key=lambda s: s.start)
    table = Table(title=f"{name}: insmods and initcalls of ≥ {detail_min * 1000:.0f} ms "
                        f"({len(shown)} of {len(detail)}; "
                        f"{sum(1 for s in detail if s.kind == 'initcall')} initcalls, "
                        f"{sum(1 for s in detail if s.kind == 'insmod')} insmods)")
    for col in ("activity", "level", "start s", "mean ± sd s", "passes"):
        table.add_column(col)
    for s in shown:
        table.add_row(s.name, str(s.level), f"{s.start:.3f}", _pm(s.mean, s.sd),
                      str(s.passes))
    return table


def _longest_table(name: str, longest: list[Any]) -> Table:
    table = Table(title=f"{name}: {len(longest)} longest activities (all levels)")
    for col in ("#", "activity", "kind", "level", "mean ± sd s"):
        table.add_column(col)
    for i, s in enumerate(longest, 1):
        table.add_row(str(i), s.name, s.kind, str(s.level), _pm(s.mean, s.sd))
    return table


def _ab_table(base: str, other: str, rows: list[dict[str, Any]]) -> Table:
    table = Table(title=f"{other} vs {base} (95% bootstrap interval of the difference)")
    for col in ("phase", base, other, "delta", "95% CI", "real?"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["phase"], f"{r['base_mean']:.3f}", f"{r['other_mean']:.3f}",
                      f"{r['delta']:+.3f}", f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]",
                      Text("yes", "green") if r["real"] else "no (interval holds 0)")
    return table


def _regression_table(baseline: Any, deltas: list[Any], fail_over: float, min_delta: float,
                      changes: list[str]) -> Table:
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(baseline.saved_at))
    caption = ("differs from the baseline: " + "; ".join(changes)) if changes else \
        "same settings and host facts as the baseline"
    table = Table(title=f"against {baseline.name!r} (run #{baseline.id}, {when}, "
                        f"{len(baseline.passes)} passes): regression = slower beyond the 95% "
                        f"interval and by > {100 * fail_over:g}% and > {min_delta:g} s",
                  caption=caption)
    for col in ("phase", "baseline s", "this run s", "delta", "95% CI", "verdict"):
        table.add_column(col)
    for d in deltas:
        verdict = (Text("REGRESSION", "bold red") if d.regression else Text("faster", "green")
                   if d.improvement else "real, under threshold" if d.real else "noise")
        table.add_row(d.phase, f"{d.base_mean:.3f}", f"{d.new_mean:.3f}",
                      f"{d.delta:+.3f} ({100 * d.relative:+.1f}%)",
                      f"[{d.lo:+.3f}, {d.hi:+.3f}]", verdict)
    return table


@click.command("history")
@click.option("--name", default=None, help="Only runs saved under this name.")
@click.option("--phase", default="TOTAL", show_default=True,
              help="Phase to plot over time (a name from `bench boot`, or TOTAL).")
@store_option
@results_option
def bench_history(name: str | None, phase: str, store_path: Path | None,
                  results: Path | None) -> None:
    """Saved boot runs, oldest first, and a plot of one phase over time."""
    from . import _boot_plots

    runs = _runs(store_path)
    saved = runs.history(name)
    runs.close()
    if not saved:
        raise GuestpoolError(f"no saved boot runs{f' named {name!r}' if name else ''} in "
                             f"{runs.path}; save one with `guestpool bench boot --save NAME`")
    known = list(dict.fromkeys(p for r in saved for p in r.summary))
    if phase not in known:
        raise GuestpoolError(f"no phase {phase!r} in the saved runs; known: {', '.join(known)}")
    table = Table(title=f"saved boot runs in {runs.path}")
    cols = ["run", "name", "saved", "passes", "settings", "appliance kernel", "qemu", "TOTAL s"]
    for col in cols + ([f"{phase} s"] if phase != "TOTAL" else []):
        table.add_column(col)
    for r in saved:
        settings = ", ".join(f"{k}={v}" for k, v in r.config.items()
                             if k not in ("passes", "warmup", "appliance kernel")) or "default"
        ph = r.summary.get(phase)
        table.add_row(f"#{r.id}", r.name, time.strftime("%Y-%m-%d %H:%M",
                                                        time.localtime(r.saved_at)),
                      str(r.config.get("passes", "?")), settings,
                      str(r.config.get("appliance kernel", "?")),
                      str(r.host.get("qemu", "?")).removeprefix("QEMU emulator version "),
                      _pm(r.summary["TOTAL"]["mean"], r.summary["TOTAL"]["sd"]),
                      *([_pm(ph["mean"], ph["sd"]) if ph else "-"] if phase != "TOTAL" else []))
    out.print(table)
    files = _boot_plots.history(_folder(results) / f"boot-history-{_slug(phase)}", saved, phase)
    console.print(f"wrote {', '.join(map(str, files))}")
