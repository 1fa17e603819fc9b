"""Comments over the size limit (issue 15, point 3): the score and the cut comment go on, the original becomes a
``comment_truncated`` dead letter — unless the record is otherwise invalid.

The cut is checked against an oracle that does not use the code: texts are built from grapheme clusters written
down here from Unicode's rules (UAX #29), so the generator knows every boundary; the cut must be the longest run
of whole clusters within the limit."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, strategies as st

from schemas import codec as avro
from streams.responses import (MAX_CLUSTER_BACKOFF, MAX_COMMENT_CHARS, Rejected, truncate_text, validate)
from tests.fuzzing import any_text, budget
from tests.test_agents import Harness, raw as raw_bytes

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)

# One extended grapheme cluster each (UAX #29), and no two of them join when put side by side.
CLUSTERS = [
    "a", "Z", "7", " ", ".", "\n", "\r\n", "\x00", "\u00e4",  # ä precomposed
    "e\u0301", "a\u0301\u0323", "o\u0308\u0304",  # base + combining marks (Mn)
    "\u0915\u093f",  # Devanagari ka + vowel sign i (a spacing mark, Mc)
    "\u05e9\u05c1", "\u0627\u064b",  # Hebrew shin + shin dot, Arabic alef + fathatan
    "\u0e01\u0e33",  # Thai ko kai + sara am (SpacingMark, though its category is Lo)
    "\U0001F44D\U0001F3FD",  # thumbs up + skin tone modifier
    "\U0001F468\u200d\U0001F469\u200d\U0001F467",  # family: ZWJ sequence
    "\U0001F3F3\ufe0f\u200d\U0001F308",  # rainbow flag
    "\U0001F1EB\U0001F1EE", "\U0001F1F8\U0001F1EA",  # flags FI, SE (regional indicator pairs)
    "1\ufe0f\u20e3", "\u2764\ufe0f",  # keycap one, red heart with emoji presentation
    "\U0001F3F4\U000E0067\U000E0062\U000E0073\U000E0063\U000E0074\U000E007F",  # Scotland: tag sequence
    "\ud55c", "\u1112\u1161\u11ab",  # Hangul han: precomposed, and conjoining jamo L V T
    "\u200f", "\u202e", "\u200b", "\ufeff", "\u00ad",  # controls (RLM, RLO, ZWSP, BOM, soft hyphen): alone
]


def longest_whole_prefix(clusters: list[str], limit: int) -> str:
    """The expected cut: the whole clusters that fit — or, when none does (a first cluster longer than the limit)
    or the last boundary is more than MAX_CLUSTER_BACKOFF below the limit, the first ``limit`` code points."""
    out, size = [], 0
    for cluster in clusters:
        if size + len(cluster) > limit:
            break
        out.append(cluster)
        size += len(cluster)
    text = "".join(clusters)
    if len(text) > limit and (not out or limit - size > MAX_CLUSTER_BACKOFF):
        return text[:limit]
    return "".join(out)


@pytest.mark.fuzz
@budget(400)
@given(st.lists(st.sampled_from(CLUSTERS), max_size=60), st.integers(0, 120))
@example(["a"] * 3 + ["\U0001F1EB\U0001F1EE"] * 3, 6)  # the cut between two flags, not inside one
@example(["a", "\U0001F1EB\U0001F1EE", "\U0001F1F8\U0001F1EA"], 4)  # 1 + 2 + 2: the second flag is dropped whole
@example(["\r\n"] * 3, 3)
@example(["\U0001F468\u200d\U0001F469\u200d\U0001F467"] * 2, 7)
@example(["e\u0301"], 1)  # no whole cluster fits: the code points that do
def test_the_cut_is_the_longest_run_of_whole_clusters_within_the_limit(clusters, limit):
    text = "".join(clusters)
    assert truncate_text(text, limit) == longest_whole_prefix(clusters, limit)


@pytest.mark.fuzz
@budget(300)
@given(any_text.map(lambda t: t * 4), st.integers(0, 400))
@example("e" + "\u0301" * 200, 100)  # a "Zalgo" cluster longer than the back-off: cut at the limit itself
@example("\ud83d\ude00" * 3, 3)  # surrogate code points (surrogatepass text): a pair is never cut in two
def test_any_text_is_cut_to_a_prefix_within_the_limit(text, limit):
    cut = truncate_text(text, limit)
    assert text.startswith(cut)
    if len(text) <= limit:
        assert cut == text
    else:
        assert limit - MAX_CLUSTER_BACKOFF <= len(cut) <= limit
        cut_pair = cut and "\ud800" <= cut[-1] <= "\udbff" and "\udc00" <= text[len(cut)] <= "\udfff"
        assert not cut_pair or len(cut) == limit  # (at the limit only when no boundary was near: Zalgo)


def test_surrogate_pair_and_zalgo_examples():
    assert truncate_text("ab\ud83d\ude00", 3) == "ab"
    zalgo = "e" + "\u0301" * 200
    assert truncate_text(zalgo, 100) == zalgo[:100]
    assert truncate_text("x" * (MAX_COMMENT_CHARS - 1) + "e\u0301" + "y", MAX_COMMENT_CHARS) == "x" * (MAX_COMMENT_CHARS - 1)


# ----------------------------------------------------------------------------------------------- validate
def raw(**kw) -> dict:
    base = {"response_id": "r-1", "survey_id": "s-1", "score": 3, "responded_at": "2026-11-20T10:00:00Z"}
    return {**base, **kw}


def test_a_long_comment_keeps_the_score_and_is_marked():
    long = "Hyvä " * 3000  # 15 000 characters
    r = validate(raw(comment=long), NOW)
    assert r.score == 3 and r.comment == long[:MAX_COMMENT_CHARS].rstrip() and len(r.comment) <= MAX_COMMENT_CHARS
    assert r.truncated == (("comment", len(long.strip())),)
    same = validate(raw(comment=r.comment), NOW)  # the version is the one of the cut text
    assert (same.version, same.truncated) == (r.version, ())


@pytest.mark.parametrize("comment,cut", [
    ("x" * MAX_COMMENT_CHARS, False),
    ("  " + "x" * MAX_COMMENT_CHARS + "\n ", False),  # blanks around it are not content
    ("x" * (MAX_COMMENT_CHARS + 1), True),
])
def test_the_limit_is_inclusive_and_counts_the_stripped_text(comment, cut):
    r = validate(raw(comment=comment), NOW)
    assert r.comment == "x" * MAX_COMMENT_CHARS and bool(r.truncated) is cut


@pytest.mark.parametrize("changes,reason", [
    ({"score": 11}, "score_out_of_range"), ({"score": None}, "missing_score"),
    ({"responded_at": "yesterday"}, "responded_at_invalid"), ({"response_id": None}, "missing_response_id"),
    ({"locale": "x" * 36}, "locale_too_long"), ({"segment": {"bad key!": "x"}}, "segment_invalid"),
])
def test_an_otherwise_invalid_record_is_refused_for_that_reason(changes, reason):
    with pytest.raises(Rejected) as err:
        validate(raw(comment="x" * 20_000, follow_up="y" * 20_000, **changes), NOW)
    assert err.value.reason == reason


# ------------------------------------------------------------------------------------------------- classify
async def test_classify_sends_the_cut_answer_and_dead_letters_the_original(tmp_path):
    h = Harness(tmp_path)
    comment = "Liian myöhään. " * 800 + "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # 12 000 + 5 characters
    async with h.feed("classify") as agent:
        await agent.put(raw_bytes(rid="long", score=2, comment=comment), key=b"long")
        await agent.put(raw_bytes(rid="long", score=2, comment=comment), key=b"long")  # a replay: nothing new
        await agent.put(raw_bytes(rid="bad", score=12, comment=comment), key=b"bad")  # otherwise invalid
        await agent.put(raw_bytes(rid="ok", score=9, comment="Hyvä"), key=b"ok")
    out = {o["response_id"]: o for o in h.decoded("classified", avro.CLASSIFIED_RESPONSE)}
    assert sorted(out) == ["long", "ok"]
    assert out["long"]["score"] == 2 and out["long"]["category"] == "detractor"
    assert out["long"]["comment"] == comment[:MAX_COMMENT_CHARS].rstrip()
    dls = h.decoded("dead_letters", avro.DEAD_LETTER)
    assert [(d["key"], d["reason"]) for d in dls] == [("long", "comment_truncated"), ("bad", "score_out_of_range")]
    kept = json.loads(dls[0]["payload_json"])
    assert kept["comment"] == comment and kept["score"] == 2  # the original, whole
    assert "12005" in dls[0]["detail"] and str(MAX_COMMENT_CHARS) in dls[0]["detail"]
    stats = h.pipeline.stats.as_dict()
    assert (stats["classify.truncated"], stats["classify.new"], stats["classify.duplicate"]) == (1, 2, 1)
    assert stats["dead_letter.classify.comment_truncated"] == 1
    (item,) = h.delta_items("overall=all")[:1]  # the cut answer counts in the windows like any other
    assert item[3] == "detractor"


async def test_a_cut_answer_lands_in_clickhouse(tmp_path, ch_store):
    from tests.test_agents import until

    h = Harness(tmp_path, store_factory=lambda: ch_store, env={"NPSFLOW_SINK_MAX_AGE": "0.05"})
    async with h.feed("classify") as agent:
        await agent.put(raw_bytes(rid="long", score=6, comment="ä" * 30_000, follow_up="b" * 10_001), key=b"long")
    async with h.feed("sink-responses") as agent:
        events = [await agent.put(value, key=key, partition=0) for key, value in h.sent["classified"]]
        await until(lambda: all(e.message.acked for e in events))
    got = ch_store.query("SELECT score, lengthUTF8(comment) AS c, lengthUTF8(follow_up) AS f FROM {db}.responses FINAL")
    assert got == [{"score": 6, "c": MAX_COMMENT_CHARS, "f": MAX_COMMENT_CHARS}]
    (dl,) = h.decoded("dead_letters", avro.DEAD_LETTER)
    assert dl["reason"] == "comment_truncated" and "comment of 30000" in dl["detail"] and "follow_up of 10001" in dl["detail"]


# ---------------------------------------------------------------------------------------------------- the API
def test_the_api_accepts_a_long_comment_says_it_will_be_cut_and_sends_it_whole(tmp_path):
    from tests.public_harness import API_KEY, PublicHarness

    h = PublicHarness(tmp_path)
    try:
        records = [{"response_id": "long", "score": 4, "responded_at": "2026-11-20T10:00:00Z", "comment": "k" * 12_000},
                   {"response_id": "short", "score": 9, "responded_at": "2026-11-20T10:00:00Z", "comment": "ok"},
                   {"response_id": "bad", "score": 99, "responded_at": "2026-11-20T10:00:00Z", "comment": "k" * 12_000}]

        async def post():
            response = await h.client.post("/api/v1/responses", json=records,
                                           headers={"Authorization": f"Bearer {API_KEY}"})
            return response.status, await response.json()
        status, reply = h.run(post())
    finally:
        h.close()
    assert status == 200
    assert [(r["status"], r.get("truncated"), r.get("reason")) for r in reply["results"]] == [
        ("accepted", ["comment"], None), ("accepted", None, None), ("rejected", None, "score_out_of_range")]
    assert [(r["response_id"], len(r["comment"])) for r in h.sent()] == [("acme:long", 12_000), ("acme:short", 2)]
