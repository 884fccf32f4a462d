"""Debian's chromium driven by Selenium through Debian's chromedriver, for the console's tests."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from agentgov.cli.stack import LocalStack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@contextmanager
def chromium() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("the console tests need Debian's chromium and chromium-driver (make system-deps installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # Headless, and nothing that reaches for the network this machine does not have.
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def wait(driver: WebDriver, timeout_s: float = 20) -> WebDriverWait[WebDriver]:
    """A wait that reads again when htmx swapped the element it was reading (live tables refresh),
    or a navigation replaced the page: Chrome then sometimes reports the node it was reading as a
    plain WebDriverException ("Node with given id does not belong to the document") instead of a
    stale element. A condition that never holds still fails, as a timeout."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.1,
                         ignored_exceptions=[StaleElementReferenceException, WebDriverException])


def text_of(driver: WebDriver, css: str) -> str:
    """The text of the element `css` names now, read again if a refresh replaces it meanwhile."""
    found: list[str] = []

    def read(d: WebDriver) -> bool:
        found[:] = [d.find_element(By.CSS_SELECTOR, css).text]
        return True

    wait(driver).until(read)
    return found[0]


def click(driver: WebDriver, css: str) -> None:
    """Click the element `css` names, again if a refresh replaced it between finding and clicking."""
    def press(d: WebDriver) -> bool:
        d.find_element(By.CSS_SELECTOR, css).click()
        return True

    wait(driver).until(press)


def submit_sign_in(driver: WebDriver, token: str) -> None:
    """Fill in the sign-in form on screen and wait for the answer page."""
    driver.find_element(By.ID, "token").send_keys(token)
    button = driver.find_element(By.ID, "sign-in")
    button.click()
    # The answer page has replaced the form (Chrome may report the old node as gone either way).
    WebDriverWait(driver, 20, poll_frequency=0.1, ignored_exceptions=[WebDriverException]).until(
        ec.staleness_of(button))


def sign_in(driver: WebDriver, stack: LocalStack, token: str) -> None:
    driver.get(stack.console_url + "/login")
    submit_sign_in(driver, token)
