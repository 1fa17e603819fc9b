"""The faster paths of streams.responses give exactly what the old code gave (the old code is the oracle here)."""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
from datetime import datetime, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.nps import classify
from streams.responses import Response, hash_body, validate

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)


def old_content_hash(r: Response) -> str:
    """Response.content_hash before this change, verbatim: stored memos and ClickHouse versions depend on it."""
    parts = [r.score, r.comment or "", r.survey_id, sorted(r.segment.items())]
    if r.follow_up:
        parts.append(["follow_up", r.follow_up])
    body = json.dumps(parts)
    return hashlib.blake2b(body.encode(), digest_size=8).hexdigest()


class Level(enum.IntEnum):
    SEVEN = 7


class Text(str):
    pass


any_text = st.text()  # every code point, surrogates and control characters included
texts = st.one_of(any_text, st.sampled_from(["", " ", "Hyvä palvelu", "\"q\"\\", "\x00\n\t", "😀", "\ud800"]))
odd = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.builds(Text, any_text),
                st.just(Level.SEVEN), st.lists(st.integers(), max_size=2))
scores = st.one_of(st.integers(0, 10), st.integers(), odd)
segments = st.one_of(st.dictionaries(any_text, any_text, max_size=6),
                     st.dictionaries(any_text, st.one_of(any_text, odd), max_size=4))


def response(score=9, comment="ok", survey_id="s-1", segment=None, follow_up=None) -> Response:
    return Response(response_id="r-1", survey_id=survey_id, invitation_id=None, score=score,
                    category=classify(7), comment=comment, locale=None, responded_at=NOW, received_at=NOW,
                    segment={"location": "Espoo"} if segment is None else segment, follow_up=follow_up)


@settings(max_examples=3000, deadline=None)
@given(score=scores, comment=st.one_of(texts, odd), survey_id=st.one_of(texts, odd), segment=segments,
       follow_up=st.one_of(texts, odd))
def test_the_content_hash_is_the_old_one_for_every_input(score, comment, survey_id, segment, follow_up):
    r = response(score, comment, survey_id, segment, follow_up)
    try:
        expected = old_content_hash(r)
    except Exception as exc:  # noqa: BLE001 - what the old code raised, the new one raises
        with pytest.raises(type(exc)):
            r.content_hash
        return
    assert r.content_hash == expected


@settings(max_examples=1000, deadline=None)
@given(score=st.integers(0, 10), comment=texts, survey_id=texts, segment=st.dictionaries(texts, texts, max_size=8),
       follow_up=st.one_of(st.none(), texts))
def test_the_hash_body_is_json_dumps_for_validated_parts(score, comment, survey_id, segment, follow_up):
    items = sorted(segment.items())
    parts = [score, comment, survey_id, items] + ([["follow_up", follow_up]] if follow_up else [])
    assert hash_body(score, comment, survey_id, items, follow_up) == json.dumps(parts)


def test_known_hashes_stay():
    """Pinned digests (computed by the code before this change)."""
    assert old_content_hash(response()) == response().content_hash
    r = validate({"response_id": "r-1", "score": 9, "comment": "Hyvä palvelu", "survey_id": "s-1",
                  "responded_at": "2026-11-20T10:00:00Z", "segment": {"location": "Espoo"}}, NOW)
    assert r.content_hash == hashlib.blake2b(
        json.dumps([9, "Hyvä palvelu", "s-1", [["location", "Espoo"]]]).encode(), digest_size=8).hexdigest()


def test_computed_values_are_kept_and_recomputed_for_a_replaced_response():
    r = response()
    assert r.version == r.version and vars(r)["content_hash"] == r.content_hash
    other = dataclasses.replace(r, segment={"location": "Oulu"})
    assert "content_hash" not in vars(other) and other.content_hash != r.content_hash
    assert Response.content_hash.__doc__ and Response.__dict__["version"].func(r) == r.version
