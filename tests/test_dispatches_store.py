"""The dispatches table and `sinks.queries.dispatches` on the real engine (chDB)."""

from datetime import datetime, timedelta, timezone

from schemas import codec as avro
from sinks import queries
from sinks.clickhouse import migrate
from sinks.rows import dispatch_row

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def record(i, status, reason=None, channel="sms", cost=None, at=T0, **extra):
    return {"dispatch_id": f"d-{i}", "invitation_id": f"inv-{i}" if status != "suppressed" else None,
            "event_id": f"ev-{i}", "org_id": "acme", "survey_id": "s-1", "contact_key": f"ck{i:030d}",
            "channel": channel, "status": status, "reason": reason,
            "scheduled_for": at + timedelta(hours=12) if status == "scheduled" else None,
            "decided_at": at, "cost": cost, "currency": "EUR" if cost is not None else None, "locale": "sv",
            "segment": {"location": "Malmö"}, **extra}


def insert(store, records):
    codec = avro.AvroCodec()
    rows = [dispatch_row(codec.decode(codec.encode(avro.DISPATCHED_MESSAGE, r)), 0, i) for i, r in enumerate(records)]
    store.insert("dispatches", rows)


def test_migration_creates_dispatches_and_is_idempotent(ch_store):
    assert migrate(ch_store) == []  # the fixture migrated already, 0002 included
    names = {r["name"] for r in ch_store.query("SELECT name FROM system.tables WHERE database = {d:String}",
                                               {"d": ch_store.database})}
    assert "dispatches" in names


def test_counts_by_status_reason_channel_and_cost_latest_decision_wins(ch_store):
    insert(ch_store, [
        record(1, "sent", cost=0.15),
        record(2, "sent", channel="email", cost=0.001),
        record(3, "suppressed", reason="quarantine", channel=None),
        record(4, "suppressed", reason="quarantine", channel=None),
        record(5, "suppressed", reason="sampled_out", channel=None),
        record(6, "scheduled", reason="quiet_hours"),
        record(7, "failed", reason="gateway_4xx"),
        # d-6 is later sent: only its latest decision counts; d-1 delivered twice (at-least-once)
        record(6, "sent", cost=0.15, at=T0 + timedelta(hours=12)),
        record(1, "sent", cost=0.15),
    ])
    got = queries.dispatches(ch_store)
    assert got["total"] == 7
    assert got["by_status"] == {"failed": 1, "sent": 3, "suppressed": 3}
    assert got["reasons"] == [{"status": "failed", "reason": "gateway_4xx", "count": 1},
                              {"status": "suppressed", "reason": "quarantine", "count": 2},
                              {"status": "suppressed", "reason": "sampled_out", "count": 1}]
    assert got["by_channel"] == {"email": 1, "sms": 3}
    assert got["cost"] == {"EUR": 0.301}


def test_no_personal_data_columns():
    row = dispatch_row(record(1, "sent", cost=0.15, email="anna@example.se", phone="+46701234567"), 0, 0)
    assert "email" not in row and "phone" not in row
    assert "@" not in str(row) and "+4670" not in str(row)
