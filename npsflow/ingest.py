"""JSON Lines → raw responses topic.

The CLI does not validate scores or dates: it carries every JSON object into the Avro RawResponse as
faithfully as the schema allows (fields of the wrong type travel in ``unknown_json``) and lets the classify
agent decide, so there is exactly one validation rule set. Lines that are not JSON objects never reach the
agent: they are dead-lettered here (stage ``ingest``) and reported with their line numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Iterable, Iterator

TEXT_FIELDS = ("response_id", "survey_id", "invitation_id", "comment", "responded_at", "locale")
LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1


@dataclass
class BadLine:
    line_no: int
    reason: str
    detail: str
    text: str


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
            out.bad.append(BadLine(line_no, "invalid_json", f"line {line_no}: not valid JSON ({exc.msg})", stripped))
            continue
        if not isinstance(obj, dict):
            out.bad.append(BadLine(line_no, "not_a_json_object",
                                   f"line {line_no}: expected a JSON object, got {type(obj).__name__}", stripped))
            continue
        out.records.append((line_no, obj))
    return out


def iter_file(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as handle:
        yield from handle
