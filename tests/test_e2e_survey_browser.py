"""The survey page in a real browser (Debian's headless Chromium, as a phone) against a real worker: open the
link, pick a score, write a comment, submit, answer the follow-up → the response is in ClickHouse with the
invitation's segments. And the one-click link from an e-mail records the score by itself."""

from __future__ import annotations

from urllib.parse import urljoin

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e_helpers import wait_for
from tests.fixtures_browser import page_text, wait_for_text
from tests.test_e2e_survey import invite, link, state_has_answer, survey_env

pytestmark = [pytest.mark.kafka, pytest.mark.browser]


@pytest.fixture
def env(tmp_path, kafka_bootstrap):
    e = survey_env(tmp_path, kafka_bootstrap)
    yield e
    e.stop_worker()


def no_alert(driver) -> bool:
    try:
        driver.switch_to.alert
    except NoAlertPresentException:
        return True
    return False


def test_a_respondent_answers_in_the_browser(env, tmp_path, browser):
    env.start_worker()
    first, second, third = invite(env, tmp_path, 3)
    browser.get(link(env, first))
    text = wait_for_text(browser, "Hur troligt är det att du skulle rekommendera Acme")
    assert "Inte alls troligt" in text and "Extremt troligt" in text  # the scale's end labels, in Swedish
    assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == "sv"
    browser.find_element(By.ID, "score-4").click()  # the tile: the radio lies over its label
    assert browser.find_element(By.ID, "score-4").is_selected()
    browser.find_element(By.ID, "comment").send_keys("Åkte för fort <script>alert('x')</script>")
    browser.find_element(By.ID, "send").click()
    wait_for_text(browser, "Vad borde vi förbättra?")  # the detractors' follow-up
    assert no_alert(browser)  # the comment's script never ran
    wait_for(lambda: state_has_answer(env, first) or None, what="the answer to reach the invitation")  # (a person
    browser.find_element(By.ID, "follow_up").send_keys("Ring före besöket")  # takes longer to write the follow-up)
    browser.find_element(By.ID, "send").click()
    wait_for(lambda: "Vad borde vi förbättra?" not in page_text(browser), what="the follow-up to be sent")

    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 1 else None)(
        env.cli_json("report", "--by", "location,employee")), what="the answer in ClickHouse")
    assert [(r["location"], r["employee"], r["detractors"]) for r in report["rows"]] == [("Espoo", "e-0", 1)]
    classified = wait_for(lambda: (lambda rows: rows if rows and rows[0].get("follow_up") else None)(
        latest_answers(env)), what="the follow-up answer")
    assert (classified[0]["score"], classified[0]["comment"], classified[0]["follow_up"]) == (
        4, "Åkte för fort <script>alert('x')</script>", "Ring före besöket")

    # the one-click link of an e-mail: the page preselects 10 and submits it by itself
    browser.get(link(env, second, score=10))
    wait_for_text(browser, "Vad uppskattade du mest?")  # the promoters' follow-up: the score was recorded
    assert browser.find_elements(By.CSS_SELECTOR, "a[href='https://reviews.example.com/acme']")
    wait_for(lambda: env.cli_json("report")["total"]["responses"] == 2, what="the one-click answer")
    assert env.cli_json("report")["total"]["promoters"] == 1

    # keyboard only: into the scale, arrows to 7, to the comment, to the button, Enter
    browser.get(link(env, third))
    wait_for_text(browser, "Hur troligt är det att du skulle rekommendera Acme")
    keys = ActionChains(browser)
    for _ in range(12):  # past the logo/heading links, if any, to the first radio
        if (browser.switch_to.active_element.get_attribute("name") or "") == "score":
            break
        keys.send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "score-0"
    keys.send_keys(Keys.SPACE).perform()
    for _ in range(7):
        keys.send_keys(Keys.ARROW_RIGHT).perform()
    assert browser.find_element(By.ID, "score-7").is_selected()
    keys.send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "comment"
    keys.send_keys("Bra").send_keys(Keys.TAB).perform()
    assert browser.switch_to.active_element.get_attribute("id") == "send"
    keys.send_keys(Keys.ENTER).perform()
    wait_for_text(browser, "Vad borde vi förbättra?")  # passives get the "what to improve" question
    report = wait_for(lambda: (lambda r: r if r["total"]["responses"] == 3 else None)(env.cli_json("report")),
                      what="the keyboard answer")
    assert report["total"]["passives"] == 1


def latest_answers(env) -> list[dict]:
    """The latest version of each response, from the classified topic (the test process may not open the
    worker's embedded ClickHouse)."""
    from schemas import codec as avro
    from tests.e2e_helpers import read_topic

    codec = avro.AvroCodec()
    records = [codec.decode(m.value) for m in read_topic(env.vars["NPSFLOW_KAFKA"], env.settings.topics.classified, 1)]
    latest: dict[str, dict] = {}
    for r in records:
        if r["response_id"] not in latest or r["version"] > latest[r["response_id"]]["version"]:
            latest[r["response_id"]] = r
    return sorted(latest.values(), key=lambda r: -r["version"])


def answered_count(env) -> int:
    return env.stats().get("survey.answer.score", 0) + env.stats().get("survey.answer.follow_up", 0)


def test_reload_and_back_after_answering_never_post_again(env, tmp_path, browser):
    """POST → redirect → GET (issue 16): the thank-you page has its own URL, so reload shows it again and Back
    goes to a page that was fetched by GET — no "Confirm form resubmission", nothing recorded twice. The
    one-click link says which score it recorded, and Back to it shows the form instead of sending again."""
    env.start_worker()
    first, second = invite(env, tmp_path, 2)
    browser.get(link(env, first))
    wait_for_text(browser, "Hur troligt är det att du skulle rekommendera Acme")
    browser.find_element(By.ID, "score-4").click()
    browser.find_element(By.ID, "send").click()
    text = wait_for_text(browser, "Du svarade 4.")  # says what was recorded
    assert "/thanks?a=" in browser.current_url and answered_count(env) == 1
    browser.refresh()  # a GET: no resubmission prompt (it would be an alert or Chromium's ERR_CACHE_MISS page)
    text = wait_for_text(browser, "Du svarade 4.")
    assert no_alert(browser) and "ERR_CACHE_MISS" not in text and answered_count(env) == 1
    change = browser.find_element(By.ID, "change")  # "change your answer" as a button-sized target
    assert change.size["height"] >= 44 and change.size["width"] >= 44 and change.text == "Ändra ditt svar"

    wait_for(lambda: state_has_answer(env, first) or None, what="the answer to reach the invitation")
    browser.find_element(By.ID, "follow_up").send_keys("Ring före besöket")
    browser.find_element(By.ID, "send").click()
    wait_for(lambda: "Vad borde vi förbättra?" not in page_text(browser), what="the follow-up to be sent")
    assert "/thanks?a=" in browser.current_url and answered_count(env) == 2
    browser.back()  # the thank-you page before the follow-up, fetched again by GET
    text = wait_for_text(browser, "Vad borde vi förbättra?")
    assert no_alert(browser) and "ERR_CACHE_MISS" not in text and "Du svarade 4." in text
    assert "/thanks?a=" in browser.current_url and answered_count(env) == 2

    # the one-click link: records 10, the thank-you page says so; Back never sends it again: Chromium skips the
    # entry of a page that navigated on its own (no user gesture) and lands on the page before it (the first
    # invitation's thank-you page); a browser that does go back to it gets the form, not a second submit
    one_click = link(env, second, score=10)
    browser.get(one_click)
    wait_for_text(browser, "Du svarade 10.")
    assert answered_count(env) == 3
    browser.back()
    text = wait_for_text(browser, "Du svarade 4.")
    assert browser.current_url != one_click and no_alert(browser) and "ERR_CACHE_MISS" not in text
    assert answered_count(env) == 3


def test_an_unreadable_link_speaks_the_browsers_language_and_the_icon_loads(env, tmp_path, browser):
    env.start_worker()
    (inv,) = invite(env, tmp_path)
    truncated = link(env, inv)[:-6]
    agent = browser.execute_script("return navigator.userAgent")
    try:
        for accept, title in (("fi-FI,fi;q=0.9,en;q=0.8", "Linkki on virheellinen"),
                              ("de-DE,da;q=0.7", "Linket er ikke gyldigt"), ("en-US", "This link is not valid")):
            browser.execute_cdp_cmd("Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": accept})
            browser.get(truncated)
            wait_for_text(browser, title)
            assert browser.find_element(By.TAG_NAME, "html").get_attribute("lang") == accept[:2].replace("de", "da")
    finally:
        browser.execute_cdp_cmd("Emulation.setUserAgentOverride", {"userAgent": agent, "acceptLanguage": "en-US"})
    # /favicon.ico (browsers ask for it): an icon Chromium decodes, not a 404 in the console
    browser.get(urljoin(truncated, "/favicon.ico"))
    size = wait_for(lambda: browser.execute_script(
        "const i = document.images[0]; return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight]"
        " : null"), what="the icon")
    assert size == [16, 16]
