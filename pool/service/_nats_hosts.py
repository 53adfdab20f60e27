"""Several hosts in the service (``guestpool serve --nats``): scans run as
rounds across the agents' hosts, and /hosts, the metrics and the status page
show each host."""

from __future__ import annotations

import html
import time
from typing import Any

from ._scheduler import Service


def hosts_state(svc: Service) -> dict[str, Any]:
    """Every host an agent announced, with its last round's share."""
    if svc.coordinator is None:
        return {"hosts": []}
    now = time.time()
    last = svc.host_tallies
    return {"hosts": [
        {"host": name, "alive": info.alive(now), "ready": info.ready,
         "seen_seconds_ago": round(now - info.seen, 1), "pool_size": info.pool_size,
         "strategy": info.strategy, "vms": len(info.vms), "costs": info.costs,
         "last_round": last.get(name)}
        for name, info in sorted(svc.coordinator.known_hosts.items())]}


def update_metrics(svc: Service) -> None:
    if svc.coordinator is not None:
        for reason in ("wrong-host", "not-announced", "round-closed", "malformed"):
            svc.metrics.results_refused.labels(reason).set(svc.coordinator.refused[reason])
    hosts = hosts_state(svc)["hosts"]
    alive = sum(h["alive"] for h in hosts)
    svc.metrics.hosts.labels("alive").set(alive)
    svc.metrics.hosts.labels("missing").set(len(hosts) - alive)
    for h in hosts:
        for state in ("covered", "failed", "not_reached"):
            svc.metrics.host_vms.labels(h["host"], state).set((h["last_round"] or {}).get(state, 0))


def render_hosts(svc: Service) -> str:
    """The status page's hosts section ('' when the service runs one host)."""
    if svc.coordinator is None:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(h['host'])}</td><td>{'alive' if h['alive'] else 'missing'}</td>"
        f"<td>{h['pool_size']}</td><td>{h['vms']}</td>"
        + "".join(f"<td>{(h['last_round'] or {}).get(k, '')}</td>"
                  for k in ("covered", "failed", "not_reached")) + "</tr>"
        for h in hosts_state(svc)["hosts"]) or "<tr><td colspan=7>no agent yet</td></tr>"
    return ("<h2 id=\"hosts\">Hosts</h2><table><tr><th>host</th><th>state</th><th>pool</th>"
            "<th>VMs</th><th>covered</th><th>failed</th><th>not reached</th></tr>"
            f"{rows}</table>")
