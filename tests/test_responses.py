import json
from datetime import datetime, timedelta, timezone

import pytest

from streams.nps import Category
from streams.responses import Decision, Rejected, decide, remembered, validate

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def raw(**kw):
    base = {"response_id": "r-1", "survey_id": "s-1", "score": 9, "comment": "Hyvä palvelu",
            "responded_at": "2026-11-20T10:00:00Z", "locale": "fi", "segment": {"location": "Espoo"}}
    base.update(kw)
    return base


def test_valid_record():
    r = validate(raw(), NOW)
    assert (r.response_id, r.score, r.category, r.locale) == ("r-1", 9, Category.PROMOTER, "fi")
    assert r.responded_at == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)
    assert r.segment == {"location": "Espoo"} and r.received_at == NOW


@pytest.mark.parametrize("score,expected", [("7", 7), (" 10 ", 10), ("0", 0), (0, 0), (10, 10)])
def test_integer_scores_in_text_or_number(score, expected):
    assert validate(raw(score=score), NOW).score == expected


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"score": "7.5"}, "score_not_integer"),
        ({"score": "abc"}, "score_not_integer"),
        ({"score": 11}, "score_out_of_range"),
        ({"score": -1}, "score_out_of_range"),
        ({"score": None}, "missing_score"),
        ({"score": ""}, "missing_score"),
        ({"response_id": None}, "missing_response_id"),
        ({"response_id": "  "}, "missing_response_id"),
        ({"responded_at": None}, "missing_responded_at"),
        ({"responded_at": "yesterday"}, "responded_at_invalid"),
        ({"responded_at": "2026-11-20T10:00:00"}, "responded_at_invalid"),
        ({"responded_at": "2026-11-21T12:30:00Z"}, "responded_at_in_future"),
        ({"comment": "x" * 10_001}, "comment_too_long"),
        ({"unknown_json": json.dumps({"response_id": 17})}, "response_id_not_string"),
        ({"unknown_json": json.dumps({"segment": [1]})}, "segment_invalid"),
        ({"segment": {"bad key!": "x"}}, "segment_invalid"),
        ({"segment": {"location": "x" * 257}}, "segment_invalid"),
        ({"segment": {f"k{i}": "v" for i in range(33)}}, "segment_invalid"),
        ({"responded_at": "1969-12-31T23:59:59Z"}, "responded_at_out_of_range"),
        ({"responded_at": "0001-01-01T00:00:00+01:00"}, "responded_at_out_of_range"),
        ({"score": "12345678901234567890"}, "score_out_of_range"),
        ({"score": "\u0663"}, "score_not_integer"),
    ],
)
def test_rejections_carry_reasons(changes, reason):
    with pytest.raises(Rejected) as err:
        validate(raw(**changes), NOW)
    assert err.value.reason == reason
    assert err.value.detail


def test_near_future_within_skew_is_accepted():
    r = validate(raw(responded_at=(NOW + timedelta(minutes=5)).isoformat()), NOW)
    assert r.responded_at > NOW


def test_offsets_are_normalised_to_utc():
    r = validate(raw(responded_at="2026-11-20T12:00:00+02:00"), NOW)
    assert r.responded_at == datetime(2026, 11, 20, 10, tzinfo=timezone.utc)


def test_dedup_decisions():
    first = validate(raw(), NOW)
    assert decide(None, first) is Decision.NEW
    same = validate(raw(), NOW + timedelta(hours=1))  # replay received later
    assert decide(remembered(first), same) is Decision.DUPLICATE
    later = validate(raw(score=3, responded_at="2026-11-20T11:00:00Z"), NOW)
    assert decide(remembered(first), later) is Decision.EDIT
    assert decide(remembered(later), first) is Decision.STALE


def test_same_timestamp_edit_has_an_arrival_order_independent_winner():
    a = validate(raw(score=2), NOW)
    b = validate(raw(score=8), NOW)
    assert a.version != b.version
    winner = a if (a.version, a.content_hash) > (b.version, b.content_hash) else b
    loser = b if winner is a else a
    assert decide(remembered(loser), winner) is Decision.EDIT
    assert decide(remembered(winner), loser) is Decision.STALE
