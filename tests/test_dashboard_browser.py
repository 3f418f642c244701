"""The dashboard in a real browser: headless Chromium driven by selenium and chromedriver.

Logs in, saves screenshots of the overview, the CVE view and the rollout
page (into ``$SUTURE_ARTIFACTS/dashboard`` when set, else the test's tmp
folder; the path is printed), then halts a rollout through the form and its
confirmation page and checks the policy through the admin API.

Needs Debian's ``chromium`` and ``chromium-driver`` (``scripts/setup.sh
--test`` installs them) and selenium (the ``dev`` extra). Without them the
test skips, except under CI, which must run it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suture.server import Server
from tests.support.server import ADMIN, admin, simulated_fleet

CHROMIUM = "chromium"
CHROMEDRIVER = "chromedriver"
ARTIFACTS_ENV = "SUTURE_ARTIFACTS"


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if shutil.which(p) is None]
    try:
        import selenium  # noqa: F401, PLC0415
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{', '.join(missing)} missing: CI must run the browser test")
        pytest.skip(f"{', '.join(missing)} not installed (scripts/setup.sh --test installs them)")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    require_browser()
    from selenium import webdriver  # noqa: PLC0415
    from selenium.webdriver.chrome.service import Service  # noqa: PLC0415

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which(CHROMIUM))
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI and containers run the tests as root
        "--disable-dev-shm-usage",  # small /dev/shm in containers
        "--disable-gpu",
        "--window-size=1400,1000",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    # The Debian chromedriver, not selenium-manager's download: the test runs air-gapped.
    service = Service(executable_path=str(shutil.which(CHROMEDRIVER)))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = simulated_fleet(tmp_path)
    yield srv
    srv.stop()


def follow(browser: Any, element: Any) -> None:
    """Click ``element`` and wait for the page it leads to (a loaded machine answers late)."""
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support import expected_conditions  # noqa: PLC0415
    from selenium.webdriver.support.wait import WebDriverWait  # noqa: PLC0415

    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(page))


def screenshots(tmp_path: Path) -> Path:
    base = os.environ.get(ARTIFACTS_ENV)
    folder = Path(base) / "dashboard" if base else tmp_path / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {folder}")
    return folder


def test_log_in_look_around_and_halt_a_rollout(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    shots = screenshots(tmp_path)
    browser.get(server.url + "/cves/CVE-2026-1002")
    assert browser.current_url.startswith(server.url + "/login?next=")
    browser.find_element(By.NAME, "token").send_keys(ADMIN)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))
    assert browser.current_url == server.url + "/cves/CVE-2026-1002"  # back where it was asked
    assert "host-00" in browser.find_element(By.TAG_NAME, "main").text
    browser.save_screenshot(str(shots / "cve.png"))

    browser.get(server.url + "/")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "Fleet overview" in main and "Recent failures (2)" in main
    # The stylesheet loaded (from the server): the header is dark, not the default white.
    header = browser.find_element(By.TAG_NAME, "header")
    assert header.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)"
    browser.save_screenshot(str(shots / "overview.png"))
    browser.get(server.url + "/cves")
    browser.save_screenshot(str(shots / "cves.png"))

    browser.get(server.url + "/rollouts/stable")
    form = browser.find_element(By.ID, "halt-form")
    level = form.find_element(By.NAME, "level")
    level.clear()
    level.send_keys("2")
    form.find_element(By.NAME, "reason").send_keys("canaries fail level 2")
    follow(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    assert "Confirm: halt on stable" in browser.find_element(By.TAG_NAME, "h1").text
    assert admin(server, "GET", "/api/v1/rollouts/stable")["policy"]["halted_level"] is None
    browser.save_screenshot(str(shots / "confirm-halt.png"))
    follow(browser, browser.find_element(By.ID, "confirm"))

    assert browser.current_url == server.url + "/rollouts/stable"
    assert "level 2 on stable is halted" in browser.find_element(By.CLASS_NAME, "flash").text
    browser.save_screenshot(str(shots / "rollout-halted.png"))
    policy = admin(server, "GET", "/api/v1/rollouts/stable")["policy"]
    assert (policy["halted_level"], policy["halt_reason"]) == (2, "canaries fail level 2")
    assert {p.name for p in shots.glob("*.png")} >= {"overview.png", "cve.png"}


def test_page_through_hosts_revoke_a_token_and_delete_a_host(
    browser: Any, server: Server, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By  # noqa: PLC0415

    from suture.contract.checkin import Checkin  # noqa: PLC0415
    from suture.server.db import DbUrl, open_store  # noqa: PLC0415
    from suture.server.db import hosts as db_hosts  # noqa: PLC0415

    store = open_store(DbUrl("sqlite", f"{tmp_path}/s.db"))
    try:  # 205 more hosts: two pages of the host list (200 rows a page)
        for i in range(205):
            host = Checkin(
                f"more-{i:03d}", "m", "6.1.0-56-amd64", "", 0, "unsupported", None, "0.1", ()
            )
            db_hosts.record(store, host, "192.0.2.1", time.time())
    finally:
        store.close()
    shots = screenshots(tmp_path)
    browser.get(server.url + "/login")
    browser.find_element(By.NAME, "token").send_keys(ADMIN)
    follow(browser, browser.find_element(By.CSS_SELECTOR, "form button[type=submit]"))

    browser.get(server.url + "/hosts")
    assert "Hosts (209)" in browser.find_element(By.TAG_NAME, "h1").text
    assert len(browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")) == 200
    follow(browser, browser.find_element(By.LINK_TEXT, "Next page"))
    rows = browser.find_elements(By.CSS_SELECTOR, "main table tbody tr")
    assert len(rows) == 9 and not browser.find_elements(By.LINK_TEXT, "Next page")
    browser.save_screenshot(str(shots / "hosts-page-2.png"))

    # Revoke host-01's token (its id may not enrol again), through the confirmation page.
    browser.get(server.url + "/hosts/host-01")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "#revoke-form button[type=submit]"))
    assert "Confirm: revoke host host-01" in browser.find_element(By.TAG_NAME, "h1").text
    follow(browser, browser.find_element(By.ID, "confirm"))
    flash = browser.find_element(By.CLASS_NAME, "flash").text
    assert "the token of host host-01 is revoked" in flash
    assert admin(server, "GET", "/api/v1/hosts/host-01")["host"]["token"] == "revoked"  # noqa: S105

    # Delete host-02: gone from the API, back on the host list.
    browser.get(server.url + "/hosts/host-02")
    follow(browser, browser.find_element(By.CSS_SELECTOR, "#delete-form button[type=submit]"))
    follow(browser, browser.find_element(By.ID, "confirm"))
    assert browser.current_url == server.url + "/hosts"
    assert "host host-02 is deleted" in browser.find_element(By.CLASS_NAME, "flash").text
    browser.save_screenshot(str(shots / "host-deleted.png"))
    hosts = admin(server, "GET", "/api/v1/hosts?limit=1000")["hosts"]
    assert "host-02" not in {h["host_id"] for h in hosts} and len(hosts) == 208
