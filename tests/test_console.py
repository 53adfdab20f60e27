"""The console: a real `guestpool serve` on loopback. Over HTTP on synthetic
stores (auth, escaping of hostile guest strings, filters and pages), and in
a real headless Chromium (selenium + Debian's chromium-driver) on a store of a
real scan, with screenshots written for a person to look at."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from helpers.server import AUTH, Server
from helpers.stored_results import deb, latest, os_value, packages_value
from prometheus_client.parser import text_string_to_metric_families

from guestpool import InspectResult, Store
from guestpool.bench.console import fill_store

ROOT = Path(__file__).parent.parent
ARTIFACTS = Path(__file__).parent / ".artifacts" / "console"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
SLASHED = "tenant-a/web 1#b?x"
ROW = re.compile(r"<tr><td><a href='/fleet/([^']+)'>")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A paused server on a store whose guest controls its hostname, OS name,
    package names, usernames and error text."""
    tmp = tmp_path_factory.mktemp("hostile")
    store = Store(tmp / "s.db")
    for rnd in range(2):
        rid = store.start_round(60, "pooled", 1, 2)
        os = os_value("debian", "12", "deb", f"Debian {SCRIPT}")
        os["hostname"] = SCRIPT
        res = latest("evil", os, packages_value("deb", [deb(IMG, "1.0-1"),
                                                         deb(f"p{rnd}", "1-1")]))["results"]
        res["users"] = {"inspector": "users", "version": "1", "ok": True, "error": None,
                        "seconds": 0.1, "value": {"uid0_not_root": [f"'\"><b>{rnd}"],
                                                  "authorized_keys": {}}}
        store.record(rid, InspectResult("evil", True, res))
        store.record(rid, InspectResult("broken", False, {}, error={
            "kind": "image", "message": f"bad header {SCRIPT}"}))
        store.record(rid, InspectResult(SLASHED, True, latest(
            SLASHED, os_value("alpine", "3.20", "apk", "Alpine Linux v3.20"), None)["results"]))
        store.end_round(rid, {"covered": 1, "failed": 1, "not_reached": 0})
    store.close()
    srv = Server(tmp / "s.db", "--paused")
    yield srv
    srv.stop()


def test_console_pages_need_the_token(hostile: Server) -> None:
    for path in ("/", "/fleet", "/fleet/evil", "/fleet?format=json"):
        assert httpx.get(hostile.url + path).status_code == 401, path
        assert httpx.get(hostile.url + path, headers=AUTH).status_code == 200, path
    assert httpx.get(hostile.url + "/fleet/nope", headers=AUTH).status_code == 404
    bad = httpx.get(hostile.url + "/fleet", params={"sort": SCRIPT}, headers=AUTH)
    assert bad.status_code == 422 and SCRIPT not in bad.text


def test_every_vm_name_has_a_working_link(hostile: Server) -> None:
    """A name with "/", "#", "?" and a space (Nova allows them): the fleet table's link
    reaches the VM's page, and the API's /vms/NAME and /vms/NAME/drift answer."""
    c = httpx.Client(base_url=hostile.url, headers=AUTH)
    links = ROW.findall(c.get("/fleet", params={"distro": "Alpine"}).text)
    assert links == [quote(SLASHED, safe="")]
    page = c.get("/fleet/" + links[0])
    assert page.status_code == 200 and "Alpine Linux v3.20" in page.text
    assert c.get("/vms/" + links[0]).json()["vm"] == SLASHED
    assert c.get("/vms/" + links[0] + "/drift").status_code == 200
    assert c.get("/fleet/" + quote("tenant-a/none", safe="")).status_code == 404


def test_console_escapes_every_guest_string(hostile: Server) -> None:
    c = httpx.Client(base_url=hostile.url, headers=AUTH)
    pages = {"vm": c.get("/fleet/evil").text, "overview": c.get("/").text,
             "fleet": c.get("/fleet", params={"q": SCRIPT}).text,
             "failed": c.get("/fleet", params={"state": "failed"}).text}
    for name, page in pages.items():
        assert "<script" not in page and "<img" not in page and "<b>" not in page, name
        assert "onerror=alert" not in page.replace("onerror=alert(2)&gt;", ""), name
    vm = pages["vm"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in vm  # hostname and OS name, escaped
    assert "&lt;img src=x onerror=alert(2)&gt;" in vm  # the package name
    assert "&#x27;&quot;&gt;&lt;b&gt;1" in vm  # a username that tries to leave an attribute
    assert "bad header &lt;script&gt;" in pages["overview"]  # failures by reason
    assert ROW.findall(pages["fleet"]) == ["evil"]  # searched by its hostname
    assert f"value='{SCRIPT.replace('<', '&lt;').replace('>', '&gt;')}'" in pages["fleet"]
    assert ROW.findall(pages["failed"]) == ["broken"]


def test_fleet_table_filters_sorts_and_pages(tmp_path: Path) -> None:
    fill_store(tmp_path / "s.db", vms=120, rounds=2, packages=5)
    srv = Server(tmp_path / "s.db", "--paused")
    try:
        c = httpx.Client(base_url=srv.url, headers=AUTH)
        first = c.get("/fleet", params={"size": 25}).text
        assert ROW.findall(first) == [f"vm-{i:05d}" for i in range(25)]
        assert "1–25 of 120 VMs · page 1 of 5" in first
        last = c.get("/fleet", params={"size": 25, "page": 5}).text
        assert len(ROW.findall(last)) == 20 and "rel='next'" not in last
        desc = ROW.findall(c.get("/fleet", params={"sort": "name", "desc": 1}).text)
        assert desc[0] == "vm-00119"
        debian = c.get("/fleet", params={"distro": "debian", "format": "json"}).json()
        assert debian["total"] == len([i for i in range(120) if i % 7 in (0, 1)])
        assert {v["distro"] for v in debian["vms"]} == {"debian"}
        failed = c.get("/fleet", params={"state": "failed", "format": "json"}).json()
        html = c.get("/fleet", params={"state": "failed", "size": 200}).text
        assert sorted(ROW.findall(html)) == sorted(v["vm"] for v in failed["vms"])
        assert c.get("/fleet", params={"size": 7}).status_code == 422
    finally:
        srv.stop()


# -- Grafana -------------------------------------------------------------------------------

SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count",
                                                             "_created"),
            "gauge": ("",)}


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from _exprs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _exprs(v)


def test_grafana_dashboard_uses_only_exposed_metrics(hostile: Server) -> None:
    text = httpx.get(hostile.url + "/metrics", headers=AUTH).text
    exposed = {f.name + s for f in text_string_to_metric_families(text)
               for s in SUFFIXES.get(f.type, ("",))}
    dashboard = json.loads((ROOT / "examples" / "grafana-dashboard.json").read_text())
    exprs = list(_exprs(dashboard))
    assert len(exprs) >= 8
    used = set()
    for expr in exprs:
        names = set(re.findall(r"\bguestpool_[a-z_]+\b", expr))
        assert names, expr
        used |= names
    assert used <= exposed, used - exposed
    for wanted in ("guestpool_round_coverage_ratio", "guestpool_failures_total",
                   "guestpool_boots_total", "guestpool_job_seconds_bucket",
                   "guestpool_boot_seconds_bucket"):
        assert wanted in used, wanted


# -- a real browser on a real scan ---------------------------------------------------------

@pytest.fixture
def browser() -> Iterator[Any]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    assert chromium and driver, "bootstrap --dev installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1366,1000",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"):
        options.add_argument(flag)
    d = webdriver.Chrome(options=options, service=DriverService(executable_path=driver))
    d.implicitly_wait(5)  # an element of the next page may come after a click returns
    yield d
    d.quit()


def _shot(browser: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1366, min(max(int(height) + 200, 800), 5000))
    browser.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


def test_console_in_a_real_browser(scanned_store: tuple[Path, dict[str, str]],
                                   browser: Any) -> None:
    from selenium.common.exceptions import (
        StaleElementReferenceException,
        TimeoutException,
        WebDriverException,
    )
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    path, by_kind = scanned_store
    srv = Server(path, "--paused", "--open-reads")  # reads without a token, writes with one
    try:
        def rows() -> list[str] | None:
            """The fleet's names, or None while a submitted form replaces the page
            (Chromium then reports a node of the old page as stale or as not
            belonging to the document)."""
            try:
                return [a.text for a in browser.find_elements(By.CSS_SELECTOR,
                                                              "#fleet tbody td:first-child a")]
            except StaleElementReferenceException:
                return None
            except WebDriverException as e:
                if "does not belong to the document" in str(e):
                    return None
                raise

        def shows(expected: list[str]) -> None:
            """Wait for the page a form submitted (a click returns as it starts loading)."""
            wait = WebDriverWait(browser, 10, ignored_exceptions=[StaleElementReferenceException])
            try:
                wait.until(lambda _: rows() == expected)
            except TimeoutException:
                raise AssertionError(f"{browser.current_url}: not {expected}") from None

        browser.get(srv.url + "/fleet")
        assert sorted(rows() or []) == sorted(by_kind.values())
        states = {r.find_element(By.CSS_SELECTOR, "td:first-child").text:
                  r.find_element(By.CSS_SELECTOR, ".state").text
                  for r in browser.find_elements(By.CSS_SELECTOR, "#fleet tbody tr")}
        assert states[by_kind["data"]] == "never" and states[by_kind["debian"]] == "inspected"
        fleet_shot = _shot(browser, "fleet")
        # a filter narrows it: the distro select, then the Apply button
        Select(browser.find_element(By.ID, "f-distro")).select_by_value("debian")
        browser.find_element(By.CSS_SELECTOR, "form.filters button").click()
        shows([by_kind["debian"]])
        # the keyboard alone: search box, type, Enter
        box = browser.find_element(By.ID, "f-q")
        box.clear()
        Select(browser.find_element(By.ID, "f-distro")).select_by_value("")
        box.send_keys("alpine", Keys.ENTER)
        shows([by_kind["alpine"]])
        browser.find_element(By.LINK_TEXT, by_kind["alpine"]).click()
        summary = browser.find_element(By.ID, "summary").text
        assert "Alpine Linux" in summary and "apk" in summary
        packages = browser.find_elements(By.CSS_SELECTOR, "#packages tbody tr")
        assert len(packages) > 5
        assert any(p.text.startswith("busybox") for p in packages)
        assert browser.find_elements(By.CSS_SELECTOR, "#filesystems tbody tr")
        vm_shot = _shot(browser, "vm")
        browser.get(srv.url + "/")
        charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart")
        assert len(charts) == 5
        # the real scan's round: covered, freshness, job and wait drawn (no boot was
        # measured: this round's appliances were the shared pool's)
        assert len(browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")) == 4
        job_chart = next(c for c in charts if "Per-VM job" in c.text)
        tip = job_chart.find_element(By.CSS_SELECTOR, "svg g title").get_attribute("textContent")
        assert "ended" in (tip or "") and "p50:" in (tip or "") and "p95:" in (tip or "")
        assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg rect")  # bars drawn
        for section in ("round", "pool", "charts", "freshness", "failures", "rounds"):
            assert browser.find_element(By.ID, section)
        _shot(browser, "overview")
        assert fleet_shot.stat().st_size > 10_000 and vm_shot.stat().st_size > 10_000
    finally:
        srv.stop()
