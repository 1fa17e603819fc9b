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


# ------------------------------------------------------------------------------------------ follow_up
def test_follow_up_is_read_like_the_comment():
    r = validate(raw(follow_up="  Faster booking, please \n"), NOW)
    assert r.follow_up == "Faster booking, please" and r.comment == "Hyvä palvelu"
    assert validate(raw(), NOW).follow_up is None  # absent
    assert validate(raw(follow_up=None), NOW).follow_up is None
    assert validate(raw(follow_up="x" * 10_000), NOW).follow_up == "x" * 10_000  # the comment's limit, inclusive


@pytest.mark.parametrize("blank", ["", "   ", "\n\t "])
def test_blank_follow_up_is_none(blank):
    r = validate(raw(follow_up=blank), NOW)
    assert r.follow_up is None
    assert r.version == validate(raw(), NOW).version  # a blank answer is no answer: the same version


@pytest.mark.parametrize(
    "changes,reason",
    [
        ({"follow_up": 17}, "follow_up_not_string"),
        ({"unknown_json": json.dumps({"follow_up": 17})}, "follow_up_not_string"),
        ({"unknown_json": json.dumps({"follow_up": ["a"]})}, "follow_up_not_string"),
    ],
)
def test_follow_up_rejections_carry_reasons(changes, reason):
    with pytest.raises(Rejected) as err:
        validate(raw(**changes), NOW)
    assert err.value.reason == reason
    assert err.value.detail


def test_follow_up_limit_is_the_comments_and_both_are_cut_not_refused():
    from streams.responses import MAX_COMMENT_CHARS, MAX_FOLLOW_UP_CHARS
    assert MAX_FOLLOW_UP_CHARS == MAX_COMMENT_CHARS == 10_000
    r = validate(raw(comment="c" * 10_001, follow_up="f" * 12_345), NOW)
    assert (r.score, r.comment, r.follow_up) == (9, "c" * 10_000, "f" * 10_000)
    assert r.truncated == (("comment", 10_001), ("follow_up", 12_345))
    old = validate(raw(unknown_json=json.dumps({"follow_up": "x" * 10_001})), NOW)  # a v1/v2 producer's
    assert (old.follow_up, old.truncated) == ("x" * 10_000, (("follow_up", 10_001),))


def test_follow_up_from_a_producer_before_the_typed_field_is_kept():
    """RawResponse v1/v2 had no follow_up field: the CLI then carried it in unknown_json."""
    r = validate(raw(unknown_json=json.dumps({"follow_up": " The technician ", "other": 1})), NOW)
    assert r.follow_up == "The technician"
    # the typed field wins over a leftover in unknown_json
    assert validate(raw(follow_up="typed", unknown_json=json.dumps({"follow_up": "old"})), NOW).follow_up == "typed"
    assert validate(raw(unknown_json=json.dumps({"follow_up": None})), NOW).follow_up is None


def test_only_a_follow_up_change_is_a_new_version():
    base = validate(raw(), NOW)
    answered = validate(raw(follow_up="Faster booking"), NOW)
    other = validate(raw(follow_up="Cheaper"), NOW)
    assert base.responded_ms == answered.responded_ms == other.responded_ms
    assert len({base.content_hash, answered.content_hash, other.content_hash}) == 3
    assert len({base.version, answered.version, other.version}) == 3
    assert decide(remembered(answered), validate(raw(follow_up=" Faster booking "), NOW)) is Decision.DUPLICATE
    # the follow-up is answered after the score (a later responded_at): an edit, and the earlier one is stale
    later = validate(raw(follow_up="Faster booking", responded_at="2026-11-20T10:01:00Z"), NOW)
    assert later.score == base.score and later.version > base.version
    assert decide(remembered(base), later) is Decision.EDIT
    assert decide(remembered(later), base) is Decision.STALE
    # same responded_at: the content hash orders the two (independent of arrival order), as for any edit
    winner, loser = sorted([base, answered], key=lambda r: (r.version, r.content_hash), reverse=True)
    assert decide(remembered(loser), winner) is Decision.EDIT
    assert decide(remembered(winner), loser) is Decision.STALE


def test_versions_without_follow_up_are_unchanged():
    """Responses remembered (table responses-seen) or stored before follow_up existed keep their version, so a
    replay of them is still a duplicate and not an edit. The body below is the hash input before follow_up."""
    import hashlib

    r = validate(raw(), NOW)
    old_body = json.dumps([9, "Hyvä palvelu", "s-1", [["location", "Espoo"]]])
    assert r.content_hash == hashlib.blake2b(old_body.encode(), digest_size=8).hexdigest()
    assert r.version == r.responded_ms * 1_000_000 + int(r.content_hash, 16) % 1_000_000
