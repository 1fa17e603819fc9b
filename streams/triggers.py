"""Trigger events (a purchase, a finished service job …): validation into an Avro TriggerEvent. Pure.

A trigger line looks like::

    {"event_id": "ev-1", "org_id": "acme", "event_type": "job.completed",
     "occurred_at": "2026-11-20T10:00:00Z",
     "contact": {"contact_id": "c-17", "email": "a@example.com", "phone": "+46701234567",
                 "locale": "sv", "timezone": "Europe/Stockholm"},
     "segment": {"location": "Espoo", "employee": "e-17", "channel": "store", "campaign": "winter"}}

Segment attributes may also stand at the top level (``location``, ``employee``, ``channel``, ``product``,
``campaign`` or any other key with a scalar value): they are merged into ``segment``. The e-mail address and
phone number are personal data: they travel only to the dispatcher, never into analytics tables.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from streams.responses import MAX_FUTURE, MAX_ID_CHARS, Rejected, parse_segment, parse_timestamp

ORG_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", re.ASCII)
EVENT_TYPE = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$", re.ASCII)
E164 = re.compile(r"^\+[1-9]\d{6,14}$", re.ASCII)
EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{2,63}$")
KNOWN_TOP_LEVEL = {"event_id", "org_id", "event_type", "occurred_at", "contact", "segment"}
CONTACT_FIELDS = {"contact_id", "email", "phone", "locale", "timezone"}


def _required_text(obj: dict, name: str, where: str = "") -> str:
    value = obj.get(name)
    label = f"{where}{name}"
    if value is None or (isinstance(value, str) and not value.strip()):
        raise Rejected(f"missing_{label.replace('.', '_')}", f"{label} is required")
    if not isinstance(value, str):
        raise Rejected(f"{label.replace('.', '_')}_not_string", f"{label} must be a string")
    if len(value) > MAX_ID_CHARS:
        raise Rejected(f"{label.replace('.', '_')}_too_long", f"{label} is longer than {MAX_ID_CHARS} characters")
    return value.strip()


def _optional_text(obj: dict, name: str) -> str | None:
    value = obj.get(name)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise Rejected(f"contact_{name}_invalid", f"contact.{name} must be a string")
    return value.strip()


def parse_contact(value: object) -> dict:
    if not isinstance(value, dict):
        raise Rejected("missing_contact", "contact must be an object with at least contact_id")
    unknown = set(value) - CONTACT_FIELDS
    if unknown:
        raise Rejected("contact_invalid", f"unknown contact field(s): {', '.join(sorted(unknown))[:100]}")
    contact_id = _required_text(value, "contact_id", "contact.")
    email = _optional_text(value, "email")
    if email is not None and not EMAIL.match(email):
        raise Rejected("contact_email_invalid", "contact.email is not an e-mail address")
    phone = _optional_text(value, "phone")
    if phone is not None:
        phone = re.sub(r"[\s()-]", "", phone)
        if not E164.match(phone):
            raise Rejected("contact_phone_invalid", "contact.phone must be in E.164 form, e.g. +46701234567")
    locale = _optional_text(value, "locale")
    if locale is not None and len(locale) > 35:
        raise Rejected("contact_locale_invalid", "contact.locale is longer than 35 characters")
    tz = _optional_text(value, "timezone")
    if tz is not None:
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise Rejected("contact_timezone_invalid", f"contact.timezone is not an IANA zone: {tz[:40]!r}") from None
    return {"contact_id": contact_id, "email": email, "phone": phone, "locale": locale, "timezone": tz}


def validate_trigger(obj: dict, now: datetime, max_future: timedelta = MAX_FUTURE) -> dict:
    """A JSON object → an Avro TriggerEvent dict, or ``Rejected(reason, detail)``."""
    event_id = _required_text(obj, "event_id")
    org_id = _required_text(obj, "org_id")
    if not ORG_ID.match(org_id):  # it reaches SQL (Grafana's org variable) and file names: a safe alphabet
        raise Rejected("org_id_invalid", "org_id must be 1-128 of A-Z a-z 0-9 . _ : - (starting with a letter or digit)")
    event_type = _required_text(obj, "event_type")
    if not EVENT_TYPE.match(event_type):
        raise Rejected("event_type_invalid", f"event_type must look like job.completed, got {event_type[:40]!r}")
    occurred_at = parse_timestamp(obj.get("occurred_at"), "occurred_at")
    if occurred_at > now + max_future:
        raise Rejected("occurred_at_in_future", f"occurred_at {occurred_at.isoformat()} is in the future")
    contact = parse_contact(obj.get("contact"))
    attributes = {k: v for k, v in obj.items() if k not in KNOWN_TOP_LEVEL}
    nested = {k: v for k, v in attributes.items() if isinstance(v, (dict, list))}
    if nested:
        raise Rejected("segment_invalid", f"top-level attribute {sorted(nested)[0]!r} must be a scalar")
    segment = parse_segment({**(obj.get("segment") or {}), **attributes}
                            if isinstance(obj.get("segment") or {}, dict) else obj.get("segment"))
    for key, value in segment.items():  # segments reach the analytics tables: no contact data there
        if _CONTACT_KEYS.match(key) or EMAIL.match(value) or E164.match(re.sub(r"[\s()-]", "", value)):
            raise Rejected("segment_personal_data", f"segment {key!r} looks like contact data (an e-mail address "
                                                    "or phone number): it belongs in contact, not in the segment")
    return {
        "event_id": event_id,
        "org_id": org_id,
        "event_type": event_type,
        "occurred_at": occurred_at,
        "contact": contact,
        "segment": segment,
        "received_at": now,
    }


# ---------------------------------------------------------------------------------------------------------
# Personal data out of dead letters

REDACTED = "[redacted]"
_CONTACT_KEYS = re.compile(r"^(e-?mail|phone|mobile|msisdn|tel|email_address|phone_number)$", re.IGNORECASE)
_PERSONAL_KEYS = re.compile(r"e-?mail|phone|mobile|msisdn|^tel$|^to$", re.IGNORECASE)
_EMAIL_IN_TEXT = re.compile(r"[^\s@\"'<>(),;:]+@[^\s@\"'<>(),;:]+\.[A-Za-z]{2,}")
_PHONE_IN_TEXT = re.compile(r"\+\d[\d\s().-]{5,}\d")


def redact(value):
    """A copy of a trigger (or an invite command, or a line of text) fit for a dead letter: values under
    address-like keys (email, phone, mobile, to …) and anything that looks like an e-mail address or an
    international phone number are replaced by ``[redacted]``. The original stays in its source topic."""
    if isinstance(value, dict):
        return {k: (REDACTED if isinstance(k, str) and _PERSONAL_KEYS.search(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _PHONE_IN_TEXT.sub(REDACTED, _EMAIL_IN_TEXT.sub(REDACTED, value))
    return value


def revalidate(record: dict, now: datetime, max_future: timedelta = MAX_FUTURE) -> dict:
    """The same rules as ``validate_trigger`` for a decoded Avro TriggerEvent (a producer other than the CLI
    may have written it): the validated record, or ``Rejected``."""
    occurred = record.get("occurred_at")
    obj = {"event_id": record.get("event_id"), "org_id": record.get("org_id"), "event_type": record.get("event_type"),
           "occurred_at": occurred.isoformat() if isinstance(occurred, datetime) else occurred,
           "contact": {k: v for k, v in (record.get("contact") or {}).items() if v is not None},
           "segment": record.get("segment") or {}}
    out = validate_trigger(obj, now, max_future)
    out["received_at"] = record.get("received_at") or now
    return out


def trigger_key(org_id: str, contact_id: str) -> bytes:
    """The Kafka key of a trigger: ``<org_id>|<contact_id>`` (an org id has no ``|``). Every trigger of one contact
    meets on one partition, where its quarantine and the event-id memory live; one organization's triggers spread
    over all partitions (the daily cap is counted by a stage of its own, streams.dispatch_steps.CapStep)."""
    return f"{org_id}|{contact_id}".encode("utf-8", "surrogatepass")
