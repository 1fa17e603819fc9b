"""The built-in live dashboard in headless Chromium against a real worker: the numbers on the page are the
report's, comments are shown as text, and new responses appear without a reload."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from selenium.webdriver.common.by import By

from tests.e2e_helpers import make_env, wait_for, write_jsonl
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


def expected(report: dict) -> dict[str, tuple[str, str, str, str]]:
    def cells(s):
        f = (lambda v: "—" if v is None else f"{v:.2f}")  # noqa: E731
        return (str(s["responses"]), f(s["nps"]), f"[{f(s['ci95'][0])}, {f(s['ci95'][1])}]", s["band"] or "—")

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
