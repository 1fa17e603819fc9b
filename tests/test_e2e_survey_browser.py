"""The survey page in a real browser (Debian's headless Chromium, as a phone) against a real worker: open the
link, pick a score, write a comment, submit, answer the follow-up → the response is in ClickHouse with the
invitation's segments. And the one-click link from an e-mail records the score by itself."""

from __future__ import annotations

import pytest
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from tests.e2e_helpers import wait_for
from tests.fixtures_browser import page_text, wait_for_text
from tests.test_e2e_survey import invite, link, survey_env

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
    browser.find_element(By.ID, "follow_up").send_keys("Ring före besöket")
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
