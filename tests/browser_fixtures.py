"""Debian's headless Chromium driven by selenium (chromium-driver at its Debian path: nothing is
downloaded), and the waits the dashboard's browser tests share."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 15
#: what a wait retries on: the pages re-render their tables and badges on every WebSocket message, so
#: an element found a moment ago may be gone or replaced when it is read
RERENDERED = (NoSuchElementException, StaleElementReferenceException)


@contextmanager
def chromium(window: str = "1400,1000") -> Iterator[webdriver.Chrome]:
    """A headless Chromium that keeps the browser's console log (for ``console_errors``)."""
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", f"--window-size={window}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def text_in(driver: webdriver.Chrome, element_id: str, text: str, wait_s: float = WAIT_S) -> None:
    """Wait until ``text`` is shown in the element ``element_id``."""
    WebDriverWait(driver, wait_s, ignored_exceptions=RERENDERED).until(
        ec.text_to_be_present_in_element((By.ID, element_id), text),
        f"{text!r} never shown in #{element_id} of {driver.current_url}",
    )


def click(driver: webdriver.Chrome, element_id: str, wait_s: float = WAIT_S) -> None:
    """Click the element ``element_id``, found again if the page re-rendered it between find and click."""
    WebDriverWait(driver, wait_s, ignored_exceptions=RERENDERED).until(
        lambda d: d.find_element(By.ID, element_id).click() or True, f"#{element_id} never clickable"
    )


def click_and_confirm(driver: webdriver.Chrome, button_id: str) -> None:
    """Click the button and accept the confirmation dialog it opens."""
    click(driver, button_id)
    WebDriverWait(driver, WAIT_S).until(ec.alert_is_present()).accept()


#: Endpoints of issue 16 that the lead wires later: until then they answer 404, which the pages show as
#: "not available" (Chromium still logs the failed request; it is no script error).
OPTIONAL_ENDPOINTS = ("/api/trading", "/api/account", "/api/models/promotions", "/explain")


def console_errors(driver: webdriver.Chrome, allowed: tuple[str, ...] = ()) -> list[str]:
    """The browser console's errors since the last call (SEVERE entries; the log is drained), but the
    404s of ``OPTIONAL_ENDPOINTS`` and messages containing one of ``allowed``."""
    errors = []
    for entry in driver.get_log("browser"):
        if entry["level"] != "SEVERE":
            continue
        message = str(entry["message"])
        optional_404 = entry.get("source") == "network" and " 404 " in f" {message} ".replace("(", " ")
        if (optional_404 and any(p in message for p in OPTIONAL_ENDPOINTS)) or any(
            a in message for a in allowed
        ):
            continue
        errors.append(message)
    return errors
