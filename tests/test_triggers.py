"""Trigger events: validation (pure) and `npsflow ingest triggers` on the real broker."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from schemas import codec as avro
from streams.responses import Rejected
from streams.triggers import validate_trigger

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=timezone.utc)


def trigger(**changes):
    base = {"event_id": "ev-1", "org_id": "acme", "event_type": "job.completed",
            "occurred_at": "2026-11-21T10:00:00+02:00",
            "contact": {"contact_id": "c-17", "email": "anna@example.se", "phone": "+46 70 123 45 67",
                        "locale": "sv", "timezone": "Europe/Stockholm"},
            "segment": {"location": "Malmö", "employee": "e-3"}}
    base.update(changes)
    return base


def test_valid_trigger_becomes_an_avro_trigger_event():
    record = validate_trigger(trigger(campaign="winter", product="service"), NOW)
    assert record["occurred_at"] == datetime(2026, 11, 21, 8, 0, tzinfo=timezone.utc)
    assert record["contact"] == {"contact_id": "c-17", "email": "anna@example.se", "phone": "+46701234567",
                                 "locale": "sv", "timezone": "Europe/Stockholm"}
    assert record["segment"] == {"location": "Malmö", "employee": "e-3", "campaign": "winter", "product": "service"}
    codec = avro.AvroCodec()
    assert codec.decode(codec.encode(avro.TRIGGER_EVENT, record))["event_id"] == "ev-1"


def test_contact_without_email_or_phone_is_valid_here():
    """Whether it can be reached is a contact rule (no_contact), decided by dispatch, not bad input."""
    record = validate_trigger(trigger(contact={"contact_id": "c-1"}), NOW)
    assert record["contact"]["email"] is None and record["contact"]["phone"] is None


@pytest.mark.parametrize("changes,reason", [
    ({"event_id": None}, "missing_event_id"),
    ({"event_id": 17}, "event_id_not_string"),
    ({"org_id": ""}, "missing_org_id"),
    ({"event_type": None}, "missing_event_type"),
    ({"event_type": "Job Completed!"}, "event_type_invalid"),
    ({"occurred_at": None}, "missing_occurred_at"),
    ({"occurred_at": "2026-11-21 10:00"}, "occurred_at_invalid"),
    ({"occurred_at": "2026-11-22T10:00:00Z"}, "occurred_at_in_future"),
    ({"contact": None}, "missing_contact"),
    ({"contact": {"email": "a@b.se"}}, "missing_contact_contact_id"),
    ({"contact": {"contact_id": "c", "email": "not-an-address"}}, "contact_email_invalid"),
    ({"contact": {"contact_id": "c", "phone": "0701234567"}}, "contact_phone_invalid"),
    ({"contact": {"contact_id": "c", "timezone": "Mars/Olympus"}}, "contact_timezone_invalid"),
    ({"contact": {"contact_id": "c", "ssn": "19800101-1234"}}, "contact_invalid"),
    ({"segment": {"bad key!": "x"}}, "segment_invalid"),
    ({"extra": {"nested": 1}}, "segment_invalid"),
])
def test_malformed_triggers_are_refused_with_a_reason(changes, reason):
    with pytest.raises(Rejected) as err:
        validate_trigger(trigger(**changes), NOW)
    assert err.value.reason == reason and err.value.detail


@pytest.mark.kafka
def test_ingest_triggers_sends_valid_and_dead_letters_malformed(tmp_path, kafka_bootstrap):
    from tests.e2e_helpers import make_env, read_topic, write_jsonl

    env = make_env(tmp_path, kafka_bootstrap)
    from npsflow.stack import ensure_topics

    ensure_topics(env.settings, kafka_bootstrap)
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    good = [trigger(event_id=f"ev-{i}", occurred_at=now.isoformat()) for i in range(3)]
    bad = trigger(event_id="ev-bad", occurred_at="yesterday")
    path = write_jsonl(tmp_path / "t.jsonl", [*good, bad, "[1]"])
    proc = env.cli("ingest", "triggers", str(path), check=False)
    assert proc.returncode == 1, proc.stderr
    assert "sent 3 trigger events" in proc.stdout
    assert "line 4: occurred_at is not an ISO-8601 timestamp" in proc.stderr
    assert "line 5: expected a JSON object" in proc.stderr

    codec = avro.AvroCodec()
    sent = read_topic(kafka_bootstrap, env.settings.topics.triggers, 3)
    assert [m.key.decode() for m in sent] == ["acme|c-17"] * 3  # keyed by organization and contact
    assert {codec.decode(m.value)["contact"]["contact_id"] for m in sent} == {"c-17"}
    dead = [codec.decode(m.value) for m in read_topic(kafka_bootstrap, env.settings.topics.dead_letters, 2)]
    assert sorted(d["reason"] for d in dead) == ["not_a_json_object", "occurred_at_invalid"]
    assert json.loads(next(d for d in dead if d["reason"] == "occurred_at_invalid")["payload_json"])["event_id"] == "ev-bad"


@pytest.mark.parametrize("org", ["acme\\\\", "a'b", "acme corp", "-lead", "x" * 129])
def test_org_ids_are_limited_to_a_safe_alphabet(org):
    """org_id reaches SQL (Grafana's org variable) and file names."""
    from datetime import datetime, timezone

    from streams.responses import Rejected
    from streams.triggers import validate_trigger

    now = datetime(2026, 11, 20, tzinfo=timezone.utc)
    obj = {"event_id": "e", "org_id": org, "event_type": "job.completed", "occurred_at": "2026-11-20T00:00:00Z",
           "contact": {"contact_id": "c"}}
    with pytest.raises(Rejected) as info:
        validate_trigger(obj, now)
    assert info.value.reason in ("org_id_invalid", "org_id_too_long")
    assert validate_trigger({**obj, "org_id": "nordvik-ror.se:1"}, now)["org_id"] == "nordvik-ror.se:1"
