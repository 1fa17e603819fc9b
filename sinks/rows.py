"""Decoded Avro records → ClickHouse insert rows (one function per table).

Every mapper takes ``(record, partition, offset)`` — the decoded Avro dict and the Kafka coordinates it was
read from — and returns a dict whose keys are exactly the table's columns (``inserted_at`` is left to its
DEFAULT). Only the named columns are copied: any extra field in a record (including personal data such as
an e-mail address or a phone number) never reaches ClickHouse. Optional fields that are None become the
column's neutral value ('' / -1) unless the column is Nullable.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Mapping

from streams.text import mask
from streams.text.lang import parse_locale

_CATEGORIES = ("detractor", "passive", "promoter")


def utc(value: Any) -> datetime:
    """A tz-aware UTC datetime from an aware/naive (assumed UTC) datetime or epoch milliseconds."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000.0, tz=timezone.utc)
    raise ValueError(f"expected a timestamp, got {value!r}")


def _s(value: Any) -> str:
    return "" if value is None else str(value)


def _int(value: Any, missing: int = -1) -> int:
    return missing if value is None else int(value)


def _category(value: Any) -> str:
    name = getattr(value, "value", value)  # accepts streams.nps.Category too
    if name not in _CATEGORIES:
        raise ValueError(f"unknown category {value!r}")
    return name


def response_row(record: Mapping[str, Any], partition: int, offset: int) -> dict:
    """io.npsflow.ClassifiedResponse → ``responses``."""
    segment = record.get("segment") or {}
    previous = record.get("previous_score")
    return {
        "response_id": str(record["response_id"]),
        "survey_id": str(record["survey_id"]),
        "invitation_id": _s(record.get("invitation_id")),
        "score": int(record["score"]),
        "category": _category(record["category"]),
        "comment": _s(record.get("comment")),
        "follow_up": _s(record.get("follow_up")),
        "locale": _s(record.get("locale")),
        "responded_at": utc(record["responded_at"]),
        "received_at": utc(record["received_at"]),
        "processed_at": utc(record["processed_at"]),
        "segment": {str(k): _s(v) for k, v in segment.items()},
        "version": int(record["version"]),
        "is_edit": 1 if record.get("is_edit") else 0,
        "previous_score": None if previous is None else int(previous),
        "earlier_days": sorted(set(record.get("earlier_days") or ())),
        "org_id": _s(record.get("org_id")),
        "source": _s(record.get("source")),
        "lang": _s(record.get("lang")),
        "terms": [str(t) for t in record.get("terms") or ()],
        "respondent": _s(record.get("respondent")),
        "kafka_partition": int(partition),
        "kafka_offset": int(offset),
    }


def window_update_row(record: Mapping[str, Any], partition: int | None = None, offset: int | None = None) -> dict:
    """io.npsflow.WindowUpdate → ``window_updates`` (Kafka coordinates are not stored)."""
    nps = record.get("nps")
    return {
        "dimension": str(record["dimension"]),
        "segment_value": _s(record.get("segment_value")),
        "window": str(record["window"]),
        "window_seconds": int(record["window_seconds"]),
        "window_start": utc(record["window_start"]),
        "window_end": utc(record["window_end"]),
        "promoters": int(record["promoters"]),
        "passives": int(record["passives"]),
        "detractors": int(record["detractors"]),
        "responses": int(record["responses"]),
        "nps": None if nps is None else float(nps),
        "ci_low": float(record["ci_low"]),
        "ci_high": float(record["ci_high"]),
        "band": _s(record.get("band")),
        "seq": int(record["seq"]),
        "updated_at": utc(record["updated_at"]),
    }


def dead_letter_row(record: Mapping[str, Any], partition: int | None = None, offset: int | None = None) -> dict:
    """io.npsflow.DeadLetter → ``dead_letters``. Missing source coordinates are -1, missing strings ''."""
    return {
        "dead_letter_id": str(record["dead_letter_id"]),
        "stage": str(record["stage"]),
        "reason": str(record["reason"]),
        "detail": mask(_s(record.get("detail")))[0],  # a reason's detail may quote the refused value
        "source_topic": _s(record.get("source_topic")),
        "source_partition": _int(record.get("source_partition")),
        "source_offset": _int(record.get("source_offset")),
        "key": _s(record.get("key")),
        "payload_json": masked_payload(_s(record.get("payload_json"))),
        "failed_at": utc(record["failed_at"]),
    }


def masked_payload(text: str) -> str:
    """A dead letter's payload as ClickHouse keeps it: personal data in its texts masked (streams.text.mask, the
    region from the payload's ``locale``), like the comments of answers. The Kafka dead-letter topic keeps the
    original for inspection and replay; base64 payloads (undecodable bytes) are kept as they are."""
    if not text or text.startswith("base64:"):
        return text
    try:
        payload = json.loads(text)
    except ValueError:  # truncated or not JSON: mask the text itself
        return mask(text)[0]
    locale = payload.get("locale") if isinstance(payload, dict) else None
    region = parse_locale(locale if isinstance(locale, str) else None)[1]
    return json.dumps(_masked(payload, region), ensure_ascii=False)


def _masked(value: Any, region: str | None) -> Any:
    if isinstance(value, str):
        return mask(value, region)[0]
    if isinstance(value, dict):
        return {k: _masked(v, region) for k, v in value.items()}
    if isinstance(value, list):
        return [_masked(v, region) for v in value]
    return value


_ALERT_KINDS = ("drop", "rise", "shift")
_ALERT_EVENTS = {"opened": 0, "closed": 1}  # the later event of an alert wins (ReplacingMergeTree(event_rank))


def alert_row(record: Mapping[str, Any], partition: int | None = None, offset: int | None = None) -> dict:
    """io.npsflow.Alert v2 → ``alerts`` (migration 0008): one row per event; an unknown kind or event (v1's
    kinds were never produced) is a ValueError (the sink dead-letters the record)."""

    def _f(value: Any) -> float | None:
        return None if value is None else float(value)

    kind, event = str(record["kind"]), str(record.get("event") or "opened")
    if kind not in _ALERT_KINDS or event not in _ALERT_EVENTS:
        raise ValueError(f"not an alert event of v2: kind {kind!r}, event {event!r}")
    row = {
        "alert_id": str(record["alert_id"]), "kind": kind, "event": event, "event_rank": _ALERT_EVENTS[event],
        "status": _s(record.get("status") or ("closed" if event == "closed" else "open")),
        "direction": _s(record.get("direction")),
        "dimension": _s(record.get("dimension")), "segment_value": _s(record.get("segment_value")),
        "z": _f(record.get("z")), "p_value": _f(record.get("p_value")), "cusum": _f(record.get("cusum")),
        "opened_at": utc(record.get("opened_at") or record["created_at"]),
        "closed_at": None if record.get("closed_at") is None else utc(record["closed_at"]),
        "detail": _s(record.get("detail")), "created_at": utc(record["created_at"]),
    }
    for side in ("baseline", "current"):
        figures = record.get(side) or {}
        row[f"{side}_nps"] = _f(figures.get("nps"))
        row[f"{side}_responses"] = int(figures.get("responses") or 0)
        row[f"{side}_ci_low"] = _f(figures.get("ci_low"))
        row[f"{side}_ci_high"] = _f(figures.get("ci_high"))
    return row


_STATUSES = ("sent", "scheduled", "suppressed", "failed")
DISPATCH_KINDS = ("invitation", "reminder", "thank_you", "review_request", "reward")  # the last three: streams.promoter
_MAX_ATTEMPTS = 65535  # attempts is Nullable(UInt16)


def case_row(record: Mapping[str, Any], partition: int, offset: int) -> dict:
    """io.npsflow.Case → ``cases``: the owners' notes masked (their words may name the respondent: a phone
    number, an address); the answers as a count, the change log as JSON (``history``)."""
    notes = [{"at": utc(n["at"]).isoformat(), "actor": str(n["actor"]), "text": mask(str(n["text"]), None)[0]}
             for n in record.get("notes") or ()]
    history = [{"rev": int(e["rev"]), "at": utc(e["at"]).isoformat(), "kind": str(e["kind"]),
                "actor": e.get("actor")} for e in record.get("log") or ()]
    score = int(record["score"])
    if not 0 <= score <= 10:
        raise ValueError(f"case score {score} outside 0..10")

    def _t(name: str):
        value = record.get(name)
        return None if value is None else utc(value)

    return {
        "case_id": str(record["case_id"]), "org_id": _s(record.get("org_id")), "route": _s(record.get("route")),
        "response_id": str(record["response_id"]), "owner": str(record["owner"]), "score": score,
        "category": str(record["category"]), "comment": _s(record.get("comment")),
        "segment": {str(k): _s(v) for k, v in (record.get("segment") or {}).items()},
        "answers": len(record.get("answers") or ()), "opened_at": utc(record["opened_at"]),
        "due_at": utc(record["due_at"]), "status": str(record["status"]), "close_reason": _s(record.get("close_reason")),
        "first_contact_at": _t("first_contact_at"), "closed_at": _t("closed_at"), "escalated_at": _t("escalated_at"),
        "escalated_to": _s(record.get("escalated_to")), "notes": json.dumps(notes, ensure_ascii=False),
        "command_ids": [str(c) for c in record.get("command_ids") or ()],
        "history": json.dumps(history, ensure_ascii=False), "rev": int(record["rev"]),
        "updated_at": utc(record["updated_at"]), "kafka_partition": int(partition), "kafka_offset": int(offset),
    }


def dispatch_row(record: Mapping[str, Any], partition: int, offset: int) -> dict:
    """io.npsflow.DispatchedMessage → ``dispatches`` (contact_key is already a pseudonym).

    ``kind`` is "invitation" when absent (a v1 record decodes with that default anyway); an unknown kind or
    status, or attempts outside 0..65535, is a ValueError (the sink dead-letters the record).
    """
    status = getattr(record["status"], "value", record["status"])
    if status not in _STATUSES:
        raise ValueError(f"unknown dispatch status {status!r}")
    kind = record.get("kind") or "invitation"
    if kind not in DISPATCH_KINDS:
        raise ValueError(f"unknown dispatch kind {kind!r}")
    attempts = record.get("attempts")
    if attempts is not None:
        attempts = int(attempts)
        if not 0 <= attempts <= _MAX_ATTEMPTS:
            raise ValueError(f"dispatch attempts {attempts} outside 0..{_MAX_ATTEMPTS}")
    scheduled = record.get("scheduled_for")
    cost = record.get("cost")
    return {
        "dispatch_id": str(record["dispatch_id"]),
        "kind": kind,
        "invitation_id": _s(record.get("invitation_id")),
        "event_id": str(record["event_id"]),
        "org_id": str(record["org_id"]),
        "survey_id": _s(record.get("survey_id")),
        "contact_key": str(record["contact_key"]),
        "channel": _s(record.get("channel")),
        "attempts": attempts,
        "provider_id": _s(record.get("provider_id")),
        "status": status,
        "reason": _s(record.get("reason")),
        "scheduled_for": None if scheduled is None else utc(scheduled),
        "decided_at": utc(record["decided_at"]),
        "cost": None if cost is None else float(cost),
        "currency": _s(record.get("currency")),
        "locale": _s(record.get("locale")),
        "segment": {str(k): _s(v) for k, v in (record.get("segment") or {}).items()},
        "kafka_partition": int(partition),
        "kafka_offset": int(offset),
    }


MAPPERS = {
    "responses": response_row,
    "window_updates": window_update_row,
    "dead_letters": dead_letter_row,
    "alerts": alert_row,
    "cases": case_row,
    "dispatches": dispatch_row,
}
