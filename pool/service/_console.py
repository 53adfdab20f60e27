"""The console's pages beside the status page: the fleet table (server-side
search, filters, sorting, pages) and one page per VM.

Plain server-rendered HTML: links and GET forms, no script, no external
asset. Every string that comes from a guest or the store goes through
``html.escape`` (attribute values too: it escapes quotes); VM names in URLs
are percent-encoded.
"""

from __future__ import annotations

import html
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from guestpool.store import _fleetview as fv
from guestpool.store._database import Store

from ._charts import Series, bar_chart
from ._scheduler import Service

Handler = Callable[[Request], Awaitable[Response]]

e = html.escape
PAGE_SIZES = (25, 50, 100, 200)
STALE_CHOICES = {"": "any time", "1h": "over 1 h", "6h": "over 6 h", "1d": "over 1 day",
                 "7d": "over 7 days"}
SORT_LABELS = {"name": "VM", "distro": "OS", "packages": "packages", "age": "last inspected",
               "state": "state"}

CSS = """
:root{--fg:#1b1b1b;--muted:#4a4a4a;--line:#c8c8c8;--bg:#fff;--head:#eef0f3;--link:#0b4f9c;
--ok:#13612e;--bad:#a4161a;--warn:#7a4b00;--info:#0b5563;--focus:#ffbf47}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
background:var(--bg);margin:0}
header{background:#16324f;color:#fff;padding:.6em 1.5em;display:flex;gap:2em;align-items:center}
header a{color:#fff;text-decoration:none;padding:.2em .5em;border-radius:3px}
header a[aria-current]{background:#fff;color:#16324f;font-weight:600}
header .brand{font-weight:700;font-size:1.1em}
main{padding:1em 1.5em;max-width:1280px}
h1{font-size:1.4em;margin:.3em 0 .6em}h2{font-size:1.15em;margin:1.4em 0 .5em}
a{color:var(--link)}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,
summary:focus-visible{outline:3px solid var(--focus);outline-offset:2px;
box-shadow:0 0 0 5px #16324f}
table{border-collapse:collapse;margin:.3em 0 1em}
td,th{border-bottom:1px solid var(--line);padding:5px 10px;text-align:left;vertical-align:top}
th{background:var(--head);font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tbody tr:hover{background:#f6f8fa}
.state{font-weight:600;padding:1px 6px;border-radius:3px;border:1px solid currentColor}
.inspected{color:var(--ok)}.failed{color:var(--bad)}.never{color:var(--warn)}
.unchanged{color:var(--info)}.busy{color:var(--warn)}.idle{color:var(--ok)}
.booting,.starting{color:var(--info)}
.muted{color:var(--muted)}
form.filters{display:flex;flex-wrap:wrap;gap:.8em 1.2em;align-items:end;margin-bottom:1em;
padding:.8em;background:var(--head);border-radius:4px}
form.filters label{display:flex;flex-direction:column;font-size:.9em;font-weight:600;gap:2px}
input,select,button{font:inherit;font-weight:400;padding:4px 6px;border:1px solid #767676;
border-radius:3px;
background:#fff;color:var(--fg)}
button{background:#16324f;color:#fff;border-color:#16324f;padding:4px 14px;cursor:pointer}
nav.pages{display:flex;gap:1em;align-items:center}
.charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(470px,1fr));gap:1em}
figure.chart{margin:0;border:1px solid var(--line);border-radius:4px;padding:.5em}
figcaption{font-weight:600;margin-bottom:.3em}
svg .grid{stroke:#d9d9d9}svg .tick{font-size:11px;fill:#333}
ul.legend{list-style:none;display:flex;gap:1em;padding:0;margin:.2em 0 0;font-size:.9em}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:-.1em}
.bar{width:320px;height:14px;border:1px solid #555;margin-top:6px}
.bar div{height:100%;background:#13612e}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1.2em;margin:0 0 1em}
dl.facts dt{font-weight:600}dl.facts dd{margin:0}
.cols{display:flex;flex-wrap:wrap;gap:0 2.5em}
code{font-size:.92em}
.skip{position:absolute;left:-999px}.skip:focus{left:1em;top:.5em;background:#fff;color:#000;
padding:.3em}
"""

NAV = (("/", "Overview"), ("/fleet", "Fleet"), ("/fleet?state=failed", "Failures"))


def layout(title: str, body: str, current: str = "", refresh: int | None = None) -> str:
    """A whole page: header with the console's links, the body in <main>."""
    links = "".join(f"<a href='{href}'{' aria-current=page' if href == current else ''}>"
                    f"{label}</a>" for href, label in NAV)
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{e(title)} · guestpool</title><style>{CSS}</style></head><body>"
            f"<a class='skip' href='#main'>Skip to content</a>"
            f"<header><span class='brand'>guestpool</span><nav aria-label='console'>{links}"
            f"</nav></header><main id='main'>{body}</main></body></html>")


def state_badge(state: str) -> str:
    return f"<span class='state {e(state)}'>{e(state)}</span>"


def when(at: float | None, now: float) -> str:
    if at is None:
        return "<span class='muted'>never</span>"
    return f"<time datetime='{fv.iso(at)}' title='{fv.iso(at)}'>{e(fv.ago(at, now))}</time>"


def vm_link(name: str) -> str:
    return f"<a href='/fleet/{quote(name, safe='')}'>{e(name)}</a>"


# -- the fleet table -----------------------------------------------------------------------

def fleet_query(params: Mapping[str, str]) -> fv.FleetQuery:
    """The fleet table's query from a URL's parameters; ValueError says what is wrong."""
    state = params.get("state", "")
    if state and state not in fv.STATES:
        raise ValueError(f"state must be one of {', '.join(fv.STATES)}")
    sort = params.get("sort", "name")
    if sort not in fv.SORTS:
        raise ValueError(f"sort must be one of {', '.join(fv.SORTS)}")
    stale = params.get("stale", "")
    size = params.get("size", "50")
    page = params.get("page", "1")
    if not size.isdigit() or int(size) not in PAGE_SIZES:
        raise ValueError(f"size must be one of {', '.join(map(str, PAGE_SIZES))}")
    if not page.isdigit() or not 1 <= int(page) <= 10**6:
        raise ValueError("page must be a whole number from 1")
    return fv.FleetQuery(search=params.get("q", "")[:200], distro=params.get("distro", ""),
                         version=params.get("version", ""), state=state,
                         stale_s=fv.parse_age(stale) if stale else None, sort=sort,
                         desc=params.get("desc") == "1", limit=int(size),
                         offset=(int(page) - 1) * int(size))


def _select(name: str, label: str, options: Mapping[str, str], chosen: str) -> str:
    opts = "".join(f"<option value='{e(v)}'{' selected' if v == chosen else ''}>{e(t)}</option>"
                   for v, t in options.items())
    return f"<label for='f-{name}'>{label}<select id='f-{name}' name='{name}'>{opts}</select>" \
           "</label>"


def render_fleet(store: Store, params: Mapping[str, str]) -> str:
    now = time.time()
    q = fleet_query(params)
    rows, total = fv.fleet_page(store, q, now)
    distro_opts = {"": "all"} | {
        name: f"{name} ({n})" for name, n in _distro_totals(fv.distros(store)).items()}
    keep = {k: v for k, v in params.items() if k in ("q", "distro", "version", "state", "stale",
                                                     "sort", "desc", "size") and v}

    def url(**change: str) -> str:
        merged = {**keep, **change}
        return "/fleet?" + urlencode({k: v for k, v in merged.items() if v})

    form = (
        "<form class='filters' method='get' action='/fleet' role='search'>"
        f"<label for='f-q'>Search<input id='f-q' name='q' type='search' size='24' "
        f"value='{e(q.search)}' placeholder='VM, hostname or OS'></label>"
        + _select("distro", "Distro", distro_opts, q.distro)
        + f"<label for='f-version'>Version<input id='f-version' name='version' size='6' "
          f"value='{e(q.version)}'></label>"
        + _select("state", "State", {"": "all"} | {s: s for s in fv.STATES}, q.state)
        + _select("stale", "Not inspected for", STALE_CHOICES, params.get("stale", ""))
        + _select("sort", "Sort by", SORT_LABELS, q.sort)
        + _select("size", "Per page", {str(n): str(n) for n in PAGE_SIZES}, str(q.limit))
        + ("<input type='hidden' name='desc' value='1'>" if q.desc else "")
        + "<button type='submit'>Apply</button>"
        + (" <a href='/fleet'>Clear filters</a>" if keep.keys() - {"size", "sort"} else "")
        + "</form>")

    def head(key: str, label: str, cls: str = "") -> str:
        if key not in fv.SORTS:
            return f"<th scope='col'{cls}>{label}</th>"
        desc = q.sort == key and not q.desc
        mark = (" ▼" if q.desc else " ▲") if q.sort == key else ""
        aria = (f" aria-sort='{'descending' if q.desc else 'ascending'}'"
                if q.sort == key else "")
        link = url(sort=key, desc="1" if desc else "", page="")
        return f"<th scope='col'{cls}{aria}><a href='{e(link)}'>{label}{mark}</a></th>"

    body_rows = "".join(
        f"<tr><td>{vm_link(r['vm'])}</td><td>{e(str(r['trust_group'] or ''))}</td>"
        f"<td>{e(fv.os_label(r))}</td><td class='num'>{_n(r['packages'])}</td>"
        f"<td>{when(r['inspected_at'], now)} <small class='muted'>{_iso(r['inspected_at'])}"
        f"</small></td><td>{state_badge(r['state'])}</td><td>{_failure(r, now)}</td></tr>"
        for r in rows) or "<tr><td colspan='7'>no VM matches these filters</td></tr>"
    page = q.offset // q.limit + 1
    last_page = max(1, -(-total // q.limit))
    nav = "<nav class='pages' aria-label='pages'>"
    nav += (f"<a href='{e(url(page=str(page - 1)))}' rel='prev'>← previous</a>" if page > 1
            else "<span class='muted'>← previous</span>")
    shown = f"{q.offset + 1}–{q.offset + len(rows)}" if rows else "0"
    nav += f"<span>{shown} of {total:,} VMs · page {page} of {last_page}</span>"
    nav += (f"<a href='{e(url(page=str(page + 1)))}' rel='next'>next →</a>" if page < last_page
            else "<span class='muted'>next →</span>")
    nav += "</nav>"
    table = ("<table id='fleet'><caption class='skip'>VMs</caption><thead><tr>"
             + head("name", "VM") + "<th scope='col'>trust group</th>" + head("distro", "OS")
             + head("packages", "packages", " class='num'") + head("age", "last inspected")
             + head("state", "state") + "<th scope='col'>failure</th></tr></thead><tbody>"
             + body_rows + "</tbody></table>")
    current = "/fleet?state=failed" if q.state == "failed" and not q.search else "/fleet"
    return layout("Fleet", f"<h1>Fleet</h1>{form}{nav}{table}{nav}", current)


def _failure(row: dict[str, Any], now: float) -> str:
    """The fleet table's failure cell: reason, message and when (failed VMs only)."""
    if row["state"] != "failed":
        return ""
    return (f"{e(str(row['error_kind'] or 'unknown'))}: {e(str(row['error'] or '')[:160])}"
            f" <small class='muted'>{when(row['last_at'], now)}</small>")


def _job_cell(attempt: dict[str, Any]) -> str:
    """A history row's job column: an unchanged VM ran no job, it carries an inspection."""
    if attempt["state"] == "unchanged":
        return f"carries {e(fv.iso(attempt['inspected_at']))}"
    return seconds(attempt["timings"].get("job", attempt["timings"].get("total")))


def _distro_totals(rows: list[dict[str, Any]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for d in rows:
        if d["distro"]:
            totals[d["distro"]] = totals.get(d["distro"], 0) + d["vms"]
    return {k: totals[k] for k in sorted(totals)}


# -- one VM --------------------------------------------------------------------------------

def render_vm(store: Store, name: str) -> str | None:
    now = time.time()
    d = fv.vm_detail(store, name)
    if d is None:
        return None
    os_ = d["os"] or {}
    pk = d["packages"]
    facts = [("state", state_badge(d["state"])), ("trust group", e(str(d["trust_group"] or ""))),
             ("OS", e(str(os_.get("product_name") or fv.os_label(os_) or "not inspected"))),
             ("distro / version", e(fv.os_label(os_))),
             ("hostname", e(str(os_.get("hostname") or ""))),
             ("arch", e(str(os_.get("arch") or ""))),
             ("packages", f"{pk['count']} ({e(str(pk['format']))})" if pk else "not inspected"),
             ("last inspected", f"{when(d['inspected_at'], now)} · {fv.iso(d['inspected_at'])}"),
             ("verified unchanged", f"{when(d['verified_at'], now)} · {fv.iso(d['verified_at'])}"
              if d["state"] == "unchanged" else ""),
             ("round", e(str(d["round"] or "")))]
    if d["last_error"]:
        facts.append(("last attempt", f"failed {when(d['last_attempt_at'], now)}: "
                                      f"{e(str(d['last_error']['kind']))}: "
                                      f"{e(str(d['last_error']['message']))}"))
    dl = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts if v)
    disks = "".join(f"<tr><td><code>{e(x['path'])}</code></td><td>{e(str(x['format']))}</td></tr>"
                    for x in d["disks"]) or "<tr><td colspan=2>none recorded</td></tr>"
    fss = "".join(
        f"<tr><td><code>{e(str(f.get('device')))}</code></td><td>{e(str(f.get('type') or ''))}"
        f"</td><td>{e(str(f.get('label') or ''))}</td>"
        f"<td class='num'>{fv.human_bytes(f.get('size'))}</td>"
        f"<td class='num'>{fv.human_bytes(f.get('used'))}</td></tr>"
        for f in d["filesystems"] or []) or "<tr><td colspan=5>not inspected</td></tr>"
    users = "".join(f"<tr><td>{e(u['user'])}</td><td>{e(', '.join(u['findings']))}</td></tr>"
                    for u in d["users_with_findings"]) or \
        "<tr><td colspan=2>none (or the users inspector did not run)</td></tr>"
    entry = (d["results"].get("packages") or {}).get("value") or {}
    pkg_list = entry.get("packages") if isinstance(entry, dict) else None
    pkgs = "".join(
        f"<tr><td>{e(str(p.get('name')))}</td><td>{e(_version(p))}</td>"
        f"<td>{e(str(p.get('arch') or ''))}</td></tr>" for p in pkg_list or [])
    opened = " open" if pkg_list and len(pkg_list) <= 500 else ""
    pkg_section = (f"<details id='packages'{opened}><summary>{len(pkg_list)} packages</summary>"
                   "<table><thead><tr><th scope='col'>name</th><th scope='col'>version</th>"
                   f"<th scope='col'>arch</th></tr></thead><tbody>{pkgs}</tbody></table>"
                   "</details>" if pkg_list else "<p>no package list</p>")
    timings = "".join(f"<tr><td>{e(k)}</td><td class='num'>{v:.2f} s</td></tr>"
                      for k, v in d["timings"].items() if isinstance(v, int | float))
    inspectors = "".join(
        f"<tr><td>{e(n)}</td><td>{e(str(x.get('version')))}</td>"
        f"<td>{state_badge('inspected' if x.get('ok') else 'failed')}</td>"
        f"<td class='num'>{seconds(x.get('seconds'))}</td>"
        f"<td>{e(_error_text(x.get('error')))}</td></tr>"
        for n, x in sorted(d["results"].items()))
    history = "".join(
        f"<tr><td>{e(str(h['round'] or ''))}</td><td>{when(h['at'], now)}</td>"
        f"<td>{state_badge(h['state'])}</td><td class='num'>{_job_cell(h)}"
        f"</td><td>{e(_error_text(h['error']))}</td></tr>" for h in d["history"])
    timeline = list(reversed(d["drift_timeline"]))
    drift_chart = bar_chart("Drift: changes per round", [str(t["round"]) for t in timeline],
                            [Series("changes", [t["changes"] for t in timeline], "#7a4b00")],
                            empty="no drift recorded")
    drift_rows = "".join(
        f"<tr><td>{when(c['at'], now)}</td><td>{e(str(c['round_id'] or ''))}</td>"
        f"<td>{e(str(c['kind']))}</td><td><code>{e(str(c['key']))}</code></td>"
        f"<td>{e(_short(c['before']))}</td><td>{e(_short(c['after']))}</td></tr>"
        for c in d["last_drift"]) or "<tr><td colspan=6>no drift recorded</td></tr>"
    body = f"""<p><a href="/fleet">← fleet</a></p><h1>VM {e(name)}</h1>
<div class="cols"><section aria-labelledby="h-summary"><h2 id="h-summary">Summary</h2>
<dl class="facts" id="summary">{dl}</dl></section>
<section aria-labelledby="h-timings"><h2 id="h-timings">Latest job timings</h2>
<table><tbody>{timings or '<tr><td>none</td></tr>'}</tbody></table></section></div>
<h2 id="h-disks">Disks and filesystems</h2><div class="cols"><table><thead><tr>
<th scope="col">disk</th><th scope="col">format</th></tr></thead><tbody>{disks}</tbody></table>
<table id="filesystems"><thead><tr><th scope="col">device</th><th scope="col">type</th>
<th scope="col">label</th><th scope="col" class="num">size</th><th scope="col" class="num">used
</th></tr></thead><tbody>{fss}</tbody></table></div>
<h2 id="h-packages">Packages</h2>{pkg_section}
<h2 id="h-users">Users with findings</h2><table><tbody>{users}</tbody></table>
<h2 id="h-inspectors">Latest results by inspector</h2><table><thead><tr><th scope="col">
inspector</th><th scope="col">version</th><th scope="col">result</th><th scope="col"
class="num">seconds</th><th scope="col">error</th></tr></thead><tbody>{inspectors or
'<tr><td colspan=5>no successful inspection</td></tr>'}</tbody></table>
<h2 id="h-history">History</h2><table id="history"><thead><tr><th scope="col">round</th>
<th scope="col">when</th><th scope="col">result</th><th scope="col" class="num">job</th>
<th scope="col">error</th></tr></thead><tbody>{history or
'<tr><td colspan=5>never attempted</td></tr>'}</tbody></table>
<h2 id="h-drift">Drift timeline</h2><div class="charts">{drift_chart}</div>
<table id="drift"><thead><tr><th scope="col">when</th><th scope="col">round</th>
<th scope="col">change</th><th scope="col">what</th><th scope="col">before</th>
<th scope="col">after</th></tr></thead><tbody>{drift_rows}</tbody></table>"""
    return layout(f"VM {name}", body, "")


def _iso(at: float | None) -> str:
    return fv.iso(at) if at is not None else ""


def _n(v: Any) -> str:
    return "" if v is None else str(v)


def _version(p: Mapping[str, Any]) -> str:
    v = str(p.get("version") or "")
    if p.get("epoch"):
        v = f"{p['epoch']}:{v}"
    return f"{v}-{p['release']}" if p.get("release") else v


def seconds(v: Any) -> str:
    return f"{v:.2f} s" if isinstance(v, int | float) else ""


def _short(v: Any) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= 60 else s[:57] + "…"


def _error_text(err: Any) -> str:
    if not err:
        return ""
    if isinstance(err, dict):
        return f"{err.get('kind', '?')}: {err.get('message', '')}"[:200]
    return str(err)[:200]


def routes(svc: Service, guarded: Callable[[Handler], Handler]) -> list[Route]:
    """The console's pages, behind the API's guard (token, Host check).
    ``/fleet?format=json`` gives the same rows as JSON."""

    async def fleet(request: Request) -> Response:
        params = dict(request.query_params)
        try:
            if params.pop("format", "") == "json":
                rows, total = await svc.reads(fv.fleet_page, fleet_query(params))
                return JSONResponse({"total": total, "vms": rows})
            return HTMLResponse(await svc.reads(render_fleet, params))
        except ValueError as err:
            return HTMLResponse(layout("Bad request", f"<h1>Bad request</h1><p>{e(str(err))}"
                                       "</p><p><a href='/fleet'>Back to the fleet</a></p>"), 422)

    async def vm(request: Request) -> Response:
        page = await svc.reads(render_vm, request.path_params["name"])
        if page is None:
            return HTMLResponse(layout("Unknown VM", "<h1>Unknown VM</h1><p>No VM of that name "
                                       "in the store. <a href='/fleet'>The fleet</a></p>"), 404)
        return HTMLResponse(page)

    return [Route("/fleet", guarded(fleet), methods=["GET"]),
            Route("/fleet/{name:path}", guarded(vm), methods=["GET"])]
