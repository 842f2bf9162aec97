"""A real headless Chromium (Debian's `chromium` + `chromium-driver`) driven by Selenium.

`Page` wraps a WebDriver with the waits the web page tests need. Its methods block: the tests run
them in a worker thread (asyncio.to_thread) so the service and the XMPP clients keep running on
the test's event loop meanwhile. Screenshots go to tests/artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = [
    "--headless",
    "--no-sandbox",  # as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,900",
]
DESKTOP = (1280, 900)
PHONE = (390, 844)


def fmt_bytes(n: int) -> str:
    """The page's bytes() (web/dom.js), to compare what it shows."""
    units = ["bytes", "KB", "MB", "GB", "TB"]
    value, unit = float(n), 0
    while value >= 1000 and unit < len(units) - 1:
        value /= 1000
        unit += 1
    if unit == 0:
        return f"{n} {'byte' if n == 1 else 'bytes'}"
    return f"{value:.{1 if value < 10 else 0}f} {units[unit]}"


class Page:
    def __init__(self, driver: webdriver.Chrome) -> None:
        self.d = driver

    # -- finding and waiting -----------------------------------------------------------------
    def q(self, css: str) -> WebElement:
        return self.d.find_element(By.CSS_SELECTOR, css)

    def qa(self, css: str) -> list[WebElement]:
        return self.d.find_elements(By.CSS_SELECTOR, css)

    def until(self, predicate: Callable[[], Any], what: str, within: float = 10) -> Any:
        deadline = time.monotonic() + within
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = predicate()
                if last:
                    return last
            except StaleElementReferenceException:
                pass
            time.sleep(0.03)
        self.screenshot("failure.png")
        raise AssertionError(f"timed out waiting for {what} (last: {last!r})")

    def visible(self, css: str, within: float = 10) -> WebElement:
        return self.until(lambda: next((e for e in self.qa(css) if e.is_displayed()), None), f"{css} visible", within)

    def hidden(self, css: str, within: float = 10) -> None:
        self.until(lambda: not any(e.is_displayed() for e in self.qa(css)), f"{css} hidden", within)

    def text(self, css: str) -> str:
        return self.q(css).text

    def wait_text(self, css: str, part: str, within: float = 10) -> str:
        return self.until(lambda: part in self.q(css).text and self.q(css).text, f"{part!r} in {css}", within)

    # -- acting ------------------------------------------------------------------------------
    def click(self, css: str) -> None:
        self.visible(css).click()

    def fill(self, css: str, value: str) -> None:
        field = self.visible(css)
        field.clear()
        field.send_keys(value)

    def set_value(self, css: str, value: str) -> None:
        """For inputs whose typing is locale-dependent (dates) and selects: set, then `change`."""
        self.d.execute_script(
            "const e = document.querySelector(arguments[0]); e.value = arguments[1];"
            "e.dispatchEvent(new Event('change', {bubbles: true}));",
            css,
            value,
        )

    def js(self, script: str, *args: Any) -> Any:
        return self.d.execute_script(script, *args)

    def alert_present(self) -> bool:
        try:
            self.d.switch_to.alert  # noqa: B018 - raises when there is none
            return True
        except NoAlertPresentException:
            return False

    def size(self, width_height: tuple[int, int]) -> None:
        self.d.set_window_size(*width_height)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.d.save_screenshot(str(path))
        return path

    def console(self) -> list[dict]:
        return self.d.get_log("browser")


@pytest.fixture(scope="session")
def chromium() -> Iterator[webdriver.Chrome]:
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.fail("chromium and chromium-driver are not installed: run bin/setup --dev")
    with tempfile.TemporaryDirectory(prefix="gallery-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=DriverService(CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


@pytest.fixture
def page(chromium: webdriver.Chrome) -> Iterator[Page]:
    """The session's browser, on a blank page at desktop size, its console log emptied."""
    chromium.get("about:blank")
    chromium.set_window_size(*DESKTOP)
    chromium.get_log("browser")
    yield Page(chromium)
    with contextlib.suppress(WebDriverException):  # none were set
        chromium.delete_network_conditions()
    chromium.get("about:blank")
