"""Smoke test of the browser fixtures: a real headless Chromium fills in a tiny survey form.

A small aiohttp server (background thread, 127.0.0.1, free port) serves one page with a 0-10 radio group and
a comment box; the form posts back to the same server, which records every field and answers "thanks".
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.fixtures_browser import PHONE_PIXEL_RATIO, PHONE_WINDOW, _reset, page_text, wait_for, wait_for_text

pytestmark = pytest.mark.browser

RADIOS = "\n".join(
    f'      <span><input type="radio" id="score-{n}" name="score" value="{n}" required>'
    f'<label for="score-{n}">{n}</label></span>'
    for n in range(11)
)
FORM_PAGE = f"""<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>How likely are you to recommend us?</title>
  <style>
    body {{ font-family: sans-serif; margin: 12px; }}
    fieldset {{ display: flex; flex-wrap: wrap; gap: 6px; border: 0; padding: 0; }}
    fieldset span {{ white-space: nowrap; }}
    label {{ display: inline-block; min-width: 24px; padding: 8px 4px; text-align: center; }}
    textarea {{ width: 100%; box-sizing: border-box; }}
  </style>
</head>
<body>
  <form method="post" action="/">
    <fieldset>
      <legend>How likely are you to recommend us to a friend? (0-10)</legend>
{RADIOS}
    </fieldset>
    <p><label for="comment">What is the main reason for your score?</label></p>
    <textarea id="comment" name="comment" rows="4"></textarea>
    <p><button type="submit" id="send">Send</button></p>
  </form>
</body>
</html>
"""


@dataclass
class SurveyServer:
    url: str = ""
    received: list[list[tuple[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[list[tuple[str, str]]]:
        with self.lock:
            return [list(p) for p in self.received]


def _app(server: SurveyServer) -> web.Application:
    async def form(_: web.Request) -> web.Response:
        return web.Response(text=FORM_PAGE, content_type="text/html", charset="utf-8")

    async def submit(request: web.Request) -> web.Response:
        data = await request.post()
        with server.lock:
            server.received.append([(k, str(v)) for k, v in data.items()])
        body = "<!doctype html><meta charset='utf-8'><title>thanks</title><p id='thanks'>thanks</p>"
        return web.Response(text=body, content_type="text/html", charset="utf-8")

    app = web.Application()
    app.router.add_get("/", form)
    app.router.add_post("/", submit)
    return app


@pytest.fixture(scope="module")
def survey_server() -> Iterator[SurveyServer]:
    server = SurveyServer()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    failure: list[BaseException] = []
    runner = web.AppRunner(_app(server), access_log=None)

    async def start() -> None:
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        server.url = f"http://{host}:{port}/"

    def run() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(start())
        except BaseException as exc:  # reported to the test thread below
            failure.append(exc)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=run, name="survey-server", daemon=True)
    thread.start()
    assert ready.wait(10), "survey server did not start within 10 s"
    if failure:
        raise failure[0]
    try:
        yield server
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        assert not thread.is_alive(), "survey server thread did not stop"


@pytest.fixture
def survey(survey_server: SurveyServer) -> SurveyServer:
    with survey_server.lock:
        survey_server.received.clear()
    return survey_server


def _checked_score(driver: WebDriver) -> str | None:
    return driver.execute_script(
        "const c = document.querySelector('input[name=score]:checked'); return c ? c.value : null;"
    )


VIEWPORT = "return [window.innerWidth, window.innerHeight, screen.width, screen.height, devicePixelRatio];"


def test_phone_sized_fresh_page(browser: WebDriver, survey: SurveyServer) -> None:
    assert browser.current_url == "about:blank"
    assert browser.get_cookies() == []
    browser.get(survey.url)  # a page with <meta name=viewport content=width=device-width>
    assert browser.execute_script(VIEWPORT) == [*PHONE_WINDOW, *PHONE_WINDOW, PHONE_PIXEL_RATIO]
    assert browser.execute_script("return matchMedia('(pointer: coarse)').matches;") is True


def test_click_label_type_non_ascii_and_submit(browser: WebDriver, survey: SurveyServer) -> None:
    comment = "Snabb och trevlig service – å ä ö, Å Ä Ö!"
    browser.get(survey.url)
    wait_for(browser, lambda d: d.find_element(By.ID, "send"), message="form did not load")
    assert "How likely are you to recommend us" in page_text(browser)

    browser.find_element(By.CSS_SELECTOR, "label[for='score-9']").click()
    assert browser.find_element(By.ID, "score-9").is_selected()
    assert _checked_score(browser) == "9"

    box = browser.find_element(By.ID, "comment")
    box.send_keys(comment)
    assert box.get_property("value") == comment

    browser.find_element(By.ID, "send").click()
    assert "thanks" in wait_for_text(browser, "thanks")
    assert survey.posts() == [[("score", "9"), ("comment", comment)]]


def test_keyboard_only(browser: WebDriver, survey: SurveyServer) -> None:
    browser.get(survey.url)
    wait_for(browser, lambda d: d.find_element(By.ID, "send"), message="form did not load")
    keys = ActionChains(browser)

    keys.send_keys(Keys.TAB).perform()  # into the radio group: the first radio
    assert browser.switch_to.active_element.get_attribute("id") == "score-0"
    assert _checked_score(browser) is None
    keys.send_keys(Keys.SPACE).perform()
    assert _checked_score(browser) == "0"
    for _ in range(9):  # arrows move the focus and the selection within the group
        keys.send_keys(Keys.ARROW_RIGHT).perform()
    keys.send_keys(Keys.ARROW_LEFT).perform()
    assert _checked_score(browser) == "8"
    assert browser.switch_to.active_element.get_attribute("id") == "score-8"

    keys.send_keys(Keys.TAB).perform()  # out of the group: the comment box
    assert browser.switch_to.active_element.get_attribute("id") == "comment"
    keys.send_keys("Helt okej, men dyrt.").perform()
    keys.send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "send"
    keys.send_keys(Keys.ENTER).perform()

    wait_for_text(browser, "thanks")
    assert survey.posts() == [[("score", "8"), ("comment", "Helt okej, men dyrt.")]]


def test_fresh_state_between_tests(browser: WebDriver, survey: SurveyServer) -> None:
    """What a test leaves (a cookie, local storage, a second tab, other screen metrics) is gone after reset."""
    browser.get(survey.url)
    browser.add_cookie({"name": "visited", "value": "yes"})
    assert browser.get_cookie("visited")
    browser.execute_script("localStorage.setItem('draft', '7');")
    desktop = {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False}
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", desktop)
    assert browser.execute_script(VIEWPORT)[0] == 1280
    browser.switch_to.new_window("tab")
    _reset(browser)
    assert browser.current_url == "about:blank"
    assert len(browser.window_handles) == 1
    browser.get(survey.url)
    assert browser.get_cookie("visited") is None
    assert browser.execute_script("return localStorage.getItem('draft');") is None
    assert browser.execute_script(VIEWPORT) == [*PHONE_WINDOW, *PHONE_WINDOW, PHONE_PIXEL_RATIO]
