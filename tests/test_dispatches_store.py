"""The dispatches table and `sinks.queries.dispatches` on the real engine (chDB)."""

import copy
import io
import struct
from datetime import datetime, timedelta, timezone

import fastavro
import pytest
from fastavro.schema import parse_schema

from schemas import catalog
from schemas import codec as avro
from sinks import queries
from sinks.clickhouse import ClickHouseStore, load_migrations, migrate
from sinks.rows import dispatch_row

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=timezone.utc)


def record(i, status, reason=None, channel="sms", cost=None, at=T0, **extra):
    return {"dispatch_id": f"d-{i}", "invitation_id": f"inv-{i}" if status != "suppressed" else None,
            "event_id": f"ev-{i}", "org_id": "acme", "survey_id": "s-1", "contact_key": f"ck{i:030d}",
            "channel": channel, "status": status, "reason": reason,
            "scheduled_for": at + timedelta(hours=12) if status == "scheduled" else None,
            "decided_at": at, "cost": cost, "currency": "EUR" if cost is not None else None, "locale": "sv",
            "segment": {"location": "Malmö"}, **extra}


def insert(store, records, one_by_one=False):
    """Encode with the current schema, decode, map; one_by_one: one insert (one data part) per record."""
    codec = avro.AvroCodec()
    rows = [dispatch_row(codec.decode(codec.encode(avro.DISPATCHED_MESSAGE, r)), 0, i) for i, r in enumerate(records)]
    for batch in ([[row] for row in rows] if one_by_one else [rows]):
        store.insert("dispatches", batch)


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
    assert got["sent_by_channel"] == {"email": 1, "sms": 2}
    assert got["reminders"] == {"total": 0, "by_status": {}, "reasons": []}
    assert got["cost"] == {"EUR": 0.301}


def reminder(i, status, reason=None, channel="sms", cost=None, at=T0 + timedelta(days=3), **extra):
    """The reminder of invitation d-<i>: its own dispatch_id, the invitation's invitation_id."""
    return dict(record(i, status, reason, channel, cost, at, **extra), dispatch_id=f"d-{i}:reminder",
                invitation_id=f"inv-{i}", kind="reminder", scheduled_for=None)


def test_invitations_and_reminders_are_counted_apart_and_cost_covers_both(ch_store):
    # one part per record and no merges: every duplicate and superseded decision stays physically present
    # (one multi-row insert would already be collapsed by the ReplacingMergeTree at insert time)
    ch_store.command(f"SYSTEM STOP MERGES {ch_store.table('dispatches')}")
    later = T0 + timedelta(hours=12)
    insert(ch_store, [
        record(1, "sent", cost=0.15, attempts=1, provider_id="gw-1"),
        record(2, "sent", channel="email", cost=0.001, attempts=2, provider_id="<inv-2@mail.acme.example>"),
        record(3, "suppressed", reason="quarantine", channel=None),
        record(4, "suppressed", reason="quarantine", channel=None),
        record(5, "suppressed", reason="sampled_out", channel=None),
        record(6, "scheduled", reason="quiet_hours"),
        record(6, "sent", cost=0.15, at=later, attempts=1),                    # scheduled, then sent: counts once
        record(7, "failed", reason="gateway_4xx", attempts=1),
        # d-8: its later "failed" arrives BEFORE the earlier "scheduled" — the latest decided_at still wins
        record(8, "failed", reason="smtp_rejected_recipient", channel="email", at=later, attempts=4),
        record(8, "scheduled", reason="quiet_hours", channel="email"),
        record(9, "scheduled", reason="quiet_hours", channel="email", cost=0.001),  # pending: costs nothing yet
        dict(record(10, "sent", cost=0.0075), currency="USD"),
        # reminders: d-1's sent (delivered twice), d-2's cancelled because the contact answered (after first
        # being scheduled), d-6's failed at the gateway
        reminder(1, "sent", cost=0.15, attempts=1),
        reminder(1, "sent", cost=0.15, attempts=1),
        reminder(2, "scheduled", channel="email", at=T0 + timedelta(days=1)),
        reminder(2, "suppressed", reason="responded", channel="email", at=T0 + timedelta(days=2)),
        reminder(6, "failed", reason="gateway_5xx", attempts=4),
    ], one_by_one=True)
    got = queries.dispatches(ch_store)
    assert got == {
        "total": 10,
        "by_status": {"failed": 2, "scheduled": 1, "sent": 4, "suppressed": 3},
        "reasons": [{"status": "failed", "reason": "gateway_4xx", "count": 1},
                    {"status": "failed", "reason": "smtp_rejected_recipient", "count": 1},
                    {"status": "scheduled", "reason": "quiet_hours", "count": 1},
                    {"status": "suppressed", "reason": "quarantine", "count": 2},
                    {"status": "suppressed", "reason": "sampled_out", "count": 1}],
        "by_channel": {"email": 3, "sms": 4},
        "sent_by_channel": {"email": 1, "sms": 3},
        "reminders": {
            "total": 3,
            "by_status": {"failed": 1, "sent": 1, "suppressed": 1},
            "reasons": [{"status": "failed", "reason": "gateway_5xx", "count": 1},
                        {"status": "suppressed", "reason": "responded", "count": 1}],
        },
        "promoter_actions": {},
        # sent invitations d-1, d-2, d-6 (0.15 + 0.001 + 0.15) + sent reminder of d-1 (0.15, counted once)
        "cost": {"EUR": 0.451, "USD": 0.0075},
    }
    # the raw table really holds the duplicates and superseded decisions the query collapsed
    assert ch_store.query("SELECT count() AS n FROM {db}.dispatches")[0]["n"] == 17
    assert ch_store.query("SELECT count() AS n FROM {db}.dispatches FINAL")[0]["n"] == 13  # 10 invitations + 3
    stored = {r["dispatch_id"]: r for r in ch_store.query(
        "SELECT dispatch_id, kind, invitation_id, attempts, provider_id FROM {db}.dispatches "
        "WHERE dispatch_id IN ('d-1', 'd-2', 'd-3', 'd-2:reminder')")}
    assert stored["d-1"] == {"dispatch_id": "d-1", "kind": "invitation", "invitation_id": "inv-1", "attempts": 1,
                             "provider_id": "gw-1"}
    assert stored["d-2"]["provider_id"] == "<inv-2@mail.acme.example>" and stored["d-2"]["attempts"] == 2
    assert (stored["d-3"]["attempts"], stored["d-3"]["provider_id"]) == (None, "")
    assert stored["d-2:reminder"]["kind"] == "reminder" and stored["d-2:reminder"]["invitation_id"] == "inv-2"


def v1_bytes(rec):
    """rec written by a producer that still has DispatchedMessage v1 (no kind/attempts/provider_id)."""
    v1 = next(v for v in catalog.load_versions() if v.subject == avro.DISPATCHED_MESSAGE and v.version == 1)
    buf = io.BytesIO()
    buf.write(b"\x00" + struct.pack(">I", v1.id))
    fastavro.schemaless_writer(buf, parse_schema(copy.deepcopy(v1.schema)), rec)
    return buf.getvalue()


def test_v1_records_land_as_invitations(ch_store):
    codec = avro.AvroCodec(registry_url="")
    old = [record(1, "sent", cost=0.15), record(2, "suppressed", reason="quarantine", channel=None)]
    decoded = [codec.decode(v1_bytes(r), expected=avro.DISPATCHED_MESSAGE) for r in old]
    assert [(d["kind"], d["attempts"], d["provider_id"]) for d in decoded] == [("invitation", None, None)] * 2
    ch_store.insert("dispatches", [dispatch_row(d, 0, i) for i, d in enumerate(decoded)])
    assert ch_store.query("SELECT kind, attempts, provider_id FROM {db}.dispatches ORDER BY dispatch_id") == \
        [{"kind": "invitation", "attempts": None, "provider_id": ""}] * 2
    got = queries.dispatches(ch_store)
    assert (got["total"], got["by_status"], got["reminders"]["total"], got["cost"]) == \
        (2, {"sent": 1, "suppressed": 1}, 0, {"EUR": 0.15})


def test_migration_0003_adds_the_columns_keeps_old_rows_and_is_idempotent(ch_store, ch_dsn, tmp_path):
    mdir = tmp_path / "migrations_v2"
    mdir.mkdir()
    for m in load_migrations():
        if m.version < 3:
            (mdir / m.name).write_text(m.sql)
    with ClickHouseStore(ch_dsn, database="npsflow_v2") as old:
        assert migrate(old, mdir) == ["0001_init.sql", "0002_dispatches.sql"]
        row = dispatch_row(record(1, "sent", cost=0.15), 0, 0)
        old.insert("dispatches", [{k: v for k, v in row.items() if k not in ("kind", "attempts", "provider_id")}])
        assert migrate(old) == ["0003_dispatch_kind.sql", "0004_response_follow_up.sql", "0005_nps_daily_rollup.sql",
                                "0006_terms.sql", "0007_cases.sql", "0008_alerts.sql", "0009_erasures.sql"]
        assert migrate(old) == []
        third = next(m for m in load_migrations() if m.version == 3)
        for _ in range(2):  # the DDL itself is idempotent too (ADD COLUMN IF NOT EXISTS)
            for statement in third.statements(old.database):
                old.command(statement)
        columns = {r["name"]: r["type"] for r in old.query(
            "SELECT name, type FROM system.columns WHERE database = {d:String} AND table = 'dispatches'",
            {"d": old.database})}
        assert (columns["kind"], columns["attempts"], columns["provider_id"]) == \
            ("LowCardinality(String)", "Nullable(UInt16)", "String")
        assert old.query("SELECT kind, attempts, provider_id FROM {db}.dispatches") == \
            [{"kind": "invitation", "attempts": None, "provider_id": ""}]
        old.insert("dispatches", [dispatch_row(reminder(1, "suppressed", reason="responded"), 0, 1)])
        got = queries.dispatches(old)
        assert (got["total"], got["reminders"], got["cost"]) == \
            (1, {"total": 1, "by_status": {"suppressed": 1},
                 "reasons": [{"status": "suppressed", "reason": "responded", "count": 1}]}, {"EUR": 0.15})


def test_dispatch_row_maps_and_checks_the_new_fields():
    row = dispatch_row(reminder(3, "sent", cost=0.15, attempts=2, provider_id="gw-77"), 4, 9)
    assert (row["kind"], row["attempts"], row["provider_id"], row["dispatch_id"], row["invitation_id"]) == \
        ("reminder", 2, "gw-77", "d-3:reminder", "inv-3")
    legacy = record(1, "sent")  # a v1-shaped dict without kind
    assert (dispatch_row(legacy, 0, 0)["kind"], dispatch_row(legacy, 0, 0)["attempts"],
            dispatch_row(legacy, 0, 0)["provider_id"]) == ("invitation", None, "")
    with pytest.raises(ValueError, match="kind"):
        dispatch_row(record(1, "sent", kind="newsletter_blast"), 0, 0)
    for bad in (-1, 70000):
        with pytest.raises(ValueError, match="attempts"):
            dispatch_row(record(1, "sent", attempts=bad), 0, 0)


def test_no_personal_data_columns():
    row = dispatch_row(record(1, "sent", cost=0.15, email="anna@example.se", phone="+46701234567"), 0, 0)
    assert "email" not in row and "phone" not in row
    assert "@" not in str(row) and "+4670" not in str(row)


def test_promoter_actions_are_counted_per_kind_apart_from_invitations_and_their_cost_counts(ch_store):
    def action(i, kind, status, reason=None, cost=None, at=T0):
        return dict(record(i, status, reason, "email", cost, at), dispatch_id=f"a-{i}", kind=kind,
                    event_id=f"promoter:inv-{i}")

    insert(ch_store, [
        record(1, "sent", cost=0.15),
        action(1, "thank_you", "sent", cost=0.002),
        action(2, "review_request", "scheduled", "quiet_hours"),
        action(2, "review_request", "sent", cost=0.002, at=T0 + timedelta(hours=9)),
        action(3, "reward", "sent", cost=0.002),
        action(4, "reward", "suppressed", "reward_pool_exhausted"),
        action(5, "thank_you", "suppressed", "quarantine"),
    ])
    got = queries.dispatches(ch_store)
    assert got["total"] == 1 and got["by_status"] == {"sent": 1}  # invitations only
    assert got["promoter_actions"] == {
        "review_request": {"total": 1, "by_status": {"sent": 1}, "reasons": []},
        "reward": {"total": 2, "by_status": {"sent": 1, "suppressed": 1},
                   "reasons": [{"status": "suppressed", "reason": "reward_pool_exhausted", "count": 1}]},
        "thank_you": {"total": 2, "by_status": {"sent": 1, "suppressed": 1},
                      "reasons": [{"status": "suppressed", "reason": "quarantine", "count": 1}]},
    }
    assert got["cost"] == {"EUR": 0.156}
