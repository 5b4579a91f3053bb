"""The status page in a real headless browser (Debian's chromium and chromedriver).

Skipped, with the reason, when chromium, chromedriver or selenium is missing (.ci/run
installs them). Set TRIO_ORCH_SCREENSHOT=path.png to save a phone-sized screenshot.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile

import pytest
from helpers import cli, wait_for, write_bot, write_config

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)),
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
        "chromium-driver; .ci/run does it)",
    ),
]
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the dev extra)")

TOKEN = "browser-test-token"
SLEEPER = """
import sys, time
print("hello from", sys.argv[1], flush=True)
while True:
    time.sleep(1)
"""
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=412,900",
]


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="trio-orch-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _state(driver, name):
    rows = driver.find_elements("css selector", f'tr[data-bot="{name}"]')
    return rows[0].get_attribute("data-state") if rows else None


def test_page_shows_every_bot_and_follows_changes_without_reload(
    tmp_path, manager_factory, browser
):
    write_bot(tmp_path / "bots", SLEEPER)
    names = ("Alpha", "Beta", "Gamma")
    bots = {
        name: {"script": "main.py", "directory": "bots", "args": [name], "description": name}
        for name in names
    }
    config = write_config(
        tmp_path / "bot_config.yaml",
        bots,
        stop_timeout=3,
        metrics_listen="127.0.0.1:0",
        web_token=TOKEN,
    )
    manager = manager_factory(config).wait_ready()
    address = wait_for(
        lambda: re.search(r"/metrics on http://([\d.]+:\d+)/", manager.output())
    ).group(1)
    wait_for(lambda: manager.output().count("hello from") == 3, message="three bots up")

    browser.get(f"http://{address}/")
    wait_for(lambda: all(_state(browser, n) == "running" for n in names), 20, message="rows")
    browser.execute_script("window.__sameDocument = 'yes';")
    body = browser.find_element("id", "bots").text
    for name in names:
        assert name in body
    assert "MiB" in body  # memory figures arrived

    # A change made elsewhere (the CLI) shows up without a reload.
    assert cli(config, "stop", "Beta").returncode == 0
    wait_for(lambda: _state(browser, "Beta") == "stopped", 15, message="Beta stopped on the page")
    assert browser.execute_script("return window.__sameDocument") == "yes"

    # Buttons: without the token the manager refuses; with it the action is done.
    def click(name, action):
        row = browser.find_element("css selector", f'tr[data-bot="{name}"]')
        row.find_element("css selector", f'button[data-action="{action}"]').click()

    click("Beta", "start")
    wait_for(lambda: "token" in browser.find_element("id", "message").text, message="refusal shown")
    assert _state(browser, "Beta") == "stopped"
    browser.find_element("id", "token").send_keys(TOKEN)
    click("Beta", "start")
    wait_for(lambda: _state(browser, "Beta") == "running", 15, message="Beta started")
    click("Alpha", "pause")
    wait_for(lambda: _state(browser, "Alpha") == "paused", 15, message="Alpha paused")

    # Logs on demand.
    row = browser.find_element("css selector", 'tr[data-bot="Gamma"]')
    row.find_element("xpath", ".//button[text()='log']").click()
    wait_for(
        lambda: "hello from Gamma" in browser.find_element("id", "log-Gamma").text,
        message="Gamma's log",
    )
    assert browser.execute_script("return window.__sameDocument") == "yes"

    screenshot = os.environ.get("TRIO_ORCH_SCREENSHOT")
    if screenshot:
        row.find_element("xpath", ".//button[text()='hide log']").click()
        browser.save_screenshot(screenshot)
    assert manager.stop() == 0
