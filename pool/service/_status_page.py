"""The status page, now the console's overview: plain HTML, no external assets,
refreshing itself while a round runs."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlencode

import anyio

from guestpool.store import _fleetview as fv
from guestpool.store._database import Store

from ._charts import Series, bar_chart
from ._console import e, layout, seconds, vm_link, when
from ._nats_hosts import render_hosts
from ._scheduler import Service


def pool_state(svc: Service) -> dict[str, Any]:
    pool = svc.pool
    if pool is None:
        return {"size": 0, "strategy": None, "appliances": []}
    return {"size": pool.size, "strategy": pool.strategy, "appliances": [
        {"id": a.id, "state": a.state, "trust_group": a.trust_group, "jobs": a.jobs,
         "qemu_pid": a.qemu_pid, "boot_seconds": a.boot_seconds}
        for a in list(pool.appliances.values())]}


async def render_status(svc: Service) -> str:
    """The console's overview: the current round and the appliances (refreshing
    itself), charts per round, the fleet by freshness, distro and failure."""
    now = time.time()
    scan = await anyio.to_thread.run_sync(svc.queue.get, svc.running) if svc.running else None
    return _page(svc, now, scan or {}, *await svc.reads(_figures, now))


def _figures(store: Store, now: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]],
                                                dict[str, Any]]:
    """The overview's reads of the store: rounds, recent drift, the fleet report."""
    return fv.round_series(store, 20), store.recent_drift(15), fv.fleet_report(store, now)


def _page(svc: Service, now: float, scan: dict[str, Any], series: list[dict[str, Any]],
          recent_drift: list[dict[str, Any]], report: dict[str, Any]) -> str:
    pool = pool_state(svc)
    rows = "".join(f"<tr><td>{a['id']}</td><td class='{e(a['state'])}'>{e(a['state'])}</td>"
                   f"<td>{e(str(a['trust_group']))}</td><td class='num'>{a['jobs']}</td>"
                   f"<td class='num'>{seconds(a['boot_seconds'])}</td></tr>"
                   for a in pool["appliances"]) or \
        "<tr><td colspan=5>no pool running</td></tr>"
    current = "idle"
    if svc.running:
        p = svc.progress
        budget = float((scan.get("request") or {}).get("budget", svc.options.budget))
        elapsed = time.time() - (scan.get("started") or time.time())
        used = 100 * min(1.0, elapsed / budget)
        done, total = p.get("done", 0), p.get("total", 0)
        current = (f"scan {e(svc.running[:8])}: {done}/{total} VMs, "
                   f"{p.get('failed', 0)} failed; {elapsed:.0f} of {budget:.0f} s"
                   f"<div class='bar' role='progressbar' aria-valuemin='0' aria-valuemax='100' "
                   f"aria-valuenow='{used:.0f}' aria-label='round time used'>"
                   f"<div style='width:{used:.0f}%'></div></div>")
    rounds = "".join(f"<tr><td>{r['round']}</td><td>{when(r['ended'], now)}</td>"
                     f"<td class='num'>{r['covered']}</td><td class='num'>{r['failed']}</td>"
                     f"<td class='num'>{r['not_reached']}</td><td class='num'>{r['boots']}</td>"
                     f"<td class='num'>{seconds(r['job_p50_s'])} / {seconds(r['job_p95_s'])}"
                     f"</td><td class='num'>{seconds(r['wait_p50_s'])} / "
                     f"{seconds(r['wait_p95_s'])}</td></tr>"
                     for r in reversed(series[-10:])) or "<tr><td colspan=8>no round yet</td></tr>"
    drift = "".join(f"<tr><td>{vm_link(c['vm'])}</td><td>{e(c['kind'])}</td>"
                    f"<td><code>{e(str(c['key']))}</code></td><td>{when(c['at'], now)}</td></tr>"
                    for c in recent_drift) or \
        "<tr><td colspan=4>no drift recorded</td></tr>"
    n = report["vms"] or 1
    fresh = "".join(
        f"<tr><th scope='row'>{label}</th><td class='num'>{report['freshness'][k]:,}</td>"
        f"<td class='num'>{100 * report['freshness'][k] / n:.0f}%</td><td>"
        + (f"<a href='/fleet?{link}'>list</a>" if link else "") + "</td></tr>"
        for label, k, link in (("current as of the last round", "last_round", ""),
                               ("in the last hour before it", "last_hour", ""),
                               ("longer ago", "older", "stale=1h&amp;sort=age"),
                               ("never", "never", "state=never")))
    distros = "".join(
        "<tr><td>" + (f"<a href='/fleet?{e(_distro_query(d))}'>{e(fv.os_label(d))}</a>"
                      if d["distro"] else "<i>not inspected</i>")
        + f"</td><td class='num'>{d['vms']:,}</td></tr>" for d in report["by_distro"][:15]) \
        or "<tr><td colspan=2>no VM known yet</td></tr>"
    failures = "".join(
        f"<tr><td>{e(str(f['reason']))}</td><td class='num'>{f['vms']:,}</td>"
        f"<td>{vm_link(f['example'])}</td><td>{e(str(f['message'] or '')[:120])}</td></tr>"
        for f in report["failures"]) or "<tr><td colspan=4>no VM failed its last attempt</td></tr>"
    most = "".join(f"<tr><td>{vm_link(d['vm'])}</td><td class='num'>{d['changes']}</td>"
                   f"<td>{when(d['last_at'], now)}</td></tr>"
                   for d in report["most_drift"]["vms"]) or \
        "<tr><td colspan=3>no drift recorded</td></tr>"
    labels = [_clock(r["ended"]) for r in series]
    tips = [f"round {r['round']}, ended {fv.iso(r['ended'])}" for r in series]
    axis = "round end (UTC)"

    def pct(key: str) -> list[float | None]:
        return [100 * r[key] / r["fleet"] if r["fleet"] else None for r in series]

    charts = "".join([
        bar_chart("Coverage per round (covered / asked)", labels, [Series(
            "covered", [100 * r["coverage"] if r["coverage"] is not None else None
                        for r in series], "#13612e")], "%", ymax=100, tips=tips, axis=axis),
        bar_chart("Freshness at each round's end (share of the fleet)", labels, [
            Series("current within the hour", pct("fresh_1h"), "#13612e"),
            Series("longer ago", pct("older"), "#c98a00"),
            Series("never", pct("never"), "#a4161a")], "%", ymax=100, tips=tips, axis=axis),
        bar_chart("Mean appliance boot per round", labels,
                  [Series("boot", [r["boot_mean_s"] for r in series], "#0b5563")], "s",
                  empty="no boot measured in these rounds", tips=tips, axis=axis),
        bar_chart("Per-VM job (attach to detach) per round", labels,
                  [Series("p95", [r["job_p95_s"] for r in series], "#8fa9c4"),
                   Series("p50", [r["job_p50_s"] for r in series], "#16324f")], "s",
                  overlay=True, tips=tips, axis=axis,
                  empty="no job ran in these rounds (all unchanged)"),
        bar_chart("Wait for an appliance per round", labels,
                  [Series("p95", [r["wait_p95_s"] for r in series], "#c4a98f"),
                   Series("p50", [r["wait_p50_s"] for r in series], "#7a4b00")], "s",
                  overlay=True, tips=tips, axis=axis,
                  empty="no job ran in these rounds (all unchanged)"),
    ])
    states = " · ".join(f"<a href='/fleet?state={s}'>{report['states'][s]:,} {s}</a>"
                        for s in fv.STATES)
    body = f"""<h1>Overview</h1><p>{report['vms']:,} VMs: {states}</p>
<div class="cols"><section aria-labelledby="round"><h2 id="round">Current round</h2>
<p>{current}</p></section>
<section aria-labelledby="pool"><h2 id="pool">Appliances</h2><table><thead><tr>
<th scope="col">id</th><th scope="col">state</th><th scope="col">trust group</th>
<th scope="col" class="num">jobs</th><th scope="col" class="num">boot</th></tr></thead>
<tbody>{rows}</tbody></table></section></div>
{render_hosts(svc)}
<h2 id="charts">Rounds</h2><div class="charts">{charts}</div>
<div class="cols"><section aria-labelledby="freshness"><h2 id="freshness">Freshness</h2>
<table><tbody>{fresh}</tbody></table></section>
<section aria-labelledby="distros"><h2 id="distros">By distro and version</h2><table><thead>
<tr><th scope="col">OS</th><th scope="col" class="num">VMs</th></tr></thead>
<tbody>{distros}</tbody></table></section></div>
<h2 id="failures">Failures by reason (latest attempt)</h2><table><thead><tr>
<th scope="col">reason</th><th scope="col" class="num">VMs</th><th scope="col">e.g.</th>
<th scope="col">message</th></tr></thead><tbody>{failures}</tbody></table>
<h2 id="rounds">Last rounds</h2><table><thead><tr><th scope="col">round</th>
<th scope="col">ended</th><th scope="col" class="num">covered</th><th scope="col" class="num">
failed</th><th scope="col" class="num">not reached</th><th scope="col" class="num">boots</th>
<th scope="col" class="num">job p50 / p95</th><th scope="col" class="num">wait p50 / p95</th>
</tr></thead><tbody>{rounds}</tbody></table>
<div class="cols"><section aria-labelledby="most-drift"><h2 id="most-drift">Most drift
(last {report['most_drift']['rounds']} rounds)</h2><table><thead><tr><th scope="col">VM</th>
<th scope="col" class="num">changes</th><th scope="col">last</th></tr></thead>
<tbody>{most}</tbody></table></section>
<section aria-labelledby="drift"><h2 id="drift">Recent drift</h2><table><thead><tr>
<th scope="col">VM</th><th scope="col">change</th><th scope="col">what</th>
<th scope="col">when</th></tr></thead><tbody>{drift}</tbody></table></section></div>"""
    return layout("Overview", body, "/", refresh=10)


def _distro_query(d: dict[str, Any]) -> str:
    return urlencode({"distro": d["distro"], "version": d["version"] or ""})


def _clock(at: float | None) -> str:
    """A round's end as HH:MM UTC, for a chart's axis."""
    return fv.iso(at)[11:16] if at else "-"
