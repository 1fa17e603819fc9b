"""The survey page's 0–10 scale as laid out by a real browser (Debian's headless Chromium) at a small phone, a
common phone and a desktop width (issue 16): 0 and 10 stay at the ends of their rows with their labels beside
them, every tile is a touch target of at least 44 × 44 CSS px, and the page never scrolls sideways.

The page is the renderer's own HTML (web.survey_page) opened from a file — the layout is CSS only, no server is
needed. The oracle is geometry read back from the browser (getBoundingClientRect), not the CSS text.
"""

from __future__ import annotations

import pytest

from npsflow.programs import DEFAULT_TEXTS
from web.survey_page import render_survey

pytestmark = pytest.mark.browser

GEOMETRY = """
const box = e => { const r = e.getBoundingClientRect(); return {l: r.left, r: r.right, t: r.top, b: r.bottom}; };
const tiles = [...Array(11).keys()].map(n => box(document.querySelector(`label[for="score-${n}"]`)));
return {tiles, low: box(document.getElementById("low")), high: box(document.getElementById("high")),
        scroll: document.documentElement.scrollWidth, width: window.innerWidth,
        lowText: getComputedStyle(document.getElementById("low")).textAlign,
        highText: getComputedStyle(document.getElementById("high")).textAlign};
"""


def rows(tiles: list[dict]) -> list[list[int]]:
    """The tiles' numbers grouped by the row they sit in (same top), top to bottom."""
    tops = sorted({round(t["t"]) for t in tiles})
    return [[n for n, t in enumerate(tiles) if round(t["t"]) == top] for top in tops]


@pytest.mark.parametrize("width", [320, 412, 1280])
def test_the_scale_keeps_0_and_10_at_the_ends_of_their_rows(browser, tmp_path, width):
    texts = {**DEFAULT_TEXTS["fi"], "low_label": "Ei lainkaan todennäköistä", "high_label": "Erittäin todennäköistä"}
    page = tmp_path / "survey.html"
    page.write_text(render_survey(brand={"name": "Kaamos Koti"}, texts=texts, locale="fi", action="/s/x",
                                  csrf="c", nonce="nonce-abcdefgh"), encoding="utf-8")
    browser.get(page.as_uri())  # (chromedriver's phone emulation is applied again on navigation: override after it)
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": 900, "deviceScaleFactor": 3 if width < 600 else 1, "mobile": width < 600})
    g = browser.execute_script(GEOMETRY)
    assert g["width"] == width
    tiles, low, high = g["tiles"], g["low"], g["high"]

    assert g["scroll"] <= g["width"], f"the page scrolls sideways at {width} px"
    for n, t in enumerate(tiles):
        assert t["r"] - t["l"] >= 44 and t["b"] - t["t"] >= 44, (n, t)  # touch targets
    grouped = rows(tiles)
    right_edge = max(t["r"] for t in tiles)
    left_edge = min(t["l"] for t in tiles)
    if width < 576:  # two rows: 0–5 and 6–10, 10 under 5 at the right end
        assert grouped == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10]], grouped
        assert abs(tiles[10]["r"] - tiles[5]["r"]) < 1 and abs(tiles[10]["r"] - right_edge) < 1
        assert abs(tiles[0]["l"] - left_edge) < 1
        # each label with its end: "0 = …" under the first row, starting at 0; "10 = …" under the second, ending at 10
        assert tiles[5]["b"] <= low["t"] and low["b"] <= tiles[6]["t"] and abs(low["l"] - tiles[0]["l"]) < 1
        assert tiles[10]["b"] <= high["t"] and g["highText"] == "right" and abs(high["r"] - tiles[10]["r"]) < 1
    else:  # one row of eleven, the labels under its two ends
        assert grouped == [list(range(11))], grouped
        assert abs(tiles[0]["l"] - left_edge) < 1 and abs(tiles[10]["r"] - right_edge) < 1
        assert tiles[0]["b"] <= low["t"] and abs(low["l"] - tiles[0]["l"]) < 1
        assert tiles[10]["b"] <= high["t"] and g["highText"] == "right" and abs(high["r"] - tiles[10]["r"]) < 1
        assert low["r"] <= high["l"] + 1  # side by side, not overlapping
