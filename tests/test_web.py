"""The web chat page in a real headless Chromium (Debian's chromium and chromium-driver, driven by
Selenium with /usr/bin/chromedriver given explicitly, so Selenium Manager never reaches for the
network). Sign in, ask, watch the answer stream in, follow a citation, rate it; a bad token gets the
401 message. Saves build/web-chat.png. Skipped with a one-line reason where no browser is installed
(`make test` installs it when it runs as root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from labkit.app.tokens import TokenStore
from labkit.config import REPO_ROOT
from tests.conftest import free_port, module_home

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM.exists() and DRIVER.exists()),
                                reason="no /usr/bin/chromium and /usr/bin/chromedriver (apt-get install "
                                       "chromium chromium-driver; make test does it as root)")
SCREENSHOT = REPO_ROOT / "build" / "web-chat.png"
# counts every change of the last answer's text: more than one means it arrived in pieces
WATCH = """
window.__changes = 0;
new MutationObserver(() => { window.__changes += 1; })
  .observe(document.getElementById('log'), {subtree: true, characterData: true, childList: true});
"""


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    with module_home(tmp_path_factory, "web-home") as settings:
        port = free_port()
        env = {**os.environ, "LABKIT_APP_TIMEOUT_S": "900", "LABKIT_APP_RATE_BURST": "100"}
        settings.home.mkdir(parents=True, exist_ok=True)
        log = settings.home / "app.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "labkit.cli", "serve", "--port", str(port)], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            while True:  # the process either answers /health or dies; a hang ends at the test timeout
                assert proc.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/health", timeout=5).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            yield base, settings
        finally:
            proc.terminate()
            proc.wait(timeout=60)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900",
                "--disable-gpu", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=str(DRIVER)), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def _sign_in(driver, token: str) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "token")
    box.clear()
    box.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin-form button").click()


def _ask(driver, question: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.ID, "question")
    box.send_keys(question)
    box.send_keys(Keys.ENTER)  # the keyboard path: Enter sends


def test_a_bad_token_gets_the_sign_in_message(web, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, _ = web
    browser.get(base)
    _sign_in(browser, "lk_not-a-real-token")
    _ask(browser, "What did I order last?")
    WebDriverWait(browser, 120).until(lambda d: "not accepted" in d.find_element(By.ID, "status").text)
    assert browser.find_element(By.ID, "signin").is_displayed()  # back to sign-in
    assert browser.execute_script("return sessionStorage.getItem('contoso-chat-token')") is None


def test_sign_in_ask_stream_cite_and_rate(web, browser) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    base, settings = web
    token, _ = TokenStore(settings).issue("C-005")
    browser.get(base)
    assert "token" not in browser.current_url
    _sign_in(browser, token)
    assert browser.find_element(By.ID, "question") == browser.switch_to.active_element  # focus moved
    browser.execute_script(WATCH)
    _ask(browser, "How heavy is the Spark stove?")
    # done: the answer carries its feedback buttons (the model may take minutes on a loaded machine)
    WebDriverWait(browser, 600).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#log li.assistant .feedback"))
    answer = browser.find_elements(By.CSS_SELECTOR, "#log li.assistant")[-1]
    assert answer.find_element(By.CSS_SELECTOR, ".text").text.strip()
    assert browser.execute_script("return window.__changes") > 3  # pieces arrived one after another
    links = answer.find_elements(By.CSS_SELECTOR, ".sources a")
    assert links and all("/api/products/P-" in a.get_attribute("href") for a in links)
    product = httpx.get(links[0].get_attribute("href"), timeout=30).json()
    assert product["id"] == links[0].text
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOT))
    answer.find_element(By.CSS_SELECTOR, ".feedback button[data-rating='up']").click()
    WebDriverWait(browser, 60).until(lambda d: "Thanks" in d.find_element(By.ID, "status").text)
    stored = [json.loads(line) for line in (settings.home / "feedback.jsonl").read_text().splitlines()]
    assert stored[-1]["rating"] == "up" and len(stored[-1]["request_id"]) == 32
    assert SCREENSHOT.stat().st_size > 10_000
