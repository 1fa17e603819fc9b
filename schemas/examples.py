"""One valid example record per subject (current schema versions), for tests and demos.

Timestamps are timezone-aware UTC datetimes, i.e. exactly what
``AvroCodec.decode`` returns, so ``decode(encode(x)) == x`` for these examples.
"""
from __future__ import annotations

from datetime import datetime, timezone

from . import codec as _c

_T0 = datetime(2024, 5, 1, 12, 0, 0, 123000, tzinfo=timezone.utc)
_T1 = datetime(2024, 5, 1, 12, 0, 5, tzinfo=timezone.utc)
_SEG = {"location": "paris", "channel": "email", "product": "premium", "campaign": "spring", "employee": "e-17"}


def examples() -> dict[str, dict]:
    """{subject: example record}; a fresh copy on every call (safe to mutate)."""
    return {
        _c.TRIGGER_EVENT: {
            "event_id": "evt-1", "org_id": "acme", "event_type": "purchase", "occurred_at": _T0,
            "contact": {"contact_id": "c-42", "email": "ada@example.com", "phone": "+33600000000",
                        "locale": "fr-FR", "timezone": "Europe/Paris"},
            "segment": dict(_SEG), "received_at": _T1,
        },
        _c.DISPATCHED_MESSAGE: {
            "dispatch_id": "d-1", "invitation_id": "inv-1", "event_id": "evt-1", "org_id": "acme",
            "survey_id": "s-1", "contact_key": "hmac:3f2a9c", "channel": "email", "status": "sent",
            "reason": None, "scheduled_for": None, "decided_at": _T1, "cost": 0.0012,
            "currency": "EUR", "locale": "fr-FR", "segment": dict(_SEG), "kind": "invitation",
            "attempts": 1, "provider_id": "<inv-1@mail.acme.example>",
        },
        _c.RAW_RESPONSE: {
            "response_id": "r-1", "survey_id": "s-1", "invitation_id": "inv-1", "score": 9,
            "comment": "Great service", "follow_up": "The friendly technician",
            "responded_at": "2024-05-01T12:00:00Z", "locale": "fr-FR",
            "segment": dict(_SEG), "unknown_json": None, "source": "cli", "received_at": _T1,
        },
        _c.CLASSIFIED_RESPONSE: {
            "response_id": "r-1", "survey_id": "s-1", "invitation_id": "inv-1", "score": 9,
            "category": "promoter", "comment": "Great service", "follow_up": "The friendly technician",
            "locale": "fr-FR",
            "responded_at": _T0, "received_at": _T1, "processed_at": _T1, "segment": dict(_SEG),
            "version": 1, "is_edit": False, "previous_score": None, "earlier_days": [], "source": "cli",
            "org_id": "acme", "lang": "en", "terms": ["great", "service", "friendly", "technician"],
            "respondent": "ck-1",
        },
        _c.WINDOW_UPDATE: {
            "dimension": "location", "segment_value": "paris", "window": "24h", "window_seconds": 86400,
            "window_start": datetime(2024, 4, 30, 12, 0, tzinfo=timezone.utc), "window_end": _T0.replace(microsecond=0),
            "promoters": 6, "passives": 2, "detractors": 2, "responses": 10, "nps": 40.0,
            "ci_low": 1.5, "ci_high": 78.5, "band": "good", "seq": 12, "updated_at": _T1,
        },
        _c.ALERT: {
            "alert_id": "3f2a9c1d0b7e4a55", "kind": "drop", "event": "opened", "status": "open", "direction": "down",
            "dimension": "location", "segment_value": "paris",
            "baseline": {"nps": 35.2, "responses": 840, "ci_low": 29.9, "ci_high": 40.4},
            "current": {"nps": -12.5, "responses": 40, "ci_low": -39.0, "ci_high": 15.1},
            "z": -3.412, "p_value": 0.000645, "cusum": 12.5, "opened_at": _T1.replace(minute=0, second=0, microsecond=0),
            "closed_at": None, "detail": "NPS drop in location=paris: -12.5 (n=40) vs 35.2 (n=840)",
            "created_at": _T1.replace(minute=0, second=0, microsecond=0),
        },
        _c.CASE: {
            "case_id": "case-0123456789abcdef", "org_id": "acme", "route": "acme|ck-1", "response_id": "r-2",
            "owner": "paris-manager", "score": 3, "category": "detractor", "comment": "Slow delivery",
            "segment": dict(_SEG),
            "answers": [{"response_id": "r-2", "version": 1, "score": 3, "category": "detractor",
                         "comment": "Slow delivery", "responded_at": _T0}],
            "opened_at": _T1, "due_at": datetime(2024, 5, 3, 12, 0, 5, tzinfo=timezone.utc), "status": "open",
            "close_reason": None, "first_contact_at": _T1, "closed_at": None, "escalated_at": None,
            "escalated_to": None, "notes": [{"at": _T1, "actor": "anna", "text": "Called, left a message"}],
            "command_ids": ["cmd-1"], "log": [{"rev": 1, "at": _T1, "kind": "opened", "actor": None},
                                              {"rev": 2, "at": _T1, "kind": "ack", "actor": "anna"}],
            "rev": 2, "updated_at": _T1,
        },
        _c.DEAD_LETTER: {
            "dead_letter_id": "dl-1", "stage": "classify", "reason": "score_not_integer",
            "detail": "score '7.5' is not an integer", "source_topic": "npsflow.responses.raw",
            "source_partition": 0, "source_offset": 41, "key": "r-3",
            "payload_json": '{"response_id": "r-3", "score": 7.5}', "failed_at": _T1,
        },
    }
