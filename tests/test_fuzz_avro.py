"""Fuzzing the Avro decoder and the classify agent behind it (issue 15, point 2).

* ``AvroCodec.decode`` — garbage, truncated and damaged bytes, wrong magic bytes, unknown ids and other subjects'
  ids, over every catalogued schema version: a dict or a ``CodecError`` with a known reason, never another
  exception, never slow;
* ``validate`` on schema-valid but meaningless RawResponses: a Response or ``Rejected``, nothing else;
* the classify agent (the real batch loop, tests/test_agents.Harness, no broker) fed generated bad records among
  valid ones: it never dies, every bad record becomes exactly one dead letter with a reason, every valid answer
  is classified exactly once (a comment over the limit: cut, and its original dead-lettered as
  ``comment_truncated``), no ``classify_internal_error``.
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
from datetime import datetime, timezone

import pytest
from hypothesis import example, given, strategies as st

from npsflow.ingest import to_raw_response
from schemas import catalog
from schemas import codec as avro
from schemas.compiled import write_long
from streams.responses import MAX_COMMENT_CHARS, Rejected, validate
from tests.fuzzing import Clock, budget, web_text

pytestmark = pytest.mark.fuzz

NOW = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
CODEC = avro.AvroCodec(registry_url="")
VERSIONS = catalog.load_versions()
IDS = sorted({v.id for v in VERSIONS})
RAW_IDS = sorted(v.id for v in VERSIONS if v.subject == avro.RAW_RESPONSE)
OTHER_IDS = sorted(v.id for v in VERSIONS if v.subject != avro.RAW_RESPONSE)
REASONS = {avro.NOT_AVRO_WIRE_FORMAT, avro.UNKNOWN_SCHEMA_ID, avro.AVRO_DECODE_ERROR, avro.UNEXPECTED_SCHEMA}
SLOW = 2.0  # seconds: far beyond any decode (µs); a hang or a quadratic blow-up is caught here, not by CI's timeout


def varint(n: int) -> bytes:
    out = bytearray()
    write_long(n, out)
    return bytes(out)


NULLS = b"\x00" * 8  # RawResponse v3: its eight optional fields before the segment map, all null


def header(schema_id: int, magic: int = 0) -> bytes:
    return bytes([magic]) + schema_id.to_bytes(4, "big")


def decoded_or_refused(data: bytes, expected: str | None = None):
    """The decoded dict, or the CodecError; any other exception fails the test (it propagates)."""
    with Clock() as clock:
        try:
            out = CODEC.decode(data, expected=expected)
        except avro.CodecError as exc:
            out = exc
    assert clock.seconds < SLOW, f"decoding {len(data)} bytes took {clock.seconds:.2f} s"
    if isinstance(out, avro.CodecError):
        assert out.reason in REASONS and out.detail
    else:
        assert isinstance(out, dict)
    return out


def raw_record(rid: str = "r", score=7, comment=None, **extra) -> dict:
    obj = {"response_id": rid, "score": score, "responded_at": "2026-11-20T10:00:00Z", "comment": comment,
           "segment": {"location": "Espoo"}, **extra}
    return to_raw_response({k: v for k, v in obj.items() if v is not None}, received_at=NOW)


VALID = CODEC.encode(avro.RAW_RESPONSE, raw_record(comment="Hyvä palvelu"))


# --------------------------------------------------------------------------------------------- the decoder
@budget(1500)
@given(st.binary(max_size=200), st.sampled_from([None, avro.RAW_RESPONSE, "RawResponse", avro.TRIGGER_EVENT]))
@example(b"", None)
@example(b"\x00\x00\x00", avro.RAW_RESPONSE)
@example(b"\x80\x00\x00\x00\x0b", None)  # a magic byte with the high bit set
def test_any_bytes_decode_or_fail_with_a_codec_error(data, expected):
    decoded_or_refused(data, expected)


@budget(1500)
@given(st.sampled_from(IDS), st.binary(max_size=300))
@example(11, b"\x02\x02r" + b"\x00" * 20)
@example(11, NULLS + varint(1 << 62))  # a segment map of 2^62 entries, and no bytes for them
@example(11, NULLS + varint(-1) + varint(1 << 40))  # a map block of -1 entries "of 2^40 bytes"
@example(11, NULLS + b"\x00\x00" + varint(1 << 62))  # a source string of 2^62 bytes
def test_every_catalogued_schema_id_with_garbage_after_it(schema_id, body):
    decoded_or_refused(header(schema_id) + body)


@budget(600)
@given(st.integers(1, 255), st.sampled_from(IDS), st.binary(max_size=40))
def test_a_wrong_magic_byte_is_not_avro(magic, schema_id, body):
    out = decoded_or_refused(header(schema_id, magic) + body)
    assert isinstance(out, avro.CodecError) and out.reason == avro.NOT_AVRO_WIRE_FORMAT


@budget(600)
@given(st.integers(0, (1 << 32) - 1).filter(lambda i: i not in IDS), st.binary(max_size=40))
@example(0, b"")
@example((1 << 32) - 1, b"\x00")
def test_an_unknown_schema_id_is_named(schema_id, body):
    out = decoded_or_refused(header(schema_id) + body)
    assert isinstance(out, avro.CodecError) and out.reason == avro.UNKNOWN_SCHEMA_ID


@budget(300)
@given(st.sampled_from(OTHER_IDS), st.binary(max_size=40))
def test_another_subjects_id_is_unexpected_where_a_raw_response_is_expected(schema_id, body):
    out = decoded_or_refused(header(schema_id) + body, avro.RAW_RESPONSE)
    assert isinstance(out, avro.CodecError) and out.reason == avro.UNEXPECTED_SCHEMA


@budget(1000)
@given(st.data())
def test_damaged_valid_records_of_every_version_decode_or_fail_cleanly(data):
    """A valid RawResponse, written with any catalogued version of its schema, then cut, extended or damaged."""
    from fastavro import schemaless_writer
    from io import BytesIO

    version = data.draw(st.sampled_from([v for v in VERSIONS if v.subject == avro.RAW_RESPONSE]))
    record = raw_record(comment=data.draw(web_text), score=data.draw(st.one_of(st.integers(-5, 15), web_text)))
    fields = {f["name"] for f in version.schema["fields"]}
    buf = BytesIO()
    schemaless_writer(buf, avro._parse(version.schema), {k: v for k, v in record.items() if k in fields})
    encoded = bytearray(header(version.id) + buf.getvalue())
    whole = decoded_or_refused(bytes(encoded), avro.RAW_RESPONSE)
    assert isinstance(whole, dict) and whole["response_id"] == "r"  # read with the current schema
    damage = data.draw(st.sampled_from(["cut", "append", "flip", "splice"]))
    if damage == "cut":
        out = decoded_or_refused(bytes(encoded[:data.draw(st.integers(0, len(encoded) - 1))]), avro.RAW_RESPONSE)
        assert isinstance(out, avro.CodecError)  # a record is never read from part of its bytes
    elif damage == "append":
        out = decoded_or_refused(bytes(encoded + data.draw(st.binary(min_size=1, max_size=20))), avro.RAW_RESPONSE)
        assert isinstance(out, avro.CodecError) and out.reason == avro.AVRO_DECODE_ERROR  # trailing bytes
    elif damage == "flip":
        at = data.draw(st.integers(5, len(encoded) - 1))
        encoded[at] ^= data.draw(st.integers(1, 255))
        decoded_or_refused(bytes(encoded), avro.RAW_RESPONSE)
    else:
        at = data.draw(st.integers(5, len(encoded)))
        decoded_or_refused(bytes(encoded[:at] + data.draw(st.binary(max_size=30)) + encoded[at:]),
                           avro.RAW_RESPONSE)


# ------------------------------------------------------------------------------- schema-valid, meaningless
optional_text = st.one_of(st.none(), web_text, st.sampled_from(["", " ", "2026-11-20T10:00:00Z", "null", "{}"]))
json_text = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | web_text,
                         lambda inner: st.lists(inner, max_size=3) | st.dictionaries(web_text, inner, max_size=3),
                         max_leaves=8).map(lambda v: json.dumps(v))
raw_responses = st.fixed_dictionaries({
    "response_id": optional_text, "survey_id": optional_text, "invitation_id": optional_text,
    "score": st.one_of(st.none(), st.integers(-(1 << 63), (1 << 63) - 1), st.integers(-3, 13), web_text),
    "comment": st.one_of(optional_text, st.integers(9_990, 10_010).map(lambda n: "ä" * n)),
    "follow_up": optional_text, "responded_at": optional_text, "locale": optional_text,
    "segment": st.dictionaries(web_text, web_text, max_size=4),
    "unknown_json": st.one_of(st.none(), json_text, web_text),
    "source": web_text,
    "received_at": st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 1, 1),
                                timezones=st.just(timezone.utc)),
})


@budget(1500)
@given(raw_responses)
@example({**raw_record(), "unknown_json": '"response_id"'})  # unknown_json that is JSON, but not an object
@example({**raw_record(), "unknown_json": "[\"comment\"]"})
@example({**raw_record(), "unknown_json": "1e999"})
@example({**raw_record(), "unknown_json": "[" * 100_000})  # deeper than json.loads recurses
def test_schema_valid_records_validate_or_are_rejected_with_a_reason(record):
    back = CODEC.decode(CODEC.encode(avro.RAW_RESPONSE, record), expected=avro.RAW_RESPONSE)
    try:
        response = validate(back, NOW)
    except Rejected as exc:
        assert exc.reason and exc.detail
        return
    assert 0 <= response.score <= 10 and response.response_id
    assert response.comment is None or len(response.comment) <= MAX_COMMENT_CHARS


# ------------------------------------------------------------------------------------- through the agent
def bad_records() -> st.SearchStrategy:
    """(bytes, reason or None when several are possible) of records that must be dead-lettered."""
    cut = st.integers(0, len(VALID) - 1).map(lambda n: (VALID[:n], None))
    return st.one_of(
        st.binary(max_size=4).map(lambda b: (b, avro.NOT_AVRO_WIRE_FORMAT)),
        st.tuples(st.integers(1, 255), st.binary(max_size=30)).map(
            lambda t: (bytes([t[0]]) + VALID[1:5] + t[1], avro.NOT_AVRO_WIRE_FORMAT)),
        st.integers(0, (1 << 32) - 1).filter(lambda i: i not in IDS).map(
            lambda i: (header(i) + VALID[5:], avro.UNKNOWN_SCHEMA_ID)),
        st.sampled_from(OTHER_IDS).map(lambda i: (header(i) + VALID[5:], avro.UNEXPECTED_SCHEMA)),
        cut,
        st.binary(min_size=1, max_size=10).map(lambda b: (VALID + b, avro.AVRO_DECODE_ERROR)),
        st.tuples(st.sampled_from(RAW_IDS), st.binary(max_size=60)).map(lambda t: (header(t[0]) + t[1], None)),
        st.one_of(st.integers(11, 1 << 40), st.integers(-(1 << 40), -1)).map(
            lambda s: (CODEC.encode(avro.RAW_RESPONSE, raw_record("x", score=s)), "score_out_of_range")),
        st.sampled_from(["7.5", "seven", "true", "[1]", "\u0663"]).map(
            lambda s: (CODEC.encode(avro.RAW_RESPONSE, raw_record("x", score=s)), "score_not_integer")),
        st.sampled_from(["yesterday", "2026-13-01T00:00:00Z", "2026-11-20T10:00:00"]).map(
            lambda at: (CODEC.encode(avro.RAW_RESPONSE, raw_record("x", responded_at=at)), "responded_at_invalid")),
        st.just((CODEC.encode(avro.RAW_RESPONSE, raw_record("x", responded_at="2027-01-01T00:00:00Z")),
                 "responded_at_in_future")),
        st.just((CODEC.encode(avro.RAW_RESPONSE, {**raw_record("x"), "response_id": None}), "missing_response_id")),
        st.sampled_from(['"comment"', '["response_id"]', "1e999", "[" * 5000]).map(  # was classify_internal_error
            lambda u: (CODEC.encode(avro.RAW_RESPONSE, {**raw_record("x", score=99), "unknown_json": u}),
                       "score_out_of_range")),
    )


valid_answers = st.tuples(st.integers(0, 10), st.one_of(st.none(), web_text, st.sampled_from(
    ["x" * 10_001, "  " + "y" * 10_000 + "  ", "\U0001F1EB\U0001F1EE" * 5_001])))


async def run_classify(tmp: str, items: list):
    from tests.test_agents import Harness

    harness = Harness(tmp)
    async with harness.feed("classify") as agent:  # leaving the block raises if the agent died
        fed = [await agent.put(value, key=key, partition=0) for key, value in items]
    assert all(f.acked for f in fed)  # every input consumed, none left behind
    return harness


@budget(25)
@given(st.lists(st.one_of(valid_answers.map(lambda a: ("valid", a)), bad_records().map(lambda b: ("bad", b))),
                min_size=1, max_size=30),
       st.randoms(use_true_random=False))
@example([("valid", (3, "x" * 10_001)), ("bad", (b"\x00\x00", avro.NOT_AVRO_WIRE_FORMAT)),
          ("valid", (9, "\U0001F1EB\U0001F1EE" * 5_001)), ("bad", (VALID[:-1], None)), ("valid", (0, " ok "))],
         random.Random(0))
def test_the_classify_agent_survives_bad_records_and_keeps_every_valid_one(items, rnd):
    records, valid, truncated, expected_reasons = [], {}, 0, []
    for i, (kind, what) in enumerate(items):
        if kind == "valid":
            score, comment = what
            rid = f"v{i}"
            records.append((rid.encode(), CODEC.encode(avro.RAW_RESPONSE, raw_record(rid, score, comment))))
            valid[rid] = score
            if comment is not None and len(comment.strip()) > MAX_COMMENT_CHARS:
                truncated += 1
                expected_reasons.append((rid, "comment_truncated"))
        else:
            data, reason = what
            key = rnd.choice([None, b"x", bytes([rnd.randrange(256)])])
            records.append((key, data))
            expected_reasons.append((None, reason))
    with tempfile.TemporaryDirectory() as tmp:
        harness = asyncio.run(run_classify(tmp, records))
    classified = harness.decoded("classified", avro.CLASSIFIED_RESPONSE)
    assert sorted((c["response_id"], c["score"]) for c in classified) == sorted(valid.items())  # each once
    assert all(c["comment"] is None or len(c["comment"]) <= MAX_COMMENT_CHARS for c in classified)
    dead = harness.decoded("dead_letters", avro.DEAD_LETTER)
    assert len(dead) == len(expected_reasons)  # every bad record, once; every cut comment's original, once
    for letter, (rid, reason) in zip(dead, expected_reasons):
        assert letter["reason"] and letter["detail"] and letter["stage"] == "classify"
        assert letter["reason"] != "classify_internal_error", letter["detail"]
        if reason is not None:
            assert letter["reason"] == reason, letter
        if rid is not None:
            assert letter["key"] == rid
    stats = harness.pipeline.stats.as_dict()
    assert "classify.internal_error" not in stats and stats.get("classify.truncated", 0) == truncated
