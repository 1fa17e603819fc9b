"""A real headless Chromium for the test-suite (plugged in from tests/conftest.py).

Debian's own ``chromium`` and ``chromedriver`` (installed by ``make system-deps``) driven through Selenium.
Both paths are given explicitly, so Selenium Manager never runs and nothing downloads a browser or a
driver; ``SE_OFFLINE=true`` is set as well, and Selenium Manager is patched to fail loudly if it is reached.

Fixtures:
  chromium  session: one ``selenium.webdriver.Chrome`` for the whole session, headless, as a phone: the
            viewport is 390x844 CSS px at device pixel ratio 3 with touch and ``<meta name=viewport>``
            honoured (chromedriver's mobile emulation; a bare ``--window-size`` cannot do it: headless
            Chromium keeps a window at least 500 px wide and takes ~140 px of it for simulated browser
            chrome); quit at session end, even on failure. A missing binary FAILS the test with a
            message naming ``make system-deps`` (never a skip).
  browser   function: the same driver with a fresh page state: extra tabs closed, cookies and the last
            origin's storage cleared, phone metrics restored, on about:blank. Nothing is quit.

On a failure of a test that used ``browser``, a screenshot and the page source are saved next to the
chromedriver log (the report's "browser" section names them). At session end no process of this browser may
still be running: any left after quit is killed by pid and the teardown fails.

Helpers:
  page_text(driver) -> str                  the visible text of the current page (``body.innerText``)
  wait_for(driver, condition, timeout=10, message="")
                                            WebDriverWait until ``condition(driver)`` is truthy; returns it
                                            (not tests.e2e_helpers.wait_for, which polls a plain callable)
  wait_for_text(driver, text, timeout=10)   wait until ``text`` is in page_text; returns the page text
"""

from __future__ import annotations

import atexit
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoAlertPresentException,
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.selenium_manager import SeleniumManager
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_BINARY = "/usr/bin/chromium"
CHROMEDRIVER_BINARY = "/usr/bin/chromedriver"
PHONE_WINDOW = (390, 844)  # viewport in CSS pixels, a common phone (iPhone 12-15 class)
PHONE_PIXEL_RATIO = 3.0
PHONE_METRICS = {"width": PHONE_WINDOW[0], "height": PHONE_WINDOW[1], "deviceScaleFactor": PHONE_PIXEL_RATIO,
                 "mobile": True}

T = TypeVar("T")


def _missing_binaries() -> list[str]:
    return [p for p in (CHROMIUM_BINARY, CHROMEDRIVER_BINARY) if not os.access(p, os.X_OK)]


def _no_selenium_manager(self, args):  # pragma: no cover - only reached on a regression
    raise RuntimeError(
        f"Selenium Manager was called ({args}); the browser tests must use {CHROMIUM_BINARY} and "
        f"{CHROMEDRIVER_BINARY} and never download anything"
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no chromedriver log)"


def chromium_options(profile_dir: Path) -> webdriver.ChromeOptions:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM_BINARY
    options.add_argument("--headless=new")
    options.add_argument("--no-sandbox")  # CI runs as root
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument(f"--window-size={PHONE_WINDOW[0]},{PHONE_WINDOW[1]}")
    options.add_experimental_option(
        "mobileEmulation",
        {"deviceMetrics": {"width": PHONE_WINDOW[0], "height": PHONE_WINDOW[1],
                           "pixelRatio": PHONE_PIXEL_RATIO, "mobile": True, "touch": True}},
    )
    options.add_argument(f"--user-data-dir={profile_dir}")
    options.add_argument("--lang=en-US")
    options.add_argument("--no-first-run")
    options.add_argument("--no-default-browser-check")
    options.add_argument("--disable-background-networking")  # no update/safe-browsing/metrics traffic
    options.add_argument("--disable-component-update")
    options.add_argument("--disable-sync")
    options.add_argument("--metrics-recording-only")
    return options


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    missing = _missing_binaries()
    if missing:
        pytest.fail(
            f"headless Chromium is not installed: missing {', '.join(missing)}. "
            "Run `make system-deps` (installs Debian's chromium and chromium-driver with apt-get).",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("chromium")
    log_path = workdir / "chromedriver.log"
    patches = pytest.MonkeyPatch()
    patches.setenv("SE_OFFLINE", "true")
    patches.setattr(SeleniumManager, "binary_paths", _no_selenium_manager)
    driver: WebDriver | None = None
    leftovers: dict[int, str] = {}
    try:
        service = Service(executable_path=CHROMEDRIVER_BINARY, log_output=str(log_path))
        try:
            driver = webdriver.Chrome(service=service, options=chromium_options(workdir / "profile"))
        except WebDriverException as exc:
            pytest.fail(
                f"could not start {CHROMIUM_BINARY} through {CHROMEDRIVER_BINARY}: {exc.msg or exc}\n"
                f"(versions must match; `make system-deps` installs both from Debian)\n"
                f"chromedriver log {log_path}:\n{_tail(log_path)}",
                pytrace=False,
            )
        atexit.register(driver.quit)  # belt and braces if the session dies before the finalizer
        _artifacts["dir"] = workdir
        driver.set_page_load_timeout(30)
        driver.set_script_timeout(30)
        yield driver
    finally:
        if driver is not None:
            driver.quit()
            atexit.unregister(driver.quit)
        patches.undo()
        _artifacts.pop("dir", None)
        leftovers = _no_process_left(workdir / "profile")
    if leftovers:
        pytest.fail(f"chromium processes still ran after quit (killed now): {leftovers}", pytrace=False)


def _processes_using(marker: str) -> dict[int, str]:
    """Live processes whose command line mentions ``marker`` (our own profile directory)."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:  # zombies have an empty command line, so they never match
            found[int(entry.name)] = cmdline[:120]
    return found


def _no_process_left(profile_dir: Path, grace: float = 15) -> dict[int, str]:
    """Wait for the browser's processes to exit after quit; kill (by pid) and return any that did not."""
    deadline = time.monotonic() + grace
    while (left := _processes_using(str(profile_dir))) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _reset(driver: WebDriver) -> None:
    try:  # a test may have left a dialog open
        driver.switch_to.alert.dismiss()
    except NoAlertPresentException:
        pass
    handles = driver.window_handles
    for extra in handles[1:]:
        driver.switch_to.window(extra)
        driver.close()
    driver.switch_to.window(handles[0])
    origin = urlsplit(driver.current_url)
    if origin.scheme in ("http", "https"):
        driver.delete_all_cookies()
        driver.execute_cdp_cmd(
            "Storage.clearDataForOrigin",
            {"origin": f"{origin.scheme}://{origin.netloc}", "storageTypes": "all"},
        )
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})  # every domain, not only the current one
    driver.get("about:blank")
    screen = driver.execute_script("return [screen.width, screen.height, window.devicePixelRatio];")
    if screen != [*PHONE_WINDOW, PHONE_PIXEL_RATIO]:  # a test changed the emulation
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE_METRICS)


@pytest.fixture
def browser(chromium: WebDriver) -> Iterator[WebDriver]:
    _reset(chromium)
    yield chromium


_artifacts: dict[str, Path] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[pytest.TestReport]:
    """When a test that used ``browser`` fails, keep a screenshot and the page source next to the log."""
    report = yield
    driver = getattr(item, "funcargs", {}).get("browser")
    if report.when == "call" and report.failed and driver is not None and "dir" in _artifacts:
        stem = _artifacts["dir"] / item.name.replace("/", "_")[:100]
        try:
            driver.save_screenshot(f"{stem}.png")
            Path(f"{stem}.html").write_text(driver.page_source, encoding="utf-8")
            report.sections.append(
                ("browser", f"url: {driver.current_url}\nscreenshot: {stem}.png\npage source: {stem}.html")
            )
        except WebDriverException as exc:
            report.sections.append(("browser", f"no screenshot: {exc.msg or exc}"))
    return report


# What chromedriver answers while the page it was talking to is being replaced by a navigation.
_NAVIGATION_RACES = (
    "does not belong to the document",
    "Cannot find context with specified id",
    "Execution context was destroyed",
    "Inspected target navigated or closed",
)


def _is_navigation_race(exc: WebDriverException) -> bool:
    return any(race in (exc.msg or "") for race in _NAVIGATION_RACES)


def page_text(driver: WebDriver) -> str:
    """The rendered, visible text of the current page (``document.body.innerText``).

    One script call and no element handle: an element found just before a navigation and read just after
    it makes chromedriver fail with "unknown error: ... Node with given id does not belong to the document"
    rather than a stale-element error (seen in about 1 of 40 runs of the smoke test). Should the page be
    replaced while the script runs, it is read again (for up to 5 s).
    """
    deadline = time.monotonic() + 5
    while True:
        try:
            return driver.execute_script("return document.body ? document.body.innerText : '';")
        except WebDriverException as exc:
            if not _is_navigation_race(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], T], timeout: float = 10, message: str = ""
) -> T:
    """Poll ``condition(driver)`` until it is truthy; a page in the middle of a navigation is retried."""

    def attempt(d: WebDriver) -> T | bool:
        try:
            return condition(d)
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        except WebDriverException as exc:
            if _is_navigation_race(exc):
                return False
            raise

    return WebDriverWait(driver, timeout, poll_frequency=0.05).until(attempt, message)


def wait_for_text(driver: WebDriver, text: str, timeout: float = 10) -> str:
    """Wait until ``text`` is visible on the page; returns the whole page text."""
    found: list[str] = []

    def has_text(d: WebDriver) -> bool:
        found[:] = [page_text(d)]
        return text in found[0]

    try:
        wait_for(driver, has_text, timeout)
    except TimeoutException as exc:
        seen = found[0] if found else "(no page text)"
        raise AssertionError(
            f"{text!r} did not appear within {timeout}s on {driver.current_url}; page text: {seen!r}"
        ) from exc
    return found[0]


