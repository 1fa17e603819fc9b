"""JSON Lines → raw responses topic.

The CLI does not validate scores or dates: it carries every JSON object into the Avro RawResponse as
faithfully as the schema allows (fields of the wrong type travel in ``unknown_json``) and lets the classify
agent decide, so there is exactly one validation rule set. Lines that are not JSON objects never reach the
agent: they are dead-lettered here (stage ``ingest``) and reported with their line numbers; so are JSON
objects that cannot be Avro-encoded (e.g. a string with a lone surrogate "\\ud800", which ``json.loads``
accepts but UTF-8 cannot carry: reason ``avro_encode_error``). The rest of the file is still sent.

Records are keyed by the *stripped* ``response_id`` (the classify agent strips it too), so every version of
an answer lands on one partition. Dead letter ids carry a per-run id: two runs over stdin (or two files with
the same name) must not collapse into one row of the ``dead_letters`` ReplacingMergeTree.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Iterable, Iterator

TEXT_FIELDS = ("response_id", "survey_id", "invitation_id", "comment", "follow_up", "responded_at", "locale")
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
MAX_JSON_DEPTH = 32  # arrays and objects within a record; a response needs 2 (its segment). Deeper: refused,
# before json.dumps (unknown_json, dead letters) could run out of stack on it
TOO_DEEP = "too_deeply_nested"


def json_depth(value: object) -> int:
    """How deeply arrays and objects nest in a parsed JSON value (a scalar: 0), without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:  # enough to refuse it: no need to walk the rest
                return depth
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


@dataclass
class BadLine:
    line_no: int
    reason: str
    detail: str
    text: str
    payload: object = None  # the parsed object when the line was JSON but refused


@dataclass
class ParsedFile:
    records: list[tuple[int, dict]] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def to_raw_response(obj: dict, source: str = "cli", received_at: datetime | None = None) -> dict:
    """A JSON object → an Avro RawResponse dict. Never raises: misfits go to ``unknown_json``."""
    unknown: dict = {}
    record: dict = {name: None for name in TEXT_FIELDS}
    for name in TEXT_FIELDS:
        if name in obj:
            value = obj[name]
            if value is None or isinstance(value, str):
                record[name] = value
            else:
                unknown[name] = value
    score = obj.get("score")
    if score is None or isinstance(score, str):
        record["score"] = score
    elif isinstance(score, int) and not isinstance(score, bool) and LONG_MIN <= score <= LONG_MAX:
        record["score"] = score
    else:
        record["score"] = json.dumps(score)
    segment = obj.get("segment")
    record["segment"] = {}
    if isinstance(segment, dict) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool)
                                         for v in segment.values()):
        record["segment"] = {str(k): str(v) for k, v in segment.items()}
    elif segment is not None:
        unknown["segment"] = segment
    for key, value in obj.items():
        if key not in TEXT_FIELDS and key not in ("score", "segment"):
            unknown[key] = value
    record["unknown_json"] = json.dumps(unknown, ensure_ascii=False, default=str) if unknown else None
    record["source"] = source
    record["received_at"] = received_at or datetime.now(timezone.utc)
    return record


def parse_lines(lines: Iterable[str]) -> ParsedFile:
    out = ParsedFile()
    for line_no, text in enumerate(lines, start=1):
        stripped = text.strip()
        if not stripped:
            continue
        try:
            obj = json.loads(stripped)
        except ValueError as exc:
            why = getattr(exc, "msg", None) or str(exc)[:200]  # (not a JSONDecodeError: e.g. a 5000-digit number)
            out.bad.append(BadLine(line_no, "invalid_json", f"line {line_no}: not valid JSON ({why})", stripped))
            continue
        except RecursionError:  # arrays/objects nested deeper than json.loads recurses
            out.bad.append(BadLine(line_no, TOO_DEEP, f"line {line_no}: nested deeper than {MAX_JSON_DEPTH} levels",
                                   stripped))
            continue
        if not isinstance(obj, dict):
            out.bad.append(BadLine(line_no, "not_a_json_object",
                                   f"line {line_no}: expected a JSON object, got {type(obj).__name__}", stripped))
            continue
        if json_depth(obj) > MAX_JSON_DEPTH:
            out.bad.append(BadLine(line_no, TOO_DEEP, f"line {line_no}: nested deeper than {MAX_JSON_DEPTH} levels",
                                   stripped))
            continue
        out.records.append((line_no, obj))
    return out


@dataclass
class IngestPlan:
    """What ``npsflow ingest responses`` sends: (key, Avro value) records and Avro dead letters."""

    run_id: str
    records: list[tuple[bytes | None, bytes]] = field(default_factory=list)
    dead_letters: list[bytes] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def response_key(record: dict) -> bytes | None:
    """The Kafka key: the stripped invitation_id when there is one (the response then meets its invitation on
    one partition, see streams.classify_agent), else the stripped response_id; None when both are blank."""
    for name in ("invitation_id", "response_id"):
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip().encode("utf-8", "surrogatepass")
    return None


def _one_line(text: str) -> str:
    return " ".join(str(text).encode("utf-8", "backslashreplace").decode("utf-8").split())


def response_converter(received_at: datetime | None = None):
    """JSON object → (key, subject, record) for the raw responses topic; never refuses (the agent validates)."""
    from schemas import codec as avro

    def convert(obj: dict):
        record = to_raw_response(obj, received_at=received_at)
        return response_key(record), avro.RAW_RESPONSE, record

    return convert


def trigger_converter(now: datetime | None = None):
    """JSON object → (key = ``<org_id>|<contact_id>``, subject, record) for the triggers topic; refuses malformed
    triggers with ``Rejected(reason, detail)`` (they become dead letters with that reason). Keyed by (org, contact):
    the dispatch agent decides a contact's triggers on one partition (event ids, quarantine), and one organization
    spreads over every partition (its daily cap is counted by the cap stage)."""
    from schemas import codec as avro
    from streams.triggers import redact, trigger_key, validate_trigger

    def convert(obj: dict):
        record = validate_trigger(obj, now or datetime.now(timezone.utc))
        return trigger_key(record["org_id"], record["contact"]["contact_id"]), avro.TRIGGER_EVENT, record

    convert.redact = redact  # a refused trigger's dead letter carries no e-mail address or phone number
    return convert


def plan_ingest(parsed: ParsedFile, codec, source_name: str, run_id: str | None = None,
                received_at: datetime | None = None, convert=None) -> IngestPlan:
    """Encode every parsed record; lines that fail (not JSON objects, not Avro-encodable) become dead letters.

    ``source_name`` names the input (``file:<path>`` / ``file:-``); dead letter ids are
    ``ingest:<run_id>:<source_name>:<line>`` so they are unique per run.
    """
    from schemas import codec as avro
    from streams.app import dead_letter  # local only because streams.app imports Faust (~0.5 s): no cycle
    from streams.responses import Rejected

    convert = convert or response_converter(received_at)
    redact = getattr(convert, "redact", lambda value: value)
    plan = IngestPlan(run_id or new_run_id())
    bad = [replace(b, text=redact(b.text)) if isinstance(b.text, str) else b for b in parsed.bad]
    for line_no, obj in parsed.records:
        try:
            key, subject, record = convert(obj)
        except Rejected as exc:
            bad.append(BadLine(line_no, exc.reason, f"line {line_no}: {exc.detail}",
                               json.dumps(redact(obj), ensure_ascii=False, default=str), payload=redact(obj)))
            continue
        try:
            value = codec.encode(subject, record)
        except Exception as exc:  # one bad record must not abort the file
            why = _one_line(getattr(exc, "detail", None) or exc)
            bad.append(BadLine(line_no, "avro_encode_error", f"line {line_no}: cannot be encoded as Avro ({why})",
                               json.dumps(redact(obj), ensure_ascii=True, default=str)))
            continue
        plan.records.append((key, value))
    bad.sort(key=lambda b: b.line_no)
    for item in bad:
        def encoded(payload, item=item) -> bytes:
            dl = dead_letter("ingest", item.reason, _one_line(item.detail), topic=source_name, partition=0,
                             offset=item.line_no, payload=payload)
            dl["dead_letter_id"] = f"ingest:{plan.run_id}:{source_name}:{item.line_no}"
            return codec.encode(avro.DEAD_LETTER, dl)

        try:
            plan.dead_letters.append(encoded(item.payload if item.payload is not None else item.text))
        except Exception:  # the line cannot travel as text: keep its bytes (base64)
            plan.dead_letters.append(encoded(item.text.encode("utf-8", "surrogatepass")))
    plan.bad = bad
    return plan


def iter_file(path: str) -> Iterator[str]:
    """The lines of a UTF-8 file; a byte order mark at its start is not part of line 1 (a file saved by Notepad),
    bytes that are not UTF-8 read as U+FFFD (the line is then refused or carried as it reads)."""
    with open(path, encoding="utf-8-sig", errors="replace") as handle:
        yield from handle
