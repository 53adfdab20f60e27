"""The status page: plain HTML, no external assets, refreshing itself."""

from __future__ import annotations

import html
import time
from typing import Any

from ._hosts import render_hosts
from ._scheduler import Service


def pool_state(svc: Service) -> dict[str, Any]:
    pool = svc.pool
    if pool is None:
        return {"size": 0, "strategy": None, "appliances": []}
    return {"size": pool.size, "strategy": pool.strategy, "appliances": [
        {"id": a.id, "state": a.state, "trust_group": a.trust_group, "jobs": a.jobs,
         "qemu_pid": a.qemu_pid, "boot_seconds": a.boot_seconds}
        for a in list(pool.appliances.values())]}


def render_status(svc: Service) -> str:
    """The status page: plain HTML, no external assets, refreshing itself."""
    e = html.escape
    pool = pool_state(svc)
    rows = "".join(f"<tr><td>{a['id']}</td><td class='{e(a['state'])}'>{e(a['state'])}</td>"
                   f"<td>{e(str(a['trust_group']))}</td><td>{a['jobs']}</td></tr>"
                   for a in pool["appliances"]) or "<tr><td colspan=4>no pool running</td></tr>"
    current = "idle"
    if svc.running:
        scan = svc.queue.get(svc.running) or {}
        p = svc.progress
        budget = float((scan.get("request") or {}).get("budget", svc.options.budget))
        elapsed = time.time() - (scan.get("started") or time.time())
        pct = 100 * min(1.0, elapsed / budget)
        current = (f"scan {e(svc.running[:8])}: {p.get('done', 0)}/{p.get('total', 0)} VMs, "
                   f"{p.get('failed', 0)} failed; {elapsed:.0f} of {budget:.0f} s"
                   f"<div class='bar'><div style='width:{pct:.0f}%'></div></div>")
    rounds = "".join(f"<tr><td>{r['id']}</td><td>{r['summary']['covered']}</td>"
                     f"<td>{r['summary']['failed']}</td><td>{r['summary']['not_reached']}</td>"
                     f"<td>{r['summary']['elapsed_s']}</td></tr>"
                     for r in svc.store.recent_rounds(10) if r["summary"]) or \
        "<tr><td colspan=5>no round yet</td></tr>"
    drift = "".join(f"<tr><td>{e(c['vm'])}</td><td>{e(c['kind'])}</td><td>{e(str(c['key']))}"
                    f"</td></tr>" for c in svc.store.recent_drift(15)) or \
        "<tr><td colspan=3>no drift recorded</td></tr>"
    return f"""<!doctype html><html><head><meta charset="utf-8">
<meta http-equiv="refresh" content="5"><title>guestpool status</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;
margin-bottom:1.5em}}td,th{{border:1px solid #ccc;padding:4px 10px}}th{{background:#eee}}
.bar{{width:320px;height:14px;border:1px solid #888;margin-top:6px}}.bar div{{height:100%;
background:#3a7}}.busy{{color:#a60}}.idle{{color:#070}}.booting{{color:#06a}}</style></head>
<body><h1>guestpool</h1>
<h2 id="round">Current round</h2><p>{current}</p>
<h2 id="pool">Appliances</h2><table><tr><th>id</th><th>state</th><th>trust group</th>
<th>jobs</th></tr>{rows}</table>
{render_hosts(svc)}
<h2 id="rounds">Last rounds</h2><table><tr><th>round</th><th>covered</th><th>failed</th>
<th>not reached</th><th>seconds</th></tr>{rounds}</table>
<h2 id="drift">Recent drift</h2><table><tr><th>VM</th><th>change</th><th>what</th></tr>
{drift}</table></body></html>"""
