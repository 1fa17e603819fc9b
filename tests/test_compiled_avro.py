"""schemas.compiled: the prepared record writer gives fastavro's bytes and the prepared reader fastavro's dicts,
or they leave the record to fastavro.

The oracle is the codec as it was (fastavro for every record): an AvroCodec whose prepared writers and readers
are removed."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import catalog
from schemas import codec as avro
from schemas.compiled import record_writer
from schemas.examples import examples



def fastavro_only() -> avro.AvroCodec:
    """The codec as it was before schemas.compiled: fastavro for every record."""
    codec = avro.AvroCodec(registry_url="")
    codec.register_all()
    for prepared in (*codec._writers.values(), *codec._readers.values()):
        prepared.fast = None
    return codec


FAST = avro.AvroCodec(registry_url="")
ORACLE = fastavro_only()
COMPILED = [s for s in avro.SUBJECTS if FAST._writer(s).fast is not None]


class Text(str):
    pass


def current(subject: str) -> dict:
    return next(v.schema for v in catalog.load_versions() if v.subject == subject and v.current)


aware = st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                     timezones=st.sampled_from([timezone.utc, timezone(timedelta(hours=2)),
                                                timezone(timedelta(hours=-9, minutes=-30))]))
odd = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(1 << 70), max_value=1 << 70),
                st.floats(), st.text(max_size=5), st.builds(Text, st.text(max_size=5)), st.binary(max_size=3),
                st.datetimes(), aware, st.dates(), st.lists(st.integers(), max_size=2))


def good(schema) -> st.SearchStrategy:
    """Values of the types the fast path takes (and some it leaves to fastavro: surrogates, big ints)."""
    if isinstance(schema, list):
        return st.one_of(*[good(branch) for branch in schema])
    if isinstance(schema, str):
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if kind == "null":
        return st.none()
    if kind == "string":
        return st.text(max_size=80)  # every code point, lone surrogates included
    if (kind, logical) == ("long", "timestamp-millis"):
        return st.one_of(aware, st.integers(-(1 << 63), (1 << 63) - 1))
    if (kind, logical) == ("int", "date"):
        return st.one_of(st.dates(), st.integers(-(1 << 31), (1 << 31) - 1))
    if kind == "int":
        return st.integers(-(1 << 31), (1 << 31) - 1)
    if kind == "long":
        return st.integers(-(1 << 63), (1 << 63) - 1)
    if kind == "boolean":
        return st.booleans()
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "map":
        return st.dictionaries(st.text(max_size=10), good(schema["values"]), max_size=70)
    if kind == "array":
        return st.lists(good(schema["items"]), max_size=70)
    raise AssertionError(schema)


def records(schema: dict, mostly_good: bool) -> st.SearchStrategy:
    def field(f):
        return good(f["type"]) if mostly_good else st.one_of(good(f["type"]), odd)
    fixed = st.fixed_dictionaries({f["name"]: field(f) for f in schema["fields"]})
    if mostly_good:
        return fixed
    names = [f["name"] for f in schema["fields"]]
    return st.tuples(fixed, st.sets(st.sampled_from(names), max_size=2), st.dictionaries(st.text(max_size=4),
                                                                                        st.integers(), max_size=2)
                     ).map(lambda t: {**{k: v for k, v in t[0].items() if k not in t[1]}, **t[2]})


def same(subject: str, record: dict) -> None:
    try:
        expected = ORACLE.encode(subject, record)
    except avro.CodecError as exc:
        with pytest.raises(avro.CodecError) as got:
            FAST.encode(subject, record)
        assert (got.value.reason, got.value.detail) == (exc.reason, exc.detail)
        return
    assert FAST.encode(subject, record) == expected


@pytest.mark.parametrize("subject", COMPILED)
def test_the_prepared_writer_writes_fastavros_bytes(subject):
    @settings(max_examples=1500, deadline=None)
    @given(records(current(subject), mostly_good=True))
    def check(record):
        same(subject, record)
    check()


@pytest.mark.parametrize("subject", COMPILED)
def test_records_outside_the_fast_path_are_fastavros_to_encode_or_refuse(subject):
    @settings(max_examples=1500, deadline=None)
    @given(records(current(subject), mostly_good=False))
    def check(record):
        same(subject, record)
    check()


def test_the_classified_response_and_the_dead_letter_have_prepared_writers():
    assert {avro.CLASSIFIED_RESPONSE, avro.DEAD_LETTER} <= set(COMPILED)
    for subject, record in examples().items():
        same(subject, record)
        if subject in COMPILED:
            assert FAST._writer(subject).fast(record) is not None  # the example is on the fast path


def test_schemas_with_other_types_get_no_prepared_writer():
    assert record_writer({"type": "record", "name": "R", "fields": [{"name": "f", "type": "double"}]}) is None
    assert record_writer({"type": "record", "name": "R", "fields": [
        {"name": "f", "type": ["null", "long", "string"]}]}) is None
    assert record_writer({"type": "enum", "name": "E", "symbols": ["a"]}) is None


def test_the_validating_codec_never_takes_the_fast_path():
    strict = avro.AvroCodec(registry_url="", validate=True)
    record = examples()[avro.CLASSIFIED_RESPONSE]
    assert strict.encode(avro.CLASSIFIED_RESPONSE, record) == FAST.encode(avro.CLASSIFIED_RESPONSE, record)
    with pytest.raises(avro.CodecError):
        strict.encode(avro.CLASSIFIED_RESPONSE, {**record, "score": 7.5})


# ------------------------------------------------------------------------------------------- reading
def read_same(data: bytes, subject: str = avro.RAW_RESPONSE):
    """FAST and ORACLE decode ``data`` into the same dict (field order and tzinfo included) or refuse it alike."""
    try:
        expected = ORACLE.decode(data, expected=subject)
    except avro.CodecError as exc:
        with pytest.raises(avro.CodecError) as got:
            FAST.decode(data, expected=subject)
        assert (got.value.reason, got.value.detail) == (exc.reason, exc.detail)
        return None
    got = FAST.decode(data, expected=subject)
    assert got == expected and list(got) == list(expected)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]
    for name, value in got.items():
        if isinstance(value, datetime):
            assert value.tzinfo is expected[name].tzinfo
    return got


def test_the_raw_response_has_a_prepared_reader():
    data = ORACLE.encode(avro.RAW_RESPONSE, examples()[avro.RAW_RESPONSE])
    reader = FAST._readers[int.from_bytes(data[1:5], "big")]
    assert reader.fast is not None and reader.fast(data, 5) == ORACLE.decode(data)


raw_values = st.fixed_dictionaries({
    f["name"]: good(f["type"]) for f in current(avro.RAW_RESPONSE)["fields"]})


@settings(max_examples=3000, deadline=None)
@given(raw_values)
def test_the_prepared_reader_reads_what_fastavro_reads(record):
    try:
        data = ORACLE.encode(avro.RAW_RESPONSE, record)
    except avro.CodecError:  # e.g. a lone surrogate: not writable, so never read
        return
    read_same(data)  # (a received_at before year 1 is writable, and refused by both readers)


@settings(max_examples=3000, deadline=None)
@given(raw_values, st.data())
def test_damaged_records_are_read_or_refused_exactly_as_fastavro_does(record, data):
    try:
        encoded = bytearray(ORACLE.encode(avro.RAW_RESPONSE, record))
    except avro.CodecError:
        return
    damage = data.draw(st.sampled_from(["cut", "flip", "append", "replace"]))
    if damage == "cut":
        encoded = encoded[:data.draw(st.integers(5, len(encoded)))]
    elif damage == "flip":
        at = data.draw(st.integers(5, len(encoded) - 1))
        encoded[at] = data.draw(st.integers(0, 255))
    elif damage == "append":
        encoded += data.draw(st.binary(min_size=1, max_size=12))
    else:
        encoded = encoded[:5] + data.draw(st.binary(max_size=200))
    read_same(bytes(encoded))


TAIL = b"\x06cli\x00"  # source "cli", received_at 0


@pytest.mark.parametrize("body, readable", [
    (b"\x00" * 10 + TAIL, True),  # every union null, an empty map
    (b"\x00" * 8 + b"\x01\x08\x02a\x02b\x00" + b"\x00" + TAIL, True),  # a map in a sized block (count -1)
    (b"\x00" * 10 + b"\x06cli" + b"\xff" * 9 + b"\x01", False),  # a 10-byte varint: received_at -2**63 ms
    (b"\x00" * 3 + b"\x02" + b"\xff" * 9 + b"\x7f" + b"\x00" * 6 + TAIL, True),  # a score beyond 64 bits
    (b"\x00" * 3 + b"\x06" + b"\x00" * 6 + TAIL, False),  # a union index out of range
    (b"\x01\x02ab" + b"\x00" * 9 + TAIL, None),  # a union index of -1
    (b"\x02\x06\xed\xa0\x80" + b"\x00" * 9 + TAIL, False),  # UTF-8 of a surrogate
    (b"\x00" * 10 + TAIL + b"\x00", False),  # a trailing byte
    (b"\x00" * 10 + b"\x06cl", False),  # cut short
])
def test_unusual_encodings(body, readable):
    got = read_same(ORACLE.encode(avro.RAW_RESPONSE, examples()[avro.RAW_RESPONSE])[:5] + body)
    assert readable is None or (got is not None) == readable
