"""The built-in live dashboard in headless Chromium against a real worker: the numbers on the page are the
report's, comments are shown as text, and new responses appear without a reload; it fits a phone, its live region
speaks only of changes, updates can be paused, comments carry their language, nothing above the latest comments
moves as the page fills (issue 16)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.common.by import By

from tests.e2e_helpers import make_env, wait_for, write_jsonl
from tests.fixtures_browser import wait_for as browser_wait
from tests.fixtures_browser import wait_for_text

pytestmark = [pytest.mark.kafka, pytest.mark.browser]


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = make_env(tmp_path, kafka_bootstrap)
    yield e
    e.stop_worker()


def responses(prefix: str, plan: dict[str, list[int]], at: datetime) -> list[dict]:
    out = []
    for location, scores in plan.items():
        for i, score in enumerate(scores):
            out.append({"response_id": f"{prefix}-{location}-{i}", "score": score, "responded_at": at.isoformat(),
                        "segment": {"location": location}, "comment": f"{location} {score}" if i == 0 else None})
    return out


def table(driver) -> dict[str, tuple[str, str, str, str]]:
    out = {}
    for tr in driver.find_elements(By.CSS_SELECTOR, "#rows tr"):
        cells = {td.get_attribute("class").split()[0]: td.text for td in tr.find_elements(By.TAG_NAME, "td")}
        out[tr.get_attribute("data-segment")] = (cells["n"], cells["nps"], cells["ci"], cells["band-cell"])
    return out


BAND_WORDS = {"needs_improvement": "Needs improvement", "good": "Good", "excellent": "Excellent",
              "world_class": "World class", None: "—"}


def expected(report: dict) -> dict[str, tuple[str, str, str, str]]:
    def cells(s):
        f = (lambda v: "—" if v is None else f"{v:.2f}")  # noqa: E731
        return (str(s["responses"]), f(s["nps"]), f"[{f(s['ci95'][0])}, {f(s['ci95'][1])}]", BAND_WORDS[s["band"]])

    return {**{r["location"]: cells(r) for r in report["rows"]}, "total": cells(report["total"])}


def test_live_dashboard_shows_the_reports_numbers_and_updates_without_reload(env, tmp_path, browser):
    env.start_worker()
    now = datetime.now(timezone.utc) - timedelta(seconds=2)  # today (the one-point trends below)
    first = responses("a", {"Espoo": [10, 9, 9, 7, 3], "Oslo": [0, 4, 8, 10]}, now)
    first.append({"response_id": "x-1", "score": 1, "responded_at": now.isoformat(), "segment": {"location": "Oslo"},
                  "comment": "<script>alert('x')</script><b>bold?</b>"})
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "a.jsonl", first)))
    wait_for(lambda: env.cli_json("report")["total"]["responses"] == 10, what="the first responses")
    browser.get(f"{env.internal_url}/dashboard?by=location")
    wait_for_text(browser, "10 responses", timeout=30)
    assert table(browser) == expected(env.cli_json("report", "--by", "location"))
    comment = browser.find_element(By.XPATH, "//li[contains(@class, 'comment')][1]/div[@class='text']")
    texts = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#comments li .text")]
    assert "<script>alert('x')</script><b>bold?</b>" in texts  # shown as text, not run, not markup
    assert comment.text and not browser.find_elements(By.CSS_SELECTOR, "#comments b")
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tr svg polyline")) == 3  # a trend per row + total
    # every answer is from today: one point per row, drawn as a dot
    assert len(browser.find_elements(By.CSS_SELECTOR, "#rows tr svg circle")) == 3

    browser.execute_script("window.__same_page = true;")
    more = responses("b", {"Espoo": [0, 0], "Turku": [10]}, now)
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "b.jsonl", more)))
    wait_for(lambda: env.cli_json("report")["total"]["responses"] == 13, what="the new responses")
    wait_for_text(browser, "13 responses", timeout=30)  # the API caches for 5 s, the page polls every 2 s
    assert browser.execute_script("return window.__same_page === true;")  # updated in place, no reload
    assert table(browser) == expected(env.cli_json("report", "--by", "location"))
    assert "Turku" in table(browser)


def test_the_dashboard_shows_what_respondents_say_as_text(env, tmp_path, browser):
    """The word cloud and the top complaints, from a real worker: the cloud's words are the answers' terms (drawn
    as SVG text), the first complaint is `npsflow terms`' first, and comments stay inert text."""
    env.start_worker()
    now = datetime.now(timezone.utc) - timedelta(seconds=2)
    answers = [{"response_id": f"d{i}", "score": i % 4, "responded_at": now.isoformat(), "locale": "fi",
                "segment": {"location": "Oulu"},
                "comment": f"Laskussa oli virhe taas <img src=x onerror=alert({i})>"} for i in range(14)]
    answers += [{"response_id": f"p{i}", "score": 10, "responded_at": now.isoformat(), "locale": "fi",
                 "segment": {"location": "Oulu"}, "comment": "Kiitos, ystävällinen palvelu!"} for i in range(20)]
    env.cli("ingest", "responses", str(write_jsonl(tmp_path / "words.jsonl", answers)))
    wait_for(lambda: env.cli_json("report")["total"]["responses"] == 34, what="the answers")
    ranked = env.cli_json("terms")["terms"]
    top = ranked[0]  # "lasku", "virhe", "taas" and the words of the markup are in every detractor's comment
    assert top["significant"] and "lasku" in {t["term"] for t in ranked if t["significant"]}
    browser.get(f"{env.internal_url}/dashboard?by=location")
    wait_for_text(browser, "34 responses", timeout=30)
    words = browser.execute_script(  # each word: a <title> (term, n, NPS) and the word itself as a text node
        "return Array.from(document.querySelectorAll('#cloud text')).map(t => t.lastChild.nodeValue);")
    assert {"lasku", "virhe", "kiitos", "palvelu"} <= set(words)
    first = browser.find_element(By.CSS_SELECTOR, "#complaints tr")
    assert first.find_element(By.CSS_SELECTOR, ".term").text == top["term"]  # the same order as `npsflow terms`
    assert first.find_element(By.CSS_SELECTOR, ".n").text == str(top["responses"])
    shown = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "#complaints .term")]
    assert shown == [t["term"] for t in ranked[:len(shown)]] and "lasku" in shown
    example = first.find_element(By.CSS_SELECTOR, ".example").text
    assert "<img src=x onerror=alert(" in example  # shown as written, never an element
    assert not browser.find_elements(By.CSS_SELECTOR, "#complaints img, #cloud img")


# ------------------------------------------------------------------------------------------------ issue 16
# One worker for the tests below (each adds answers of its own; every expectation is read from the worker's
# report or API at that moment, so they do not depend on one another's data).
COMPLAINING = "Laskussa oli virhe taas"


@pytest.fixture(scope="module")
def shared(tmp_path_factory, kafka_bootstrap):
    e = make_env(tmp_path_factory.mktemp("dashboard16"), kafka_bootstrap)
    e.start_worker()
    try:  # complaints in Finnish before any page asks for the words (their cache keeps an answer for 60 s)
        now = datetime.now(timezone.utc) - timedelta(seconds=2)
        words = [{"response_id": f"w-d{i}", "score": i % 4, "responded_at": now.isoformat(), "locale": "fi-FI",
                  "segment": {"location": "Oulu"}, "comment": COMPLAINING} for i in range(14)]
        words += [{"response_id": f"w-p{i}", "score": 10, "responded_at": now.isoformat(), "locale": "fi-FI",
                   "segment": {"location": "Oulu"}, "comment": "Kiitos, ystävällinen palvelu!"} for i in range(20)]
        ingest(e, e.home / "words.jsonl", words)
        yield e
    finally:
        e.stop_worker()


def ingest(env, path, answers: list[dict]) -> int:
    """Ingest ``answers`` (new response ids) and wait until the report counts them; the new total."""
    total = env.cli_json("report")["total"]["responses"] + len(answers)
    env.cli("ingest", "responses", str(write_jsonl(path, answers)))
    wait_for(lambda: env.cli_json("report")["total"]["responses"] == total, what=f"{total} responses")
    return total


def api_total(env) -> int:
    import requests

    from npsflow.reader import internal_headers

    reply = requests.get(f"{env.internal_url}/api/v1/dashboard?by=location", headers=internal_headers(env.settings),
                         timeout=30)
    return reply.json()["total"]["responses"]


def open_dashboard(browser, env, total: int) -> None:
    wait_for(lambda: api_total(env) == total, what="the dashboard API's numbers")  # its cache: up to 5 s old
    browser.get(f"{env.internal_url}/dashboard?by=location")
    wait_for_text(browser, f"{total} responses", timeout=30)


def set_width(browser, width: int, height: int, mobile: bool) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 2.625 if mobile else 1, "mobile": mobile})


PAGE_WIDTH = "return [document.documentElement.scrollWidth, document.documentElement.clientWidth, window.innerWidth];"
REGIONS = """return Array.from(document.querySelectorAll('table')).map(function (t) {
  var r = t.parentElement;
  return [r.getAttribute('role'), r.tabIndex, r.getAttribute('aria-label'), getComputedStyle(r).overflowX,
          r.scrollWidth, r.clientWidth];
});"""


def test_the_dashboard_fits_a_412_px_phone_and_a_1280_px_desktop(shared, tmp_path, browser):
    """No sideways page scroll on a phone: each table scrolls inside its own keyboard-reachable region; on a
    desktop nothing scrolls sideways at all."""
    now = datetime.now(timezone.utc) - timedelta(seconds=2)
    answers = [{"response_id": f"wide-{i}", "score": i % 11, "responded_at": now.isoformat(), "locale": "fi-FI",
                "segment": {"location": f"Helsinki-Vantaa Airport Terminal {i % 3}"},
                "comment": "Asiakaspalvelukeskuksenpuhelinjonotusaikaennätys oli " * 2} for i in range(9)]
    total = ingest(shared, tmp_path / "wide.jsonl", answers)
    open_dashboard(browser, shared, total)

    set_width(browser, 412, 915, mobile=True)
    page = browser_wait(browser, lambda d: (w := d.execute_script(PAGE_WIDTH))[1] == 412 and w)
    assert page[0] <= page[1] and page[0] <= page[2], f"the page scrolls sideways at 412 px: {page}"
    regions = browser.execute_script(REGIONS)
    assert [r[:4] for r in regions] == [
        ["region", 0, "NPS by location", "auto"], ["region", 0, "Open follow-up cases", "auto"],
        ["region", 0, "Top complaints", "auto"]]
    assert regions[0][4] > regions[0][5]  # the NPS table is wider than a phone: it scrolls inside its region

    set_width(browser, 1280, 800, mobile=False)
    page = browser_wait(browser, lambda d: (w := d.execute_script(PAGE_WIDTH))[2] == 1280 and w)
    assert page[0] <= page[1] <= 1280, f"the page scrolls sideways at 1280 px: {page}"
    assert regions and all(r[4] <= r[5] for r in browser.execute_script(REGIONS))  # nor does any table


def answers_at(prefix: str, plan: dict[str, list[int]]) -> list[dict]:
    return responses(prefix, plan, datetime.now(timezone.utc) - timedelta(seconds=2))


STATUS_WATCH = """window.__status_changes = 0; window.__fetches = 0;
new MutationObserver(function (m) { window.__status_changes += m.length; }).observe(
  document.getElementById('status'), {childList: true, characterData: true, subtree: true});
var fetch0 = window.fetch;
window.fetch = function () { window.__fetches += 1; return fetch0.apply(this, arguments); };"""


def test_the_live_region_speaks_only_of_new_numbers_and_updates_can_be_paused(shared, tmp_path, browser):
    total = ingest(shared, tmp_path / "a.jsonl", answers_at("live-a", {"Espoo": [10, 9, 3], "Oslo": [8, 0]}))
    open_dashboard(browser, shared, total)
    browser.execute_script(STATUS_WATCH)
    updated = browser.find_element(By.ID, "updated").text
    # polls with nothing new: the visible time moves on, the live region is not touched (no re-announcement)
    browser_wait(browser, lambda d: d.execute_script("return window.__fetches") >= 2
                 and d.find_element(By.ID, "updated").text != updated, timeout=30)
    assert browser.execute_script("return window.__status_changes") == 0
    assert browser.find_element(By.ID, "status").text == f"{total} responses"

    # new answers: the region says so once; focus stays where the user left it
    browser.execute_script("document.querySelector('.scroll').focus();")
    total = ingest(shared, tmp_path / "b.jsonl", answers_at("live-b", {"Espoo": [0, 0], "Oslo": [10]}))
    wait_for_text(browser, f"{total} responses", timeout=30)
    assert browser.execute_script("return window.__status_changes") >= 1
    assert table(browser) == expected(shared.cli_json("report", "--by", "location"))
    assert browser.execute_script("return document.activeElement === document.querySelector('.scroll');")

    # paused: no request at all, the table and the region stay as they are while new answers arrive
    pause = browser.find_element(By.ID, "pause")
    assert pause.tag_name == "button" and pause.text == "Pause updates"
    pause.click()
    assert pause.text == "Resume updates" and "paused" in browser.find_element(By.ID, "updated").text
    fetches, shown, status = (browser.execute_script("return window.__fetches"), table(browser),
                              browser.find_element(By.ID, "status").text)
    later = ingest(shared, tmp_path / "c.jsonl", answers_at("live-c", {"Espoo": [10, 10, 10], "Oslo": [1]}))
    wait_for(lambda: api_total(shared) == later, what="the API to serve the new answers")
    assert browser.execute_script("return window.__fetches") == fetches
    assert (table(browser), browser.find_element(By.ID, "status").text) == (shown, status)

    pause.click()  # resumed: at once up to date again
    assert pause.text == "Pause updates"
    wait_for_text(browser, f"{later} responses", timeout=30)
    assert table(browser) == expected(shared.cli_json("report", "--by", "location"))
    assert "paused" not in browser.find_element(By.ID, "updated").text
    assert browser.execute_script("return document.activeElement === document.getElementById('pause');")


def test_comments_and_complaints_carry_their_language_and_bands_read_as_words(shared, tmp_path, browser):
    from streams.text.analysis import analyse

    finnish = "Palvelu oli todella hidas ja henkilökunta ei vastannut kysymyksiini ollenkaan"
    assert analyse(finnish, "sv-SE").lang == "fi"  # long enough to be detected over its Swedish locale
    now = (datetime.now(timezone.utc) - timedelta(seconds=2)).isoformat()
    said = {"Mycket bra service, tack så mycket": ("sv-SE", "sv"), finnish: ("sv-SE", "fi"),
            "Wunderbar": ("de-DE", "de-DE"),  # one word: no language detected, the locale's tag instead
            "ok": (None, None)}  # neither: no lang, the page's
    answers = [{"response_id": f"lang-{i}", "score": 9, "responded_at": now, "locale": locale,
                "segment": {"location": "Malmö"}, "comment": text}
               for i, (text, (locale, _)) in enumerate(said.items())]
    answers += [{"response_id": f"lang-lund-{i}", "score": i, "responded_at": now, "segment": {"location": "Lund"}}
                for i in range(2)]  # NPS -100
    total = ingest(shared, tmp_path / "lang.jsonl", answers)
    open_dashboard(browser, shared, total)
    shown = browser.execute_script("""return Array.from(document.querySelectorAll('#comments li .text')).map(
        function (e) { return [e.textContent, e.hasAttribute('lang') ? e.lang : null]; });""")
    assert {text: lang for text, lang in shown if text in said} == {text: lang for text, (_, lang) in said.items()}

    complaints = browser.execute_script("""return Array.from(document.querySelectorAll('#complaints tr')).map(
        function (tr) { return ['.lang', '.term', '.example'].map(function (c) {
          var e = tr.querySelector(c); return c === '.lang' ? e.textContent : e.getAttribute('lang'); }); });""")
    assert ["fi", "fi", "fi"] in complaints  # the fixture's Finnish complaints: term and example marked
    assert all(term == example == lang for lang, term, example in complaints if lang in ("sv", "da", "fi", "nb", "en"))

    report = shared.cli_json("report", "--by", "location")
    bands = browser.execute_script("""return Array.from(document.querySelectorAll('#rows tr')).map(function (tr) {
        var b = tr.querySelector('.band');
        return [tr.dataset.segment, b ? b.className : null, b ? b.textContent : null]; });""")
    want = [[r["location"], f"band {r['band']}", BAND_WORDS[r["band"]]] for r in report["rows"]]
    assert bands == want + [["total", f"band {report['total']['band']}", BAND_WORDS[report["total"]["band"]]]]
    assert {"Needs improvement", "World class"} <= {b[2] for b in bands}  # Lund and Malmö: words, not identifiers


AT_FIRST_PARSE = """document.addEventListener('DOMContentLoaded', function () {
  var h = Array.from(document.querySelectorAll('h2')).filter(function (h) {
    return h.textContent === 'Latest comments'; })[0];
  window.__heading_at_start = h.getBoundingClientRect().top + window.scrollY;
});"""
HEADING = """return Array.from(document.querySelectorAll('h2')).filter(function (h) {
  return h.textContent === 'Latest comments'; })[0].getBoundingClientRect().top + window.scrollY;"""
SHIFTS = """var done = arguments[arguments.length - 1], total = 0;
new PerformanceObserver(function (list) { list.getEntries().forEach(function (e) {
  if (!e.hadRecentInput) total += e.value; }); }).observe({type: 'layout-shift', buffered: true});
setTimeout(function () { done(total); }, 200);"""


def test_nothing_above_the_latest_comments_moves_as_the_page_fills_or_comments_arrive(shared, tmp_path, browser):
    total = ingest(shared, tmp_path / "a.jsonl", answers_at("cls-a", {"Espoo": [10, 9], "Oulu": [9]}))
    script = browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": AT_FIRST_PARSE})
    try:
        open_dashboard(browser, shared, total)
    finally:
        browser.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]})
    browser.execute_script(STATUS_WATCH)
    browser_wait(browser, lambda d: d.execute_script("return window.__fetches") >= 2,  # the first poll came back
                 timeout=30)
    top = browser.execute_script(HEADING)
    assert top == browser.execute_script("return window.__heading_at_start")  # filled before it was first laid out
    assert browser.execute_async_script(SHIFTS) == 0  # cumulative layout shift since the navigation

    # new comments of segments already shown (no new row): the list below the heading grows, the heading stays
    more = ingest(shared, tmp_path / "b.jsonl", [{**r, "comment": f"Erinomainen palvelu {i}"} for i, r in
                                                 enumerate(answers_at("cls-b", {"Espoo": [10, 10], "Oulu": [9]}))])
    wait_for_text(browser, f"{more} responses", timeout=30)
    wait_for_text(browser, "Erinomainen palvelu 2")
    assert browser.execute_script(HEADING) == top
