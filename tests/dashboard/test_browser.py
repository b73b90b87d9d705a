"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright with its executable path) on
the default fleet as `edgeplane up` runs it: nothing is fetched from beyond the machine, every metro is on the
map and in the table, a drain made elsewhere shows within 2 s, the page's own buttons drain and undrain, the
planner's published scenarios show, and a screenshot is kept in test-artifacts/; the peering panel shows a
published report, its names as text."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from edgeplane.fleet import load_default_fleet
from edgeplane.local import get_json
from tests._time import wait_for
from tests.conftest import ROOT, RunningFleet, free_port, terminate
from tests.control.test_peering_api import TOKEN as PEERING_TOKEN
from tests.control.test_peering_api import put as put_report
from tests.test_reports_peering import sample_report

pytestmark = pytest.mark.slow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
REFLECT_MS = 2000  # the bound for a drain to show on the page
PEERING_SHOWN_MS = 30_000  # a bound for a stuck page: the panel reads the report every 5 s


def require_chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: scripts/install installs it with apt-get")
        pytest.skip("chromium is not installed (scripts/install installs it with apt-get)")
    return CHROMIUM


def launch(playwright: Any, chromium: str) -> Any:
    return playwright.chromium.launch(
        executable_path=chromium,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--disable-dev-shm-usage"],
    )  # fmt: skip


def test_the_dashboard_shows_every_metro_live_and_reflects_a_drain(
    emulator_fleet: RunningFleet, tmp_path: Path
) -> None:
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    fleet = emulator_fleet
    metros = {m.code for m in load_default_fleet().metros}
    demand = tmp_path / "demand.csv"
    demand.write_text(
        "metro,model,requests_per_second,prompt_tokens,output_tokens\nlon,llama-3.1-8b-instruct,5,200,100\n"
    )
    fleet.cli("plan", "scenarios", "--demand", str(demand), "--fast", "--publish")
    fetched: list[str] = []
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright, chromium)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1100})
            page.on("request", lambda request: fetched.append(request.url))
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
            page.goto(fleet.control_url + "/")

            page.wait_for_function(
                "n => document.querySelectorAll('#map path[data-metro]').length === n", arg=len(metros)
            )
            on_map = page.eval_on_selector_all("#map path[data-metro]", "paths => paths.map(p => p.dataset.metro)")
            in_table = page.eval_on_selector_all("#metros tbody tr", "rows => rows.map(r => r.dataset.metro)")
            assert set(on_map) == metros and set(in_table) == metros
            # The world outline, from our own world-atlas copy: a path per country.
            page.wait_for_function("document.querySelectorAll('.leaflet-world-pane path').length > 100")
            page.wait_for_selector("#connection[data-state='open']")
            assert page.locator("#scenarios tbody tr").count() > 0
            assert "published" in page.inner_text("#scenarios-meta")

            # A drain made elsewhere (the CLI) reaches the page within 2 s, on the map and in the table.
            fleet.cli("drain", "metro", "sea", "--force")
            page.wait_for_selector("#map path[data-metro='sea'][data-state='drained']", timeout=REFLECT_MS)
            page.wait_for_selector("#metros tr[data-metro='sea'][data-state='drained']", timeout=REFLECT_MS)
            page.wait_for_selector("#drains li[data-drain='metro sea']", timeout=REFLECT_MS)
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

            # The page's own buttons act through the admin API (no token needed on loopback).
            page.locator("#metros tr[data-metro='sea'] button", has_text=re.compile("^undrain$")).click()
            page.wait_for_selector("#map path[data-metro='sea'][data-state='serving']", timeout=REFLECT_MS)
            page.locator("#units tr[data-unit='sjc1-u2'] button", has_text=re.compile("^drain$")).click()
            page.wait_for_selector("#units tr[data-unit='sjc1-u2'][data-out='yes']", timeout=REFLECT_MS)
            page.locator("#units tr[data-unit='sjc1-u2'] button", has_text=re.compile("^undrain$")).click()
            page.wait_for_selector("#units tr[data-unit='sjc1-u2'][data-out='no']", timeout=REFLECT_MS)
        finally:
            browser.close()
            fleet.cli("undrain", "metro", "sea", check=False)
            fleet.cli("undrain", "unit", "sjc1-u2", check=False)
    assert (ARTIFACTS / "dashboard.png").stat().st_size > 10_000
    assert problems == []
    beyond = [url for url in fetched if urllib.parse.urlsplit(url).hostname != "127.0.0.1"]
    assert fetched and beyond == []


def test_with_an_admin_token_the_buttons_wait_for_it_and_a_wrong_one_changes_nothing(tmp_path: Path) -> None:
    """A control plane with an admin token (as beyond loopback): the page's buttons stay disabled until a
    token is typed; a wrong token is refused with the API's message and drains nothing; the right one acts,
    and it is kept for the tab (sessionStorage) across a reload."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    port = free_port()
    control_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeplane", "control", "run", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "EDGEPLANE_ADMIN_TOKEN": "s3cret-test-token"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    problems: list[str] = []
    try:
        wait_healthy(control_url, process)
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.goto(control_url + "/")
                # No site agent runs here, so the units table has the PoP rows only: their buttons will do.
                drain = page.locator("#units tr[data-pop='fra1'] button", has_text=re.compile("^drain$"))
                drain.wait_for()
                assert drain.is_disabled()
                assert drain.get_attribute("title") == "type the admin token first"

                page.fill("#token", "not-the-token")
                assert drain.is_enabled()
                with page.expect_response(lambda r: r.url.endswith("/api/drains")) as refused:
                    drain.click()
                assert refused.value.status == 401
                page.wait_for_selector("#toast:has-text('needs the admin token')")
                assert drains(control_url) == []

                page.fill("#token", "s3cret-test-token")
                drain.click()
                page.wait_for_selector("#drains li[data-drain='pop fra1']", timeout=REFLECT_MS)
                assert drains(control_url) == ["pop fra1"]

                page.reload()
                assert page.input_value("#token") == "s3cret-test-token"
                undrain = page.locator("#units tr[data-pop='fra1'] button", has_text=re.compile("^undrain$"))
                undrain.click()
                page.wait_for_selector("#drains li[data-drain='pop fra1']", state="detached", timeout=REFLECT_MS)
                assert drains(control_url) == []
            finally:
                browser.close()
    finally:
        assert terminate(process, 10)
    assert problems == []


def test_the_peering_panel_shows_the_published_report_with_names_as_text(tmp_path: Path) -> None:
    """Before any report: the panel says how to publish one. A report PUT through the API (with the admin token,
    as `peering candidates --publish` sends it) shows with its time, each metro's top candidates, and a hostile
    network name as the text it is: no element made of it, nothing run."""
    chromium = require_chromium()
    from playwright.sync_api import sync_playwright

    port = free_port()
    control_url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "edgeplane", "control", "run", "--port", str(port), "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "EDGEPLANE_ADMIN_TOKEN": PEERING_TOKEN},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    hostile = (
        "<img src=/x onerror=\"document.body.dataset.pwned='yes'\"><script>document.body.dataset.pwned='yes'</script>"
    )
    report = sample_report(hostile)
    report["metros"][0]["candidates"].extend(
        {**report["metros"][0]["candidates"][1], "asn": 64600 + n, "name": f"more-{n}"} for n in range(6)
    )  # 8 candidates in New York: the panel shows the top 5
    problems: list[str] = []
    try:
        wait_healthy(control_url, process)
        with sync_playwright() as playwright:
            browser = launch(playwright, chromium)
            try:
                page = browser.new_page(viewport={"width": 1440, "height": 1100})
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.goto(control_url + "/")
                page.wait_for_selector(
                    "#peering tbody tr:has-text('no peering report published yet (edgeplane peering candidates"
                    " --publish)')"
                )

                status, answer = put_report(control_url, report, token=PEERING_TOKEN)
                assert status == 200, answer
                page.wait_for_selector("#peering tr[data-asn='64510']", timeout=PEERING_SHOWN_MS)
                assert page.locator("#peering tr[data-metro='nyc'][data-asn]").count() == 5
                assert page.locator("#peering tr[data-metro='lon'][data-asn]").count() == 1
                assert "no candidates" in page.inner_text("#peering tr[data-metro='ams']:not(.pop)")
                first = page.locator("#peering tr[data-asn='64510'] td")
                assert first.all_inner_texts() == [
                    "AS64510",
                    hostile,
                    "1.2",
                    "AS64497 transit-a",
                    "0.60",
                    "ix: NYIIX & <friends>",
                ]
                assert page.locator("#peering tr[data-asn='64511'] td").nth(4).inner_text() == "unknown price"
                assert page.locator("#peering img, #peering script").count() == 0
                assert page.get_attribute("body", "data-pwned") is None
                assert "as of " in page.inner_text("#peering-meta") and "rib.mrt <dump>" in page.inner_text(
                    "#peering-meta"
                )
                ARTIFACTS.mkdir(exist_ok=True)
                page.locator("#peering-panel").screenshot(path=str(ARTIFACTS / "dashboard-peering.png"))
            finally:
                browser.close()
    finally:
        assert terminate(process, 10)
    assert problems == []


def wait_healthy(url: str, process: subprocess.Popen[bytes]) -> None:
    def healthy() -> bool:
        assert process.poll() is None, "the control plane exited"
        with contextlib.suppress(OSError, ValueError):
            return bool(get_json(url + "/healthz")["status"] == "ok")
        return False

    wait_for("the control plane is healthy", healthy)


def drains(url: str) -> list[str]:
    return sorted(f"{d['kind']} {d['code']}" for d in get_json(url + "/api/drains", 5)["drains"])
