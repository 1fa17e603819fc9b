"""The built-in dashboard page as text (web.dashboard): band labels, the data it carries for its first paint,
and what it needs to stay within its CSP. The page's behaviour in a browser: tests/test_e2e_dashboard.py."""

from __future__ import annotations

import json
import re

from streams.nps import Band, summarize
from web.dashboard import band_label, content_security_policy, render_dashboard

NONCE = "n0nce-value"


def test_every_band_has_a_human_label():
    assert {band.value: band_label(band.value) for band in Band} == {
        "needs_improvement": "Needs improvement", "good": "Good", "excellent": "Excellent",
        "world_class": "World class"}
    assert band_label(summarize(1, 0, 9).as_dict()["band"]) == "Needs improvement"  # a band NPS really gives
    assert band_label(None) == band_label("") == "—"


def initial_data(page: str):
    (text,) = re.findall(r'<script type="application/json" id="initial-data">(.*?)</script>', page, re.S)
    return text, json.loads(text)


def test_the_first_data_is_embedded_inert_and_intact():
    """The data drawn before the first paint sits in a JSON data block: whatever a comment holds, it cannot end
    the block or start markup, and it parses back to exactly what the API would answer."""
    nasty = "</script><script>alert(1)</script><!-- & -->\u2028 ääkköset"
    data = {"total": {"responses": 1}, "comments": [{"comment": nasty, "lang": "fi"}], "rows": []}
    page = render_dashboard(by="location", dimensions=["location"], nonce=NONCE, initial=data)
    text, parsed = initial_data(page)
    assert parsed == data
    assert not set(text) & set("<>&")
    assert page.count("<script") == page.count("</script>") == 2  # the data block and the one script
    assert initial_data(render_dashboard(by="location", dimensions=["location"], nonce=NONCE)) == ("null", None)


def test_the_page_keeps_to_its_csp_and_offers_a_pause_button_and_scroll_regions():
    page = render_dashboard(by="location", dimensions=["location", "survey"], nonce=NONCE)
    csp = content_security_policy(NONCE)
    assert "script-src 'nonce-n0nce-value'" in csp and "unsafe-inline" not in csp
    scripts = re.findall(r"<script([^>]*)>", page)
    assert scripts == [' type="application/json" id="initial-data"', f' nonce="{NONCE}"']  # only data is un-nonced
    assert re.findall(r"<style([^>]*)>", page) == [f' nonce="{NONCE}"'] and " style=" not in page
    assert '<button type="button" id="pause">Pause updates</button>' in page
    regions = re.findall(r'<div class="scroll" tabindex="0" role="region" aria-label="([^"]+)">\s*<table', page)
    assert regions == ["NPS by location", "Open follow-up cases", "Top complaints"]
    assert page.count("<table") == 3
    assert "innerHTML" not in page and "insertAdjacentHTML" not in page  # text is only ever textContent
    status = re.search(r'<p id="status" role="status">(.*?)</p>', page)
    assert status and "updated" not in status.group(1)  # the changing time is outside the live region
