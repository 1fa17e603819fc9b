"""Fuzzing ``npsflow ingest responses`` (issue 15, point 2): files of arbitrary lines — JSON objects of any shape,
other JSON, truncated JSON, bytes that are not UTF-8, lone surrogates, huge numbers, deep nesting, a byte order
mark — read as the CLI reads them (npsflow.ingest.iter_file → parse_lines → plan_ingest, with the real codec).

Properties: nothing escapes; every non-blank line is either sent or refused with a reason (once, by its line
number) and every refused line is a dead letter; every line that is a JSON object Avro can carry is sent, and
is the record it says. The oracle of "a JSON object Avro can carry" is written here: json parses the line into
an object, its strings are valid Unicode (no lone surrogate), and it nests no deeper than the documented limit.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import example, given, strategies as st

from npsflow.ingest import MAX_JSON_DEPTH, iter_file, parse_lines, plan_ingest
from schemas import codec as avro
from tests.fuzzing import HOSTILE, budget, web_text

pytestmark = pytest.mark.fuzz

CODEC = avro.AvroCodec(registry_url="")
NOT_NEWLINE = st.characters(exclude_categories=("Cs",), exclude_characters="\r\n")
line_text = st.text(NOT_NEWLINE, max_size=60)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | line_text | st.sampled_from(HOSTILE)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(line_text, inner,
                                                                                         max_size=3), max_leaves=10)
fields = st.sampled_from(["response_id", "survey_id", "invitation_id", "score", "comment", "follow_up",
                          "responded_at", "locale", "segment", "source", "received_at", "unknown_json", "x"])
objects = st.dictionaries(st.one_of(fields, line_text), values, max_size=8)
plausible = st.fixed_dictionaries({"response_id": line_text, "score": st.one_of(st.integers(0, 10), line_text),
                                   "responded_at": st.just("2026-11-20T10:00:00Z")},
                                  optional={"comment": st.one_of(web_text, st.sampled_from(HOSTILE)),
                                            "segment": st.dictionaries(line_text, line_text, max_size=3)})


def nested(depth: int) -> str:
    return '{"response_id": "deep", "score": 1, "x": ' + "[" * depth + "]" * depth + "}"


def as_line(value) -> str:
    return json.dumps(value, ensure_ascii=False).replace("\u2028", "\\u2028")


lines = st.one_of(
    objects.map(as_line), plausible.map(as_line), plausible.map(lambda o: json.dumps(o)),  # ASCII escapes
    values.map(as_line),  # any JSON: arrays, strings, numbers
    plausible.map(as_line).flatmap(lambda t: st.integers(0, max(0, len(t) - 1)).map(lambda n: t[:n])),  # cut
    st.sampled_from(['{"comment": "\\ud800", "score": 1}', '{"\\udfff": 1}', '{"score": ' + "9" * 5000 + "}",
                     nested(MAX_JSON_DEPTH + 5), nested(100_000), nested(MAX_JSON_DEPTH - 1), "[" * 50_000,
                     "{}", "[]", "null", '"text"', "NaN", '{"score": NaN}', '{"score": 1e999}', "   ",
                     '{"a": 1} {"b": 2}', "{'single': 'quotes'}"]),
    st.binary(max_size=60).filter(lambda b: b"\n" not in b and b"\r" not in b),
).map(lambda line: line.encode("utf-8", "surrogatepass") if isinstance(line, str) else line)


def line_text_of(line: bytes, starts_file: bool) -> str:
    """A line as the CLI reads it: UTF-8 (U+FFFD for bytes that are not), the file's byte order mark dropped,
    whitespace around it dropped."""
    text = line.decode("utf-8", "replace")
    if starts_file and text.startswith("\ufeff"):
        text = text[1:]
    return text.strip()


def expected_kept(line: bytes, starts_file: bool) -> dict | None:
    """The oracle: the object this line must be sent as, or None when it must be refused (or is blank)."""
    try:
        obj = json.loads(line_text_of(line, starts_file))
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")  # a lone surrogate anywhere: UTF-8 cannot carry it
    except (UnicodeEncodeError, RecursionError):
        return None
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            stack.extend((c, depth + 1) for c in (item.values() if isinstance(item, dict) else item))
    return obj if deepest <= MAX_JSON_DEPTH else None


@budget(300)
@given(st.lists(lines, min_size=1, max_size=25), st.booleans())
@example([b'{"score": ' + b"9" * 5000 + b"}", b'{"response_id": "r", "score": 3}'], False)  # crashed parse_lines
@example([nested(100_000).encode(), b'{"response_id": "r", "score": 3}'], False)  # RecursionError escaped
@example([b'{"response_id": "bom", "score": 3}'], True)  # line 1 after a byte order mark was invalid_json
def test_every_line_is_sent_or_refused_with_a_reason_and_valid_ones_are_all_sent(lines, bom):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "responses.jsonl"
        path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + b"\n")
        plan = plan_ingest(parse_lines(iter_file(str(path))), CODEC, "file:fuzz", run_id="fuzz")
    expected = {n: expected_kept(line, n == 1 and not bom) for n, line in enumerate(lines, start=1)}
    blank = {n for n, line in enumerate(lines, start=1) if not line_text_of(line, n == 1 and not bom)}
    refused = {b.line_no: b for b in plan.bad}
    assert len(refused) == len(plan.bad) == len(plan.dead_letters)  # one refusal per line, each dead-lettered
    assert all(b.reason and b.detail.startswith(f"line {b.line_no}: ") for b in plan.bad)
    must_send = [n for n, obj in expected.items() if obj is not None]
    assert len(plan.records) + len(plan.bad) == len(lines) - len(blank)
    assert not set(must_send) & set(refused), [(n, refused[n].reason, refused[n].detail) for n in must_send
                                               if n in refused]
    assert len(plan.records) == len(must_send)
    for (key, value), n in zip(plan.records, must_send):  # sent in file order, each the record its line says
        record, obj = CODEC.decode(value, expected=avro.RAW_RESPONSE), expected[n]
        for name in ("response_id", "comment", "responded_at"):
            if isinstance(obj.get(name), str):
                assert record[name] == obj[name]
        if isinstance(obj.get("score"), int) and not isinstance(obj.get("score"), bool) \
                and abs(obj["score"]) < 2 ** 63:
            assert record["score"] == obj["score"]
    for letter in (CODEC.decode(v, expected=avro.DEAD_LETTER) for v in plan.dead_letters):
        assert letter["stage"] == "ingest" and letter["reason"] and letter["payload_json"] is not None
