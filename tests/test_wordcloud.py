"""The word cloud's layout (web.wordcloud), pure: checked geometrically, and its SVG parsed back."""

import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from web.wordcloud import COLORS, MAX_SIZE, MIN_SIZE, NO_NPS, layout, svg

words = st.lists(st.fixed_dictionaries({
    "term": st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=18),
    "responses": st.integers(1, 5000),
    "nps": st.one_of(st.none(), st.floats(-100, 100))}), max_size=40, unique_by=lambda w: w["term"])


@settings(max_examples=60, deadline=None)
@given(words)
def test_placed_words_never_overlap_stay_inside_and_nothing_vanishes(ws):
    cloud = layout(ws)
    boxes = [w.box() for w in cloud.words]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and 0 <= a[1] and a[2] <= cloud.width and a[3] <= cloud.height
        for b in boxes[i + 1:]:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])
    assert sorted([w.term for w in cloud.words] + cloud.dropped) == sorted(w["term"] for w in ws)
    for w in cloud.words:
        assert w.size <= MAX_SIZE and (w.size >= MIN_SIZE or len(w.term) * 0.62 * MIN_SIZE > 0.95 * cloud.width)


def test_bigger_counts_get_bigger_words_and_colours_follow_the_bands():
    cloud = layout([{"term": "lasku", "responses": 400, "nps": -60.0}, {"term": "kiitos", "responses": 100, "nps": 80},
                    {"term": "jono", "responses": 25, "nps": 30.0}, {"term": "ok", "responses": 25, "nps": None}])
    by = {w.term: w for w in cloud.words}
    assert by["lasku"].size == MAX_SIZE and by["jono"].size == by["ok"].size == MIN_SIZE
    assert MIN_SIZE < by["kiitos"].size < MAX_SIZE
    assert (by["lasku"].color, by["kiitos"].color, by["jono"].color, by["ok"].color) == (
        COLORS["needs_improvement"], COLORS["world_class"], COLORS["good"], NO_NPS)
    assert cloud.words[0].term == "lasku" and (cloud.words[0].x, cloud.words[0].y) == (320, 160)  # the centre


def test_the_svg_escapes_every_word_and_parses():
    hostile = '<script>alert(1)</script>" onload="x'
    doc = svg(layout([{"term": hostile, "responses": 5, "nps": 0.0}, {"term": "a&b", "responses": 3, "nps": 1.0}]),
              title='cloud "of" <words>')
    root = ET.fromstring(doc)  # well-formed: nothing broke out of its element
    texts = [t for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert len(texts) == 2 and "".join(texts[0].itertext()).endswith(hostile)
    assert "<script>" not in doc and not root.findall(".//{http://www.w3.org/2000/svg}script")
